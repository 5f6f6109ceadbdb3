"""The fine-tuning step of `make demo`: its command, as the Makefile writes it, scores
every model on test rows of the pretrained model's split only."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from skcgcnn.cli import main

from ._shared import MP, SAMPLE500, needs

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    needs(MP / "id_prop_multi.csv", SAMPLE500),
    pytest.mark.skipif(shutil.which("make") is None, reason="no make"),
]

REPO = Path(__file__).resolve().parents[1]


def demo_commands(**variables: str) -> list[list[str]]:
    """The skcgcnn commands of `make demo` with these variables (make -n: not run)."""
    text = subprocess.run(["make", "-n", "-s", "demo",
                           *(f"{key}={value}" for key, value in variables.items())],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in text.replace("\\\n", " ").splitlines()]
    return [argv for argv in commands if argv and argv[0].endswith("/skcgcnn")]


def test_the_demo_fine_tunes_on_band_gap_and_tests_on_unseen_rows(tmp_path, capsys,
                                                                  structure_cache):
    from skcgcnn import save_model
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import make_cgcnn_pipeline

    ids = [line.split(",")[0] for line in
           (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:100]]
    data = tmp_path / "data"  # DATA's files for these crystals: id_prop_multi.csv, CIFs
    data.mkdir()
    multi = {line.split(",")[0]: line for line in
             (MP / "id_prop_multi.csv").read_text().splitlines()}
    (data / "id_prop_multi.csv").write_text("\n".join(multi[i] for i in ids) + "\n")
    for ident in ids:
        os.symlink(SAMPLE500 / f"{ident}.cif", data / f"{ident}.cif")
    split = pd.DataFrame({"id": ids, "split": ["train"] * 50 + ["val"] * 10 + ["test"] * 40})
    split.to_csv(tmp_path / "split.csv", index=False)
    df = load_cgcnn_folder(SAMPLE500, ids=ids[:50], cache=False)
    pipe = make_cgcnn_pipeline(max_epochs=1, batch_size=16, random_state=0, verbose=0,
                               module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8)
    save_model(pipe.fit(df["structure"], df["target"].to_numpy()), tmp_path / "fe.pt")

    first, finetune = demo_commands(
        DATA=str(data), OUT=str(tmp_path / "demo"), PRETRAINED=str(tmp_path / "fe.pt"),
        PRETRAINED_SPLIT=str(tmp_path / "split.csv"), FT_TRAIN="30", FT_TEST="20",
        FT_MODELS="cgcnn-finetuned,cgcnn,dummy", FT_ARGS="--epochs 1 --device cpu")
    assert "cgcnn-finetuned" not in " ".join(first)  # formation energy: it would leak
    assert finetune[1] == "benchmark"
    assert main(finetune[1:] + ["-q"]) == 0
    printed = capsys.readouterr().out
    assert "| cgcnn-finetuned |" in printed and "| cgcnn |" in printed
    out = tmp_path / "demo" / "band-gap-finetuned"
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    test_ids = set(split.loc[split["split"] == "test", "id"])
    assert set(preds["id"]) <= test_ids and preds.groupby("model").size().eq(20).all()
    multi = pd.read_csv(MP / "id_prop_multi.csv", header=None, dtype={0: str}).set_index(0)
    chosen = preds[preds["model"] == "dummy"].set_index("id")
    pd.testing.assert_series_equal(chosen["y_true"], multi.loc[chosen.index, 2],
                                   check_names=False)  # the band gap column
    folds = pd.read_csv(out / "folds.csv")
    assert folds["n_train"].eq(30).all()
