"""benchmarks/bench_finetune.py on a few crystals: the rows it fits and scores on, the
choice of the fine-tuning settings on validation rows, resuming, and the report."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from ._shared import MP, SAMPLE500, needs

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    needs(MP / "cifs.tar.gz", SAMPLE500),
]

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("bench_finetune")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, structure_cache):
    """A split of 90 crystals of sample-500 (60 train, 30 test) and a small model
    fitted for formation energy on its train rows, saved with save_model."""
    from skcgcnn import save_model
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import make_cgcnn_pipeline

    root = tmp_path_factory.mktemp("finetune")
    ids = [line.split(",")[0] for line in
           (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:90]]
    split = pd.DataFrame({"id": ids, "split": ["train"] * 60 + ["test"] * 30})
    split.to_csv(root / "split.csv", index=False)
    df = load_cgcnn_folder(SAMPLE500, ids=ids[:60], cache=False)
    pipe = make_cgcnn_pipeline(max_epochs=2, batch_size=16, random_state=0, device="cpu")
    pipe.fit(df["structure"], df["target"].to_numpy())
    save_model(pipe, root / "init.pt")
    return root


def run(bench, setup, work, *extra, init=None):
    return bench.main(["--data", str(MP), "--work-dir", str(work), "run",
                       "--init", str(init or setup / "init.pt"),
                       "--split", str(setup / "split.csv"),
                       "--sizes", "20,30", "--n-test", "20", "--n-val", "15",
                       "--epochs", "2", "--targets", "band_gap",
                       "--models", "finetuned,scratch,magpie-rf",
                       "--grid", "none:1,conv:0.5", *extra])


def test_rows_fits_resume_and_report(bench, setup, tmp_path, capsys):
    work = tmp_path / "work"
    assert run(bench, setup, work) == 0
    split = pd.read_csv(setup / "split.csv", dtype=str)
    train_ids = set(split.loc[split["split"] == "train", "id"])
    rows = json.loads((work / "rows.json").read_text())["rows"]
    # nested training subsets and validation rows from the train rows, disjoint;
    # the test rows a subset of the split's test rows
    assert set(rows["order"]) <= train_ids and set(rows["val"]) <= train_ids
    assert len(rows["order"]) == 30 and len(rows["val"]) == 15
    assert not set(rows["order"]) & set(rows["val"])
    assert len(rows["test"]) == 20 and not set(rows["test"]) & train_ids

    results = pd.read_csv(work / "results.csv")
    assert sorted(zip(results["size"], results["model"])) == sorted(
        (size, model) for size in (20, 30) for model in ("finetuned", "scratch", "magpie-rf"))
    assert (results["n_test"] == 20).all() and results["test_mae"].gt(0).all()
    assert (results.loc[results["model"] != "magpie-rf", "epochs"] == 2).all()
    select = pd.read_csv(work / "select.csv")
    assert len(select) == 4 and set(select["candidate"]) == {"none:1", "conv:0.5"}
    finetuned = results[results["model"] == "finetuned"].set_index("size")
    for size, part in select.groupby("size"):  # the chosen one: the lowest validation MAE
        best = part.loc[part["val_mae"].idxmin()]
        assert finetuned.loc[size, "val_mae"] == pytest.approx(best["val_mae"])
        assert f"{finetuned.loc[size, 'freeze']}:{finetuned.loc[size, 'init_lr_factor']:g}" \
            == best["candidate"]

    # a rerun fits nothing again; the refit of a chosen candidate gives the same model
    before = results.copy()
    (work / "results.csv").write_text(
        "\n".join((work / "results.csv").read_text().splitlines()[:-3]) + "\n")
    assert run(bench, setup, work) == 0
    after = pd.read_csv(work / "results.csv")
    pd.testing.assert_frame_equal(after.drop(columns="fit_s"), before.drop(columns="fit_s"))
    assert len(pd.read_csv(work / "select.csv")) == 4

    capsys.readouterr()
    assert bench.main(["--work-dir", str(work), "report", "--png", str(tmp_path / "p.png"),
                       "--markdown", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "band gap (eV), on the same 20 test crystals" in text
    ft, sc = (after[(after["size"] == 30) & (after["model"] == m)]["test_mae"].item()
              for m in ("finetuned", "scratch"))
    assert "| 30 | 2 | " in text and f"{100 * (1 - ft / sc):.0f} %" in text
    assert "lowest MAE on 15 validation crystals" in text
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_refuses_to_mix_runs(bench, setup, tmp_path):
    work = tmp_path / "work"
    assert run(bench, setup, work, "--models", "scratch", "--sizes", "20") == 0
    with pytest.raises(SystemExit, match="other test rows"):
        run(bench, setup, work, "--models", "scratch", "--sizes", "20", "--n-test", "10")
    other = tmp_path / "other.pt"
    other.write_bytes((setup / "init.pt").read_bytes() + b"\0")
    with pytest.raises(SystemExit, match="another model to fine-tune"):
        run(bench, setup, work, "--models", "scratch", "--sizes", "20", init=other)
    # larger sizes extend the nested subsets of the same rows
    assert run(bench, setup, work, "--models", "scratch", "--sizes", "20,30") == 0
    assert sorted(pd.read_csv(work / "results.csv")["size"]) == [20, 30]
