"""`skcgcnn benchmark --split FILE|NAME` (fit on the train and val rows, score on the test
rows), --n-train / --n-test, and the cgcnn-finetuned model (--init)."""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skcgcnn.benchmark import make_models
from skcgcnn.cli.benchmark import add_benchmark_parser, run_benchmark_command
from skcgcnn.cli import CLIError
from skcgcnn.datasets import sample_rows

from ._shared import SAMPLE500, needs

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    needs(SAMPLE500 / "id_prop.csv"),
]


def _rows(n: int = 60) -> list[tuple[str, str]]:
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:n]
    return [tuple(line.split(",")[:2]) for line in lines]


def _folder(root: Path, rows: list[tuple[str, str]], cifs: set[str],
            second: dict[str, str] | None = None) -> Path:
    """A CGCNN folder of ``rows`` (id, target[, second target]) holding only the CIFs
    of ``cifs`` (links into sample-500)."""
    root.mkdir()
    second = second if second is not None else {}
    lines = [f"{i},{t}" + (f",{second.get(i, '1.0')}" if second else "") for i, t in rows]
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    for ident in cifs:
        os.symlink(SAMPLE500 / f"{ident}.cif", root / f"{ident}.cif")
    return root


def _split(path: Path, ids: list[str]) -> dict[str, list[str]]:
    """30 train, 10 val, 15 test rows of ``ids``; the last 5 are not named."""
    sets = {"train": ids[:30], "val": ids[30:40], "test": ids[40:55]}
    rows = [(ident, part) for part, part_ids in sets.items() for ident in part_ids]
    pd.DataFrame(rows, columns=["id", "split"]).to_csv(path, index=False)
    return sets


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skcgcnn")
    add_benchmark_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def data(tmp_path, structure_cache):
    rows = _rows()
    ids = [i for i, _ in rows]
    sets = _split(tmp_path / "split.csv", ids)
    # the 5 crystals the split does not name have no CIF: they must not be read
    root = _folder(tmp_path / "data", rows, set(ids[:55]))
    return root, tmp_path / "split.csv", sets, dict(rows)


def test_split_fits_on_train_and_val_and_scores_the_test_rows(data, tmp_path, capsys,
                                                               caplog):
    root, split, sets, target = data
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run_benchmark_command(_parse([
            "benchmark", str(root), "--models", "dummy", "--split", str(split),
            "--output-dir", str(out), "-q"])) == 0
    assert "5 of the 60 crystals are not in" in caplog.text
    assert f"--split {split}: 40 train, 15 test" in capsys.readouterr().out
    folds = pd.read_csv(out / "folds.csv")
    assert folds[["n_train", "n_test"]].values.tolist() == [[40, 15]]
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert sorted(preds["id"]) == sorted(sets["test"])
    fitted_on = [float(target[i]) for i in sets["train"] + sets["val"]]
    np.testing.assert_allclose(preds["y_pred"], np.mean(fitted_on), rtol=1e-12)
    np.testing.assert_allclose(preds["y_true"], [float(target[i]) for i in preds["id"]])


def test_n_train_and_n_test_take_seeded_subsets_and_read_only_those(tmp_path, capsys,
                                                                    structure_cache):
    rows = _rows()
    ids = [i for i, _ in rows]
    sets = _split(tmp_path / "split.csv", ids)
    fit_rows = sets["train"] + sets["val"]
    train = [fit_rows[i] for i in sample_rows(40, 12, 5)]
    test = [sets["test"][i] for i in sample_rows(15, 7, 5)]
    root = _folder(tmp_path / "data", rows, set(train + test))  # only those CIFs
    out = tmp_path / "out"
    assert run_benchmark_command(_parse([
        "benchmark", str(root), "--models", "dummy", "--split", str(tmp_path / "split.csv"),
        "--n-train", "12", "--n-test", "7", "--random-state", "5",
        "--output-dir", str(out), "-q"])) == 0
    assert "19 structures, --split" in capsys.readouterr().out
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert sorted(preds["id"]) == sorted(test)
    target = dict(rows)
    np.testing.assert_allclose(preds["y_pred"], np.mean([float(target[i]) for i in train]))


def test_a_missing_value_of_another_column_is_no_error(tmp_path, capsys, structure_cache,
                                                       caplog):
    rows = _rows()
    ids = [i for i, _ in rows]
    sets = _split(tmp_path / "split.csv", ids)
    gap = {i: str(k / 10) for k, i in enumerate(ids)}
    gap[sets["test"][0]] = ""         # no second target: left out of a --target target_1 run
    rows = [(i, "" if i == sets["train"][0] else t) for i, t in rows]  # no first target
    root = _folder(tmp_path / "data", rows, set(ids[:55]), second=gap)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run_benchmark_command(_parse([
            "benchmark", str(root), "--models", "dummy", "--split",
            str(tmp_path / "split.csv"), "--target", "target_1", "--output-dir", str(out),
            "-q"])) == 0
    assert "1 of the 15 test crystals of --split are left out" in caplog.text
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert sorted(preds["id"]) == sorted(sets["test"][1:])
    fitted_on = [float(gap[i]) for i in sets["train"] + sets["val"]]
    np.testing.assert_allclose(preds["y_pred"], np.mean(fitted_on))


def test_split_options_are_checked(data, tmp_path, capsys, caplog):
    root, split, sets, _ = data

    def status(*argv: str) -> int:
        return run_benchmark_command(_parse(["benchmark", str(root), "--models", "dummy",
                                             *argv]))

    assert status("--split", str(split), "--limit", "20") == 2
    assert "--limit cannot be used with --split" in capsys.readouterr().err
    assert status("--split", str(split), "--test-size", "0.2") == 2
    assert "--test-size cannot be used with --split" in capsys.readouterr().err
    assert status("--n-test", "5") == 2
    assert "--n-test take subsets of the sets of --split" in capsys.readouterr().err
    assert status("--split", str(split), "--n-train", "0") == 2
    assert "--n-train 0: use at least 1 crystal" in capsys.readouterr().err
    with pytest.raises(CLIError, match="nor the name of a pretrained model"):
        status("--split", str(tmp_path / "nope.csv"))
    (tmp_path / "bad.csv").write_text(f"id,split\n{sets['train'][0]},train\nmp-nope,test\n")
    with pytest.raises(CLIError, match=r"row 3: id 'mp-nope' is not a crystal of the data"):
        status("--split", str(tmp_path / "bad.csv"))
    assert status("--models", "cgcnn-finetuned") == 2
    assert "cgcnn-finetuned in --models needs --init" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        assert status("--init", "x.pt", "--split", str(split), "-q") == 0
    assert "--init x.pt is not used: --models has no cgcnn-finetuned" in caplog.text


# -- cgcnn-finetuned, from a registry of pretrained models of its own ------------------
@pytest.fixture
def registry(tmp_path, monkeypatch, data):
    """A pretrained model 'tiny' fitted on the train rows of the split (2 epochs), its
    split shipped beside it as the package ships its models' splits."""
    from skcgcnn import pretrained as pretrained_module
    from skcgcnn import save_model
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import make_cgcnn_pipeline

    root, split, sets, _ = data
    shop = tmp_path / "shop"
    shop.mkdir()
    df = load_cgcnn_folder(root, ids=sets["train"])
    pipe = make_cgcnn_pipeline(max_epochs=2, batch_size=16, random_state=0, verbose=0,
                               module__atom_fea_len=8, module__n_conv=1,
                               module__h_fea_len=8, graph_params={"max_num_nbr": 8})
    pipe.fit(df["structure"], df["target"].to_numpy())
    save_model(pipe, shop / "tiny.pt")
    with gzip.open(shop / "tiny.split.csv.gz", "wt") as fh:
        fh.write(split.read_text())
    index = {"models": {"tiny": {"file": "tiny.pt",
                                 "sha256": pretrained_module._sha256(shop / "tiny.pt"),
                                 "split_file": "tiny.split.csv.gz"}}}
    (shop / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained_module, "HERE", shop)
    monkeypatch.setattr(pretrained_module, "INDEX", shop / "index.json")
    pretrained_module._index.cache_clear()
    yield shop
    pretrained_module._index.cache_clear()


def test_make_models_fine_tunes_on_the_pretrained_models_graphs(registry):
    models = make_models(["cgcnn-finetuned", "cgcnn"], epochs=3, init="tiny",
                         freeze="conv", init_lr_factor=0.5)
    graph, cgcnn = models["cgcnn-finetuned"].steps
    assert graph[1].max_num_nbr == 8 and models["cgcnn"][0].max_num_nbr == 12
    params = cgcnn[1].get_params()
    assert (params["init"], params["freeze"], params["init_lr_factor"]) == ("tiny", "conv",
                                                                            0.5)
    assert params["max_epochs"] == 3 == models["cgcnn"][-1].max_epochs
    with pytest.raises(ValueError, match="cgcnn-finetuned needs init"):
        make_models(["cgcnn-finetuned"])
    with pytest.raises(ValueError, match="init is given but"):
        make_models(["cgcnn"], init="tiny")


def test_finetuned_by_name_on_the_test_rows_of_its_own_split(registry, data, tmp_path,
                                                             capsys, caplog):
    root, _, sets, _ = data
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run_benchmark_command(_parse([
            "benchmark", str(root), "--models", "cgcnn-finetuned,dummy", "--init", "tiny",
            "--split", "tiny", "--n-train", "20", "--epochs", "2", "--batch-size", "8",
            "--device", "cpu", "--freeze", "embedding", "--output-dir", str(out),
            "-q"])) == 0
    assert "no fair test" not in caplog.text
    assert "| cgcnn-finetuned |" in capsys.readouterr().out
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert set(preds["model"]) == {"cgcnn-finetuned", "dummy"}
    assert sorted(preds.loc[preds["model"] == "dummy", "id"]) == sorted(sets["test"])
    assert np.isfinite(preds["y_pred"]).all()
    run = json.loads((out / "run.json").read_text())
    assert "cgcnn-finetuned" in run["models"]


def test_test_rows_the_pretrained_model_saw_are_flagged(registry, data, tmp_path, caplog):
    root, _, sets, _ = data
    leaky = tmp_path / "leaky.csv"  # its test rows: 4 training rows of 'tiny'
    rows = [(i, "train") for i in sets["val"][:8]] + [(i, "val") for i in sets["val"][8:]] \
        + [(i, "test") for i in sets["train"][:4]]
    pd.DataFrame(rows, columns=["id", "split"]).to_csv(leaky, index=False)
    with caplog.at_level(logging.WARNING):
        assert run_benchmark_command(_parse([
            "benchmark", str(root), "--models", "cgcnn-finetuned", "--init", "tiny",
            "--split", str(leaky), "--epochs", "1", "--device", "cpu", "-q"])) == 0
    assert "4 of the 4 test crystals were training or validation crystals of the " \
           "pretrained model 'tiny'" in caplog.text


def test_errors_in_a_pretrained_models_split_name_the_model(registry, tmp_path):
    rows = _rows(50)  # the split of 'tiny' names 5 more crystals
    root = _folder(tmp_path / "fewer", rows, {i for i, _ in rows})
    with pytest.raises(CLIError, match=r"^--split 'tiny' \(the pretrained model's split\), "
                                       r"row \d+: id '\d+' is not a crystal of the data"):
        run_benchmark_command(_parse(["benchmark", str(root), "--models", "dummy",
                                      "--split", "tiny", "-q"]))
