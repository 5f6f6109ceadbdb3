"""Tests of the ``skcgcnn`` command line (skcgcnn.cli), run in-process through main()."""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skcgcnn import cli
from skcgcnn.cli import main, split_sizes

from ._shared import DATA, EXPECTED, PRETRAINED, REFERENCE, SAMPLE500, needs, skip_unless  # noqa: F401

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.usefixtures("structure_cache"),  # tests/conftest.py
]

REPO = Path(__file__).resolve().parents[1]
REF = REFERENCE

needs_data = needs(SAMPLE500 / "id_prop.csv", PRETRAINED)

# a tiny network and three epochs: the point is the plumbing, not the accuracy
TINY = ["--epochs", "3", "--atom-fea-len", "8", "--n-conv", "1", "--h-fea-len", "16",
        "--batch-size", "16", "--train-ratio", "0.6", "--val-ratio", "0.2",
        "--test-ratio", "0.2", "--seed", "0", "--device", "cpu", "-q"]


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def id_prop(path: Path) -> dict[str, float]:
    return {row[0]: float(row[1]) for row in read_rows(path)}


def assert_one_line_error(status: int, err: str, command: str, *needles: str) -> str:
    assert status != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"skcgcnn {command}: error: "), err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(folder60, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("train-out")
    status, stdout, stderr = run(["train", folder60, "--output-dir", out] + TINY)
    assert status == 0, stderr
    return {"out": out, "stdout": stdout, "stderr": stderr}


@pytest.fixture(scope="module")
def labelled60(folder60, tmp_path_factory) -> Path:
    """The same 60 crystals labelled 1 when E_form < -1 eV/atom, else 0."""
    root = tmp_path_factory.mktemp("labels60")
    rows = [f"{i},{int(v < -1.0)}" for i, v in id_prop(folder60 / "id_prop.csv").items()]
    (root / "id_prop.csv").write_text("\n".join(rows) + "\n")
    for cif in folder60.glob("*.cif"):
        os.symlink(os.readlink(cif), root / cif.name)
    return root


@pytest.fixture(scope="module")
def labelled300(tmp_path_factory) -> Path:
    """The first 300 crystals of sample-500 labelled 1 when E_form < -1.5 eV/atom (45 %
    of them), else 0: a task CGCNN learns in a few epochs."""
    skip_unless(SAMPLE500 / "id_prop.csv")
    root = tmp_path_factory.mktemp("labels300")
    rows = []
    for line in (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:300]:
        ident, value = line.split(",")[:2]
        rows.append(f"{ident},{int(float(value) < -1.5)}")
        os.symlink(SAMPLE500 / f"{ident}.cif", root / f"{ident}.cif")
    (root / "id_prop.csv").write_text("\n".join(rows) + "\n")
    return root


# -- help and command registry ------------------------------------------------------
@pytest.mark.parametrize("command", [
    "train", "predict", "featurize", "benchmark",
    pytest.param("tune", marks=pytest.mark.skipif(
        importlib.util.find_spec("skcgcnn.tuning") is None, reason="no skcgcnn.tuning yet")),
])
def test_each_subcommand_has_help(command):
    status, out, _ = run([command, "--help"])
    assert status == 0
    assert out.startswith(f"usage: skcgcnn {command}")


def test_top_level_help_lists_commands_and_version():
    status, out, _ = run(["--help"])
    assert status == 0
    for command in ("train", "predict", "featurize", "benchmark"):
        assert f"    {command}" in out
    status, out, _ = run(["--version"])
    assert status == 0 and out.strip().startswith("skcgcnn 0.")


def test_python_m_skcgcnn_help_runs_without_heavy_imports():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "skcgcnn", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: skcgcnn" in proc.stdout and "featurize" in proc.stdout
    code = ("import sys, contextlib, io\nfrom skcgcnn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
            "print(sorted(m for m in ('torch', 'pymatgen.core', 'sklearn', "
            "'skcgcnn.benchmark') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("command, heavy", [
    ("train", ("torch", "pymatgen.core", "sklearn", "matminer")),
    ("predict", ("torch", "pymatgen.core", "sklearn", "matminer")),
    ("featurize", ("torch", "pymatgen.core", "sklearn", "matminer")),
    # the benchmark's parser takes its defaults from skcgcnn.benchmark (scikit-learn)
    ("benchmark", ("torch", "pymatgen.core", "matminer")),
    # the tune command's module (skcgcnn.cli.tune) imports skcgcnn.tuning when it runs
    ("tune", ("torch", "pymatgen.core", "sklearn", "matminer", "optuna", "skcgcnn.tuning")),
])
def test_command_help_runs_without_heavy_imports(command, heavy):
    code = ("import sys, contextlib, io\nfrom skcgcnn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    status = main([{command!r}, '--help'])\n"
            f"print(status, sorted(m for m in {heavy!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0 []"


def test_external_commands_are_imported_only_when_run(tmp_path, monkeypatch):
    (tmp_path / "fake_skcgcnn_ext.py").write_text(textwrap.dedent("""
        def add_hello_parser(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("--name", default="world")
            return p

        def run_hello_command(args):
            print(f"hello {args.name}")
            return 3
    """))
    (tmp_path / "fake_skcgcnn_broken.py").write_text("import no_such_module_for_skcgcnn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_skcgcnn_ext", raising=False)
    monkeypatch.setitem(cli.EXTERNAL_COMMANDS, "hello", (
        "fake_skcgcnn_ext", "add_hello_parser", "run_hello_command", "say hello"))
    monkeypatch.setitem(cli.EXTERNAL_COMMANDS, "absent", (
        "fake_skcgcnn_absent", "add_parser", "run", "not installed"))
    monkeypatch.setitem(cli.EXTERNAL_COMMANDS, "broken", (
        "fake_skcgcnn_broken", "add_parser", "run", "needs a missing package"))

    status, out, _ = run(["--help"])
    assert status == 0
    assert "hello" in out and "absent" not in out
    assert "fake_skcgcnn_ext" not in sys.modules  # listed without importing it

    status, out, _ = run(["hello", "--name", "crystal"])
    assert (status, out) == (3, "hello crystal\n")
    status, out, _ = run(["hello", "--help"])
    assert status == 0 and "--name" in out

    status, _, err = run(["absent"])
    assert status == 2 and "invalid choice" in err
    status, _, err = run(["broken"])
    assert_one_line_error(status, err, "broken", "no_such_module_for_skcgcnn")


def test_graphs_format_tag_is_the_graph_files():
    from skcgcnn.graph._io import FORMAT

    assert cli.GRAPHS_FORMAT == FORMAT


# -- split sizes --------------------------------------------------------------------
def _split_args(**given) -> argparse.Namespace:
    keys = [f"{p}_{k}" for p in ("train", "val", "test") for k in ("ratio", "size")]
    return argparse.Namespace(**{k: given.get(k) for k in keys})


def test_split_sizes_follow_main_py():
    # main.py: int(ratio * n) crystals; without a train ratio, the rest
    assert split_sizes(60, _split_args()) == (48, 6, 6)
    assert split_sizes(60, _split_args(train_ratio=0.6, val_ratio=0.2, test_ratio=0.2)) == \
        (36, 12, 12)
    assert split_sizes(101, _split_args(train_ratio=0.5)) == (50, 10, 10)
    assert split_sizes(60, _split_args(train_size=10, val_size=5, test_ratio=0.5)) == \
        (10, 5, 30)
    with pytest.raises(cli.CLIError, match="do not fit in the 60 crystals"):
        split_sizes(60, _split_args(train_ratio=0.9))
    with pytest.raises(cli.CLIError, match="the val set would hold 0 of 5") as info:
        split_sizes(5, _split_args())
    assert info.value.status == 2
    assert "raise --val-ratio or give --val-size" in str(info.value)


def test_split_help_shows_the_default_ratios_of_model_selection():
    from skcgcnn.model_selection import TEST_RATIO, VAL_RATIO

    status, out, _ = run(["train", "--help"])
    assert status == 0
    text = " ".join(out.split())
    assert f"fraction of the data for the val set (default: {VAL_RATIO})" in text
    assert f"fraction of the data for the test set (default: {TEST_RATIO})" in text
    assert "fraction of the data for the train set (default: the rest)" in text


# -- train ----------------------------------------------------------------------------
@needs_data
def test_train_writes_every_output(trained):
    out = trained["out"]
    for name in ("model.pt", "test_results.csv", "metrics.json", "split.csv", "history.json",
                 "learning_curve.png", "parity.png", "train_options.json",
                 "training_state.pt", "best_params.pt"):
        assert (out / name).stat().st_size > 0, name
    for png in ("learning_curve.png", "parity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "trained on 36 crystals (12 validation, 12 test), 3 epochs" in trained["stdout"]


@needs_data
def test_test_results_are_the_test_split(trained, folder60):
    out = trained["out"]
    split = read_rows(out / "split.csv")
    assert split[0] == ["id", "split"]
    parts = {name: [row[0] for row in split[1:] if row[1] == name]
             for name in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [36, 12, 12]
    truth = id_prop(folder60 / "id_prop.csv")
    assert sorted(sum(parts.values(), [])) == sorted(truth)
    rows = read_rows(out / "test_results.csv")
    assert [row[0] for row in rows] == parts["test"]  # header-less, in split order
    assert all(len(row) == 3 for row in rows)
    assert [float(row[1]) for row in rows] == [truth[row[0]] for row in rows]


@needs_data
def test_metrics_match_test_results_and_history(trained):
    out = trained["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "test_results.csv")
    y = np.array([float(r[1]) for r in rows])
    pred = np.array([float(r[2]) for r in rows])
    assert metrics["test"]["mae"] == pytest.approx(np.mean(np.abs(pred - y)), abs=1e-12)
    assert metrics["test"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)),
                                                    abs=1e-12)
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert metrics["test"]["r2"] == pytest.approx(r2, abs=1e-12)
    assert metrics["world_size"] == 1  # one process (torchrun: tests/test_distributed.py)
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (36, 12, 12)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    valid = [h["valid_mae"] for h in history]
    assert metrics["best_epoch"] == int(np.argmin(valid)) + 1
    assert metrics["valid"]["mae"] == min(valid)


@needs_data
def test_predict_with_the_trained_model_reproduces_its_test_results(trained, folder60,
                                                                    tmp_path):
    out = trained["out"]
    status, stdout, stderr = run(["predict", out / "model.pt", folder60,
                                  "--output", tmp_path / "p.csv", "-q"])
    assert status == 0, stderr
    rows = {r[0]: r for r in read_rows(tmp_path / "p.csv")}
    assert len(rows) == 60
    for ident, target, pred in read_rows(out / "test_results.csv"):
        assert float(rows[ident][1]) == float(target)
        assert float(rows[ident][2]) == pytest.approx(float(pred), abs=1e-5)
    y = np.array([float(r[1]) for r in rows.values()])
    p = np.array([float(r[2]) for r in rows.values()])
    assert f"MAE {np.mean(np.abs(p - y)):.4g} on the 60 crystals" in stdout
    # the saved weights are those of the best validation epoch, not the last one
    metrics = json.loads((out / "metrics.json").read_text())
    val = [r[0] for r in read_rows(out / "split.csv")[1:] if r[1] == "val"]
    val_mae = np.mean([abs(float(rows[i][2]) - float(rows[i][1])) for i in val])
    assert val_mae == pytest.approx(metrics["valid"]["mae"], abs=1e-5)


@needs_data
def test_predict_sums_up_the_model_card_in_a_few_lines(trained, folder60, tmp_path):
    out = trained["out"]
    model = out / "model.pt"
    status, stdout, stderr = run(["predict", model, folder60, "--output", tmp_path / "p.csv"])
    assert status == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    test = ", ".join(f"{k} {v:.4g}" for k, v in metrics["test"].items() if v is not None)
    card = [line for line in stderr.splitlines()
            if line.startswith(f"skcgcnn: INFO: MODEL {model}: ")
            or line.startswith("skcgcnn: INFO:   ")]
    assert len(card) == 4, stderr
    assert card[0].startswith(f"skcgcnn: INFO: MODEL {model}: CGCNNRegressor of target, "
                              "saved ")
    assert card[1].startswith(f"skcgcnn: INFO:   trained on 36 crystals of {folder60} "
                              "(ids digest ")
    assert card[1].endswith(", 3 epochs, last train loss "
                            f"{metrics_loss(out, 'train_loss')}, valid loss "
                            f"{metrics_loss(out, 'valid_loss')}")
    assert card[2] == ("skcgcnn: INFO:   recipe: optimizer adamw, lr 0.01, schedule "
                       "onecycle, loss absolute_error, batch size 16; atom_fea_len 8, "
                       "n_conv 1, h_fea_len 16; graphs of radius 8 Å, 12 neighbours, "
                       "custom atom features"), card[2]
    assert card[3] == f"skcgcnn: INFO:   test (12 crystals): {test}"
    assert "torch_load_kwargs" not in stderr and "versions:" not in stderr
    # the whole card with --debug
    status, _, stderr = run(["--debug", "predict", model, folder60,
                             "--output", tmp_path / "p.csv"])
    assert status == 0, stderr
    assert "\nversions:\n" in stderr and "  torch_load_kwargs: None" in stderr


def metrics_loss(out: Path, key: str) -> str:
    """The last epoch's ``key`` in history.json, as the card summary shows it."""
    return f"{json.loads((out / 'history.json').read_text())[-1][key]:.4g}"


@needs_data
def test_predict_writes_predictions_csv_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = REF / "pre-trained/formation-energy-per-atom.pth.tar"
    status, stdout, stderr = run(["predict", model, REF / "sample-regression", "-q"])
    assert status == 0, stderr
    _compare(tmp_path / "predictions.csv",
             EXPECTED / "formation-energy-per-atom/sample_regression.csv")
    first = stdout.splitlines()[0]
    assert first.startswith("predicted 10 crystals in ")
    assert first.endswith(" s; wrote 10 predictions to predictions.csv")
    assert stdout.splitlines()[1].startswith("MAE ") and stderr == ""
    # --resume appends to the file it names, after the rows already there
    rows = (tmp_path / "predictions.csv").read_text().splitlines(keepends=True)
    (tmp_path / "part.csv").write_text("".join(rows[:6]))
    status, stdout, stderr = run(["predict", model, REF / "sample-regression", "--resume",
                                  "-o", "part.csv", "-q"])
    assert status == 0, stderr
    assert stdout.splitlines()[0].endswith(
        " s; wrote 4 predictions to part.csv after the 6 already there")
    assert [r[0] for r in read_rows(tmp_path / "part.csv")] == [r.split(",")[0] for r in rows]
    # resuming the default file must be asked for by name
    for output in ([], ["-o", "-"]):
        status, _, err = run(["predict", model, REF / "sample-regression", "--resume", *output])
        assert (status, err) == (2, "skcgcnn predict: error: --resume needs --output FILE, "
                                    "the file of the interrupted run (e.g. --output "
                                    "predictions.csv)\n")


@needs_data
def test_featurize_then_train_from_graphs_matches_training_from_the_folder(
        trained, folder60, tmp_path):
    from skcgcnn.graph import load_graphs

    graphs_file = tmp_path / "graphs.npz"
    status, stdout, stderr = run(["featurize", folder60, "--output", graphs_file, "-q"])
    assert status == 0, stderr
    assert stdout.startswith("60 crystal graphs")
    with zipfile.ZipFile(graphs_file) as archive:  # arrays only: nothing pickled
        assert all(name.endswith(".npy") for name in archive.namelist())
    bundle = load_graphs(graphs_file)
    truth = id_prop(folder60 / "id_prop.csv")
    assert bundle.graphs.ids.tolist() == list(truth)
    assert bundle.targets[:, 0].tolist() == list(truth.values())
    assert bundle.target_names == ["target"]
    assert len(bundle.graphs) == 60 and bundle.graphs.max_num_nbr == 12
    assert bundle.info["source"] == str(folder60)

    out = tmp_path / "from-graphs"
    status, _, stderr = run(["train", "--graphs", graphs_file, "--output-dir", out] + TINY)
    assert status == 0, stderr
    # same graphs, same seed: the same split and the same network
    assert (out / "test_results.csv").read_text() == \
        (trained["out"] / "test_results.csv").read_text()


@needs_data
def test_train_and_predict_classification(labelled60, tmp_path):
    out = tmp_path / "cls"
    status, stdout, stderr = run(["train", labelled60, "--task", "classification",
                                  "--output-dir", out] + TINY)
    assert status == 0, stderr
    assert (out / "roc_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "parity.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert metrics["classes"] == [0.0, 1.0]
    rows = read_rows(out / "test_results.csv")
    labels = np.array([float(r[1]) for r in rows])
    proba = np.array([float(r[2]) for r in rows])
    assert set(labels) == {0.0, 1.0} and ((proba >= 0) & (proba <= 1)).all()
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean((proba > 0.5) == labels))

    status, stdout, stderr = run(["predict", out / "model.pt", labelled60,
                                  "-o", tmp_path / "p.csv", "-q"])
    assert status == 0, stderr
    again = {r[0]: float(r[2]) for r in read_rows(tmp_path / "p.csv")}
    for row in rows:
        assert again[row[0]] == pytest.approx(float(row[2]), abs=1e-5)
    assert "accuracy" in stdout and "ROC-AUC" in stdout


@needs_data
def test_train_classification_learns(labelled300, tmp_path):
    out = tmp_path / "cls300"
    status, stdout, stderr = run(
        ["train", labelled300, "--task", "classification", "--output-dir", out,
         "--epochs", "10", "--atom-fea-len", "16", "--n-conv", "2", "--h-fea-len", "32",
         "--batch-size", "32", "--train-ratio", "0.6", "--val-ratio", "0.2",
         "--test-ratio", "0.2", "--seed", "0", "--device", "cpu", "-q"])
    assert status == 0, stderr
    losses = [row["train_loss"] for row in json.loads((out / "history.json").read_text())]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    metrics = json.loads((out / "metrics.json").read_text())
    # 0.97 measured with seed 0 (0.84-0.97 over seeds 0-4); the old double log gave 0.5
    assert metrics["test"]["roc_auc"] >= 0.8, metrics["test"]
    assert metrics["n_test"] == 60


@needs_data
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_train_refuses_a_model_whose_loss_went_nan(task, folder60, labelled60, tmp_path):
    root = labelled60 if task == "classification" else folder60
    out = tmp_path / "diverged"
    status, stdout, err = run(["train", root, "--task", task, "--output-dir", out,
                               "--lr", "1e10"] + TINY)
    assert_one_line_error(status, err, "train", "training diverged: the training loss is nan",
                          "no model is written", "Lower --lr (it is 1e+10)")
    # the run's checkpoints stay (for a look at what went wrong), no model nor results
    assert status == 1 and stdout == ""
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()


@needs_data
def test_train_refuses_the_nan_loss_of_a_double_log(labelled60, tmp_path, monkeypatch):
    """The old CGCNNClassifier: skorch's NeuralNetClassifier.get_loss takes the log of
    the module's log-probabilities, every loss is NaN; the run must not be reported."""
    from skorch import NeuralNetClassifier

    from skcgcnn.estimators import CGCNNClassifier

    monkeypatch.setattr(CGCNNClassifier, "get_loss", NeuralNetClassifier.get_loss)
    out = tmp_path / "double-log"
    status, stdout, err = run(["train", labelled60, "--task", "classification",
                               "--output-dir", out] + TINY)
    assert_one_line_error(status, err, "train", "the training loss is nan at epoch 1 of 3")
    assert not (out / "model.pt").exists() and "ROC-AUC" not in stdout


# -- train: checkpoints in the output folder and --resume ---------------------------------
# 40 epochs of 3 batches, killed from outside after epoch 3
RESUMABLE = ["--epochs", "40", "--atom-fea-len", "8", "--n-conv", "1", "--h-fea-len", "16",
             "--batch-size", "16", "--train-ratio", "0.6", "--val-ratio", "0.2",
             "--test-ratio", "0.2", "--seed", "0", "--device", "cpu", "--optim", "Adam",
             "--lr", "0.005", "--lr-schedule", "multistep", "--lr-milestones", "25", "-q"]

#: ``skcgcnn ...`` that stops itself (SIGSTOP) once the training state of epoch 3 is
#: written, for the test to kill it there: however fast it trains.
STOPS_AFTER_EPOCH_3 = textwrap.dedent("""\
    import os, signal, sys
    import skcgcnn
    skcgcnn.set_cpu_performance_defaults()  # as the command does, before torch
    from skcgcnn.estimators._callbacks import TrainingCheckpoint
    save_model = TrainingCheckpoint.save_model
    def stop_after_epoch_3(self, net):
        save_model(self, net)
        if self.saved_epoch_ == 3:
            os.kill(os.getpid(), signal.SIGSTOP)
    TrainingCheckpoint.save_model = stop_after_epoch_3
    from skcgcnn.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def _same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@needs_data
@pytest.mark.timeout(600)
@pytest.mark.skipif(not hasattr(os, "WUNTRACED"), reason="needs SIGSTOP and waitpid")
def test_train_killed_with_sigkill_resumes_to_the_result_of_an_uninterrupted_run(
        folder60, tmp_path):
    import signal

    import torch

    from skcgcnn.estimators import read_training_state

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPS_AFTER_EPOCH_3, "train", str(folder60), "--output-dir",
         str(killed)] + RESUMABLE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = killed / "training_state.pt"
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # until it stops (or ends)
        if os.WIFSTOPPED(status):
            proc.send_signal(signal.SIGKILL)
            stderr = proc.communicate(timeout=120)[1].decode()
        else:  # it ended before epoch 3, and is reaped already
            proc.returncode = os.waitstatus_to_exitcode(status)
            stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr
    killed_at = read_training_state(state)["epoch"]
    assert killed_at == 3
    assert not (killed / "metrics.json").exists() and not (killed / "model.pt").exists()
    assert {"train_options.json", "split.csv", "best_params.pt"} <= \
        {p.name for p in killed.iterdir()}

    status, stdout, stderr = run(["train", "--resume", killed])
    assert status == 0, stderr
    assert f"epochs {killed_at + 1}-40 (resumed after epoch {killed_at})" in stdout
    status, stdout, stderr = run(["train", folder60, "--output-dir", whole] + RESUMABLE)
    assert status == 0, stderr

    # the last epoch's weights, the best epoch's (model.pt) and every result: equal
    last = [read_training_state(d / "training_state.pt") for d in (killed, whole)]
    assert last[0]["epoch"] == last[1]["epoch"] == 40
    _same_weights(last[0]["module"], last[1]["module"])
    models = [torch.load(d / "model.pt", weights_only=True) for d in (killed, whole)]
    _same_weights(models[0]["state_dict"], models[1]["state_dict"])
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (killed, whole)]
    assert metrics[0]["test"] == metrics[1]["test"]
    assert metrics[0]["best_epoch"] == metrics[1]["best_epoch"]
    assert (metrics[0]["resumed_after_epoch"], metrics[1]["resumed_after_epoch"]) == \
        (killed_at, None)
    assert (killed / "test_results.csv").read_text() == \
        (whole / "test_results.csv").read_text()
    histories = [json.loads((d / "history.json").read_text()) for d in (killed, whole)]
    for key in ("epoch", "train_loss", "valid_loss", "valid_mae", "valid_mae_best"):
        assert [h[key] for h in histories[0]] == [h[key] for h in histories[1]], key

    # a finished run: said so, nothing trained or rewritten
    before = {p.name: p.stat().st_mtime_ns for p in killed.iterdir()}
    status, stdout, stderr = run(["train", "--resume", killed])
    assert status == 0, stderr
    assert "already finished: 40 of 40 epochs" in stdout and "nothing to resume" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in killed.iterdir()} == before


@needs_data
def test_resume_after_the_last_checkpoint_writes_the_results(trained, folder60, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained["out"], run_dir)
    for name in ("metrics.json", "model.pt", "test_results.csv"):  # killed while writing
        (run_dir / name).unlink()
    # the data changed since: refused
    changed = tmp_path / "changed"
    changed.mkdir()
    lines = (folder60 / "id_prop.csv").read_text().splitlines()[1:]
    (changed / "id_prop.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        os.symlink(folder60 / f"{line.split(',')[0]}.cif", changed / f"{line.split(',')[0]}.cif")
    options = json.loads((run_dir / "train_options.json").read_text())
    options["options"]["root_dir"] = str(changed)
    (run_dir / "train_options.json").write_text(json.dumps(options))
    status, _, err = run(["train", "--resume", run_dir])
    assert_one_line_error(status, err, "train", "not those the run started with",
                          "start a new run")
    options["options"]["root_dir"] = str(folder60)
    (run_dir / "train_options.json").write_text(json.dumps(options))

    status, stdout, stderr = run(["train", "--resume", run_dir])
    assert status == 0, stderr
    assert "no epoch left to train (3 trained before)" in stdout
    assert (run_dir / "test_results.csv").read_text() == \
        (trained["out"] / "test_results.csv").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 3 and metrics["epochs_trained"] == 3


def test_resume_refuses_what_cannot_be_resumed(tmp_path):
    status, _, err = run(["train", "--resume", tmp_path / "nothing"])
    assert_one_line_error(status, err, "train", "no such folder")
    status, _, err = run(["train", "--resume", tmp_path])
    assert_one_line_error(status, err, "train", "train_options.json",
                          "not the --output-dir of a 'skcgcnn train' run")
    (tmp_path / "train_options.json").write_text(json.dumps(
        {"format": "skcgcnn-train-options", "version": 1, "options": {"epochs": 5}}))
    status, _, err = run(["train", "--resume", tmp_path, "--epochs", "50", "--lr", "0.1"])
    assert status == 2
    assert_one_line_error(status, err, "train", "--epochs, --lr cannot be given with --resume")
    status, _, err = run(["train", "--resume", tmp_path, "-q", "--n-jobs", "1"])
    assert_one_line_error(status, err, "train", "no training_state.pt",
                          "start it again without --resume")
    status, _, err = run(["train", "--checkpoint-every", "0", "x"])
    assert_one_line_error(status, err, "train", "--checkpoint-every 0")


# -- predict with the original checkpoints ------------------------------------------
def _compare(path: Path, expected: Path, tol: float = 1e-4) -> None:
    got = {r[0]: r for r in read_rows(path)}
    want = read_rows(expected)
    assert sorted(got) == sorted(r[0] for r in want)
    for ident, target, pred in want:
        assert float(got[ident][1]) == float(target)
        assert abs(float(got[ident][2]) - float(pred)) <= tol, (ident, got[ident], pred)


@needs_data
def test_predict_original_regression_checkpoint(tmp_path):
    out = tmp_path / "test_results.csv"
    status, stdout, stderr = run(["predict", REF / "pre-trained/formation-energy-per-atom.pth.tar",
                                  REF / "sample-regression", "--output", out, "-q"])
    assert status == 0, stderr
    _compare(out, EXPECTED / "formation-energy-per-atom/sample_regression.csv")
    assert "MAE" in stdout


@needs_data
def test_predict_original_classification_checkpoint_needs_trusted(tmp_path):
    model = REF / "pre-trained/semi-metal-classification.pth.tar"
    out = tmp_path / "test_results.csv"
    status, stdout, stderr = run(["predict", model, REF / "sample-classification",
                                  "--output", out, "-q"])
    assert_one_line_error(status, stderr, "predict", "--trusted")
    assert stderr.count("\n") == 1 and not out.exists() and stdout == ""

    status, stdout, stderr = run(["predict", model, REF / "sample-classification",
                                  "--output", out, "--trusted", "-q"])
    assert status == 0, stderr
    _compare(out, EXPECTED / "semi-metal-classification/sample_classification.csv")
    assert "accuracy 0.2000, ROC-AUC 0.2400 on the 10 crystals" in stdout


@needs_data
def test_predict_cif_files_to_stdout():
    cifs = [REF / "sample-regression" / f"{i}.cif" for i in ("9000046", "1101051")]
    status, stdout, stderr = run(["predict", REF / "pre-trained/formation-energy-per-atom.pth.tar",
                                  *cifs, "--output", "-", "-q"])
    assert status == 0, stderr
    rows = list(csv.reader(io.StringIO(stdout)))
    assert [r[0] for r in rows] == ["9000046", "1101051"]
    assert [r[1] for r in rows] == ["", ""]  # no targets for bare CIF files
    want = {r[0]: float(r[2]) for r in
            read_rows(EXPECTED / "formation-energy-per-atom/sample_regression.csv")}
    for ident, _, pred in rows:
        assert abs(float(pred) - want[ident]) <= 1e-4
    # the summary goes to stderr with CSV on stdout
    assert "predicted 2 crystals in " in stderr
    assert stderr.rstrip().endswith("; wrote 2 predictions to standard output")


# -- bad input ------------------------------------------------------------------------
def test_train_needs_root_dir_or_graphs():
    status, _, err = run(["train", "-q"])
    assert_one_line_error(status, err, "train", "DATA_DIR")
    assert status == 2


def test_train_missing_folder(tmp_path):
    status, _, err = run(["train", tmp_path / "nope", "-q"])
    line = assert_one_line_error(status, err, "train", "does not exist")
    assert str(tmp_path / "nope") in line and status == 1


def test_train_graphs_file_that_is_not_one(tmp_path):
    bad = tmp_path / "graphs.pkl"
    bad.write_bytes(pickle.dumps({"something": "else"}))
    status, _, err = run(["train", "--graphs", bad, "-q"])
    assert_one_line_error(status, err, "train", "is a pickle", "--trusted")
    status, _, err = run(["train", "--graphs", bad, "--trusted", "-q"])
    assert_one_line_error(status, err, "train", "not a graph file written by")
    bad.write_text("not a pickle")
    status, _, err = run(["train", "--graphs", bad, "-q"])
    assert_one_line_error(status, err, "train", "not a graph file written by")
    status, _, err = run(["train", "--graphs", bad, "--radius", "6", "-q"])
    assert_one_line_error(status, err, "train", "--radius cannot be used with --graphs")
    assert status == 2


class RunsCode:
    """Unpickling this creates the file ``path``: a stand-in for any code a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_train_refuses_a_pickled_graph_file_without_trusted(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "graphs.pkl"
    evil.write_bytes(pickle.dumps({"format": cli.GRAPHS_FORMAT, "graphs": RunsCode(marker)}))
    status, _, err = run(["train", "--graphs", evil, "--output-dir", tmp_path / "out", "-q"])
    assert_one_line_error(status, err, "train", str(evil), "can run code", "--trusted")
    assert status == 1 and not marker.exists()
    assert not (tmp_path / "out").exists()
    status, _, err = run(["train", tmp_path, "--trusted", "-q"])
    assert_one_line_error(status, err, "train", "--trusted applies to --graphs")
    assert status == 2


@needs_data
def test_train_reads_an_old_pickled_graph_file_with_trusted(trained, folder60, tmp_path):
    from skcgcnn.graph import load_graphs

    new = tmp_path / "graphs.npz"
    assert run(["featurize", folder60, "--output", new, "-q"])[0] == 0
    bundle = load_graphs(new)
    old = tmp_path / "graphs.pkl"  # what the first 'skcgcnn featurize' wrote
    old.write_bytes(pickle.dumps({
        "format": cli.GRAPHS_FORMAT, "version": 1, "graphs": bundle.graphs,
        "ids": list(bundle.graphs.ids), "targets": bundle.targets,
        "target_names": bundle.target_names, "source": str(folder60), "errors": []}))
    out = tmp_path / "from-old"
    status, _, err = run(["train", "--graphs", old, "--output-dir", out] + TINY)
    assert_one_line_error(status, err, "train", "--trusted")
    status, _, err = run(["train", "--graphs", old, "--trusted", "--output-dir", out] + TINY)
    assert status == 0, err
    assert (out / "test_results.csv").read_text() == \
        (trained["out"] / "test_results.csv").read_text()


@needs_data
def test_train_split_that_does_not_fit(folder60, tmp_path):
    status, _, err = run(["train", folder60, "--train-ratio", "0.9", "--val-ratio", "0.2",
                          "--output-dir", tmp_path, "-q"])
    assert_one_line_error(status, err, "train", "do not fit in the 60 crystals")
    assert status == 2 and not (tmp_path / "model.pt").exists()


@needs_data
def test_classification_of_a_continuous_target(folder60, tmp_path):
    status, _, err = run(["train", folder60, "--task", "classification",
                          "--output-dir", tmp_path, "-q"])
    assert_one_line_error(status, err, "train", "needs class labels", "is --task right?")


def test_wrong_option_is_a_usage_error():
    status, _, err = run(["train", "--epochs", "many"])
    assert status == 2 and "invalid int value" in err


@needs_data
@pytest.mark.parametrize("content", [b"just some text\n", b"", b"\x80\x04not really",
                                     (REF / "sample-regression" / "9000046.cif").read_bytes()
                                     if REF.is_dir() else b""])
def test_predict_bad_model_file(tmp_path, content):
    model = tmp_path / "model.pt"
    model.write_bytes(content)
    status, _, err = run(["predict", model, REF / "sample-regression", "--trusted", "-q"])
    assert_one_line_error(status, err, "predict", "model.pt", "is not a model file")
    assert status == 1


@needs_data
def test_predict_torch_file_that_is_no_cgcnn(tmp_path):
    import torch

    model = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, model)
    status, _, err = run(["predict", model, REF / "sample-regression", "-q"])
    assert_one_line_error(status, err, "predict", "not an original CGCNN checkpoint")


@needs_data
def test_predict_missing_model_and_missing_input(tmp_path):
    status, _, err = run(["predict", tmp_path / "none.pt", REF / "sample-regression", "-q"])
    assert_one_line_error(status, err, "predict", "does not exist")
    model = REF / "pre-trained/formation-energy-per-atom.pth.tar"
    status, _, err = run(["predict", model, tmp_path / "no-such-dir", "-q"])
    assert_one_line_error(status, err, "predict", "no-such-dir", "does not exist")


@needs_data
def test_predict_unreadable_cif(tmp_path, monkeypatch):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 3\n")
    model = REF / "pre-trained/formation-energy-per-atom.pth.tar"
    monkeypatch.chdir(tmp_path)
    status, _, err = run(["predict", model, bad, "-q"])
    assert_one_line_error(status, err, "predict", "broken.cif", "--skip-errors")
    assert not (tmp_path / "predictions.csv").exists()  # failed before its first row
    good = REF / "sample-regression" / "9000046.cif"
    status, out, err = run(["predict", model, bad, good, "--skip-errors", "-o", "-", "-q"])
    assert status == 0, err
    assert [r[0] for r in csv.reader(io.StringIO(out))] == ["9000046"]
    assert "1 structures without a graph skipped: broken (first: structure 0 (broken)" in err


@needs_data
def test_debug_shows_the_traceback(tmp_path):
    model = tmp_path / "model.pt"
    model.write_text("not a model")
    status, _, err = run(["--debug", "predict", model, REF / "sample-regression"])
    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("skcgcnn predict: error: ")


@pytest.fixture
def folder_with_dummy_site(tmp_path) -> Path:
    """Six sample-500 crystals; the CIF of the third has its first site as ``X0+``."""
    from pymatgen.core import DummySpecies, Structure
    from pymatgen.io.cif import CifWriter

    if not (SAMPLE500 / "id_prop.csv").is_file():
        pytest.skip("../shared/data is not available")
    root = tmp_path / "dummy"
    root.mkdir()
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:6]
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",")[0] for line in lines]
    for ident in ids:
        os.symlink(SAMPLE500 / f"{ident}.cif", root / f"{ident}.cif")
    bad = root / f"{ids[2]}.cif"
    structure = Structure.from_file(str(bad))
    structure.replace(0, DummySpecies("X"))
    bad.unlink()
    CifWriter(structure).write_file(str(bad))
    assert " X0+ " in bad.read_text()
    return root


def test_cif_with_a_dummy_site_is_named_and_skipped(folder_with_dummy_site, tmp_path):
    ident = read_rows(folder_with_dummy_site / "id_prop.csv")[2][0]
    out = tmp_path / "graphs.npz"
    status, _, err = run(["featurize", folder_with_dummy_site, "-o", out, "--no-cache",
                          "-q"])
    line = assert_one_line_error(status, err, "featurize", f"structure 2 ({ident})",
                                 "dummy species at site 0 (X0+)", "--skip-errors")
    assert "Overflow" not in line and status == 1
    status, stdout, err = run(["featurize", folder_with_dummy_site, "-o", out,
                               "--no-cache", "--skip-errors", "-q"])
    assert status == 0, err
    assert stdout.startswith("5 crystal graphs")
    assert f"structure 2 ({ident}) has a dummy species" in err


@needs_data
def test_skip_errors_names_every_skipped_structure(folder60, tmp_path):
    """All skipped ids are logged (not only the first) and train writes skipped.csv."""
    root = tmp_path / "mixed"
    root.mkdir()
    rows = id_prop(folder60 / "id_prop.csv")
    for ident in rows:
        os.symlink(os.readlink(folder60 / f"{ident}.cif"), root / f"{ident}.cif")
    (root / "broken1.cif").write_text("data_broken\n_cell_length_a 3\n")
    (root / "broken2.cif").write_text("data_broken\n_cell_length_b 3\n")
    from pymatgen.core import Lattice, Structure

    Structure(Lattice.cubic(30), ["Fe"], [[0, 0, 0]]).to(filename=str(root / "lonely.cif"))
    bad = ["broken1", "nocif", "broken2", "lonely"]
    lines = [f"{i},{v}" for i, v in rows.items()] + [f"{i},-1.0" for i in bad]
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")

    out = tmp_path / "run"
    status, stdout, err = run(["train", root, "--output-dir", out, "--skip-errors"] + TINY)
    assert status == 0, err
    assert "3 entries of the data folder skipped: nocif, broken1, broken2 (first: " in err
    assert "1 structures without a graph skipped: lonely (first: " in err
    written = read_rows(out / "skipped.csv")
    assert written[0] == ["id", "reason"]
    assert [r[0] for r in written[1:]] == ["nocif", "broken1", "broken2", "lonely"]
    reasons = dict(written[1:])
    assert reasons["nocif"] == f"no CIF file {root / 'nocif.cif'}"
    assert reasons["broken1"].startswith("unreadable CIF file")
    assert "no neighbour within --radius" in reasons["lonely"]
    assert "skipped.csv" in stdout
    assert len(read_rows(out / "split.csv")) == 1 + len(rows)

    status, _, err = run(["featurize", root, "--output", tmp_path / "g.pkl", "--skip-errors",
                          "-q"])
    assert status == 0, err
    assert "skipped: nocif, broken1, broken2 (first: " in err and "skipped: lonely" in err


@needs_data
def test_featurize_refuses_infinite_targets(folder60, tmp_path):
    root = tmp_path / "inf"
    root.mkdir()
    rows = list(id_prop(folder60 / "id_prop.csv"))[:3]
    for ident in rows:
        os.symlink(os.readlink(folder60 / f"{ident}.cif"), root / f"{ident}.cif")
    (root / "id_prop.csv").write_text(f"{rows[0]},-1.5\n{rows[1]},inf\n{rows[2]},-0.5\n")
    status, _, err = run(["featurize", root, "--output", tmp_path / "g.pkl", "-q"])
    assert_one_line_error(status, err, "featurize", f"{rows[1]}: target 'target' is infinite")
    assert not (tmp_path / "g.pkl").exists()


def test_featurize_output_folder_missing(tmp_path):
    status, _, err = run(["featurize", tmp_path, "--output", tmp_path / "a" / "g.pkl", "-q"])
    assert_one_line_error(status, err, "featurize", "does not exist")


def test_cuda_requested_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    status, _, err = run(["train", tmp_path, "--device", "cuda", "-q"])
    assert_one_line_error(status, err, "train", "--device cuda", "no CUDA device")


# -- one vocabulary (issue 15) --------------------------------------------------------
DATA_COMMANDS = ["train", "predict", "featurize", "benchmark", pytest.param(
    "tune", marks=pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                     reason="no optuna"))]


def _parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser(load=argv[0] if argv[0] in cli.EXTERNAL_COMMANDS
                            else None).parse_args(argv)


def _positional(command: str) -> list[str]:
    return {"train": ["train", "d"], "predict": ["predict", "m.pt", "d"],
            "featurize": ["featurize", "d", "-o", "g.npz"], "benchmark": ["benchmark", "d"],
            "tune": ["tune", "d"]}[command]


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_every_command_names_and_defaults_its_options_alike(command):
    status, out, _ = run([command, "--help"])
    assert status == 0
    usage = out.split("\n\n")[0]
    assert "DATA_DIR" in usage and "ROOT_DIR" not in out
    args = _parse(_positional(command))
    # the shared data options, with the same defaults everywhere
    assert args.id_prop == "id_prop.csv" and args.target is None and args.n_jobs is None
    assert args.no_cache is False and args.quiet is False
    assert "--n-jobs N            processes for CIF parsing" in out and "(default: 1;" in out
    if command != "featurize":
        assert args.device == "auto"
    if command in ("train", "predict", "benchmark", "tune"):
        assert args.target_label is None
    if command != "tune":  # tune's data loader always skips (documented in docs/cli.md)
        assert args.skip_errors is False
    if command in ("train", "benchmark", "tune"):
        seed = "seed" if command == "train" else "random_state"
        for spelling in ("--random-state", "--seed"):
            assert getattr(_parse(_positional(command) + [spelling, "7"]), seed) == 7
    assert _parse(_positional(command) + ["--debug"]).debug is True


def test_benchmark_takes_the_data_options():
    args = _parse(["benchmark", "d", "--id-prop", "p.csv", "--skip-errors", "--no-cache",
                   "--debug", "--target-label", "E_form (eV/atom)", "--n-jobs", "2"])
    assert (args.id_prop, args.skip_errors, args.no_cache, args.debug, args.target_label,
            args.n_jobs) == ("p.csv", True, True, True, "E_form (eV/atom)", 2)


def test_a_typo_in_a_subcommand_option_prints_that_subcommands_usage():
    status, out, err = run(["train", "--epochz", "3"])
    assert status == 2 and out == ""
    assert err.startswith("usage: skcgcnn train ")
    assert err.rstrip().endswith("skcgcnn train: error: unrecognized arguments: --epochz")
    status, _, err = run(["featurize", "d", "-o", "g.npz", "--radis", "6"])
    assert status == 2 and err.startswith("usage: skcgcnn featurize ")


@pytest.mark.parametrize("argv, line", [
    (["train", "d", "--disable-cuda"],
     "skcgcnn train: error: --disable-cuda (an option of the original main.py): use "
     "--device cpu"),
    # the value after -j must not be taken for DATA_DIR, nor a missing option reported
    (["train", "-j", "4", "d", "--print-freq=10"],
     "skcgcnn train: error: -j (an option of the original main.py): use --n-jobs N "
     "(processes that parse CIFs and build graphs); --print-freq (an option of the "
     "original main.py): leave it out: the epoch table is printed after every epoch (-q "
     "hides it)"),
    (["train", "d", "--start-epoch", "5", "--workers", "2"],
     "skcgcnn train: error: --start-epoch (an option of the original main.py): use "
     "--resume DIR (the --output-dir of the interrupted run): it goes on after the last "
     "epoch the run saved; --workers (an option of the original main.py): use --n-jobs N "
     "(processes that parse CIFs and build graphs)"),
    (["predict", "m.pt", "c.cif", "-j4", "--disable-cuda", "-p", "10"],
     "skcgcnn predict: error: -j (an option of the original predict.py): use --n-jobs N "
     "(processes that parse CIFs and build graphs); --disable-cuda (an option of the "
     "original predict.py): use --device cpu; -p (an option of the original predict.py): "
     "leave it out: progress is logged after every --chunk-size crystals (-q hides it)"),
    (["predict", "m.pt", "c.cif", "--start-epoch", "3"],
     "skcgcnn predict: error: --start-epoch (an option of the original main.py): leave "
     "it out"),
    (["featurize", "d", "--disable-cuda"],  # -o missing too: the hint comes first
     "skcgcnn featurize: error: --disable-cuda (an option of the original "
     "main.py/predict.py): leave it out (skcgcnn featurize has no --device)"),
])
def test_options_of_the_original_scripts_name_their_counterpart(argv, line):
    status, out, err = run(argv)
    assert (status, out, err) == (2, "", line + "\n")


def test_options_after_a_double_dash_are_not_taken_for_the_originals():
    status, _, err = run(["train", "--epochz", "--", "--disable-cuda"])
    assert status == 2 and "unrecognized arguments: --epochz" in err
    assert "(an option of the original" not in err


def test_resume_with_a_checkpoint_file_says_it_takes_the_run_folder(tmp_path):
    checkpoint = tmp_path / "checkpoint.pth.tar"
    checkpoint.write_bytes(b"not read")
    status, _, err = run(["train", "--resume", checkpoint])
    assert status == 2
    assert_one_line_error(status, err, "train", f"--resume {str(checkpoint)!r} is a file; "
                          "--resume takes the folder of the run to continue (the "
                          "--output-dir it was started with), not a checkpoint file as "
                          "the original main.py's --resume does")


@pytest.mark.parametrize("message, line", [
    ("structure 3 has no sites; remove it or pass on_error='skip'",
     "structure 3 has no sites; remove it or pass --skip-errors"),
    ("no id_prop.csv in d; a CGCNN root_dir holds id_prop.csv (id,target rows) and <id>.cif "
     "files (or an archive of them); pass id_prop= to name another file",
     "no id_prop.csv in d; a CGCNN root_dir holds id_prop.csv (id,target rows) and <id>.cif "
     "files (or an archive of them); pass --id-prop FILE to name another file"),
    ("no id_prop.csv at /x/id_prop.csv; with an archive as root, pass id_prop=<path to "
     "id_prop.csv>", "no id_prop.csv at /x/id_prop.csv; with an archive as root, pass "
     "--id-prop <path to id_prop.csv>"),
    ("it can run code when loaded. If you trust the file, pass trusted=True",
     "it can run code when loaded. If you trust the file, pass --trusted"),
    ("s: atom(s) [0] have no neighbour within radius=3.0 Å; increase radius or pass "
     "on_error='skip'", "s: atom(s) [0] have no neighbour within --radius 3.0 Å; increase "
     "--radius or pass --skip-errors"),
    ("device='cuda' but torch sees no CUDA device; use device='cpu'",
     "--device cuda but torch sees no CUDA device; use --device cpu"),
    # a class's own keyword in an explanation stays as it is
    ("left out by StructureGraphTransformer(on_error='skip') before",
     "left out by StructureGraphTransformer(on_error='skip') before"),
])
def test_library_advice_is_given_in_command_line_flags(message, line):
    assert cli._common.one_line(ValueError(message)) == line


def test_advice_after_a_listing_is_kept_in_flags():
    from skcgcnn.datasets import DatasetError

    exc = DatasetError("1 of 21 entries of d/id_prop.csv cannot be used (first: b: bad)\n"
                       "  b: bad\nFix them, or pass on_error='skip' to drop them (they are "
                       "then listed in df.attrs['errors']).")
    assert cli._common.one_line(exc) == ("1 of 21 entries of d/id_prop.csv cannot be used "
                                         "(first: b: bad); pass --skip-errors to leave them "
                                         "out")


def test_a_missing_id_prop_names_the_flag(tmp_path):
    (tmp_path / "a.cif").write_text("data_a\n")
    status, _, err = run(["featurize", tmp_path, "-o", tmp_path / "g.npz", "-q"])
    assert_one_line_error(status, err, "featurize", "pass --id-prop FILE to name another file")
    assert "id_prop=" not in err


@needs_data
def test_predict_into_a_pipe_closed_early_ends_quietly():
    """'skcgcnn predict ... | head -0': the reader is gone before the rows are written."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skcgcnn", "predict",
         REF / "pre-trained/formation-energy-per-atom.pth.tar", REF / "sample-regression",
         "--output", "-", "--device", "cpu", "-q"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader closes its end at once
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 141, err
    assert "Broken pipe" not in err and "Errno 32" not in err and "Traceback" not in err


def test_matbench_targets_are_labelled_with_their_unit():
    from skcgcnn.cli.benchmark import target_label

    def ns(**kw):
        return argparse.Namespace(**{"target_label": None, "dataset": None, "target": None,
                                     **kw})

    assert target_label(ns(dataset="matbench_mp_e_form"), "e_form") == "E_form (eV/atom)"
    assert target_label(ns(dataset="jdft2d"), "exfoliation_en") == \
        "exfoliation energy (meV/atom)"
    assert target_label(ns(dataset="matbench_mp_e_form", target_label="Ef"), "e_form") == "Ef"
    assert target_label(ns(), "target") == "target"


@needs_data
def test_target_label_reaches_the_benchmark_table_and_plots(folder60, tmp_path,
                                                            monkeypatch):
    from skcgcnn import reporting

    targets = []
    for name in ("plot_parity", "plot_bars"):
        real = getattr(reporting, name)

        def spy(*a, _real=real, **kw):
            targets.append(kw.get("target", kw.get("label")))
            return _real(*a, **kw)

        monkeypatch.setattr(reporting, name, spy)
    status, out, err = run(["benchmark", folder60, "--models", "dummy", "--cv", "2",
                            "--target-label", "E_form (eV/atom)", "--output-dir", tmp_path,
                            "-q"])
    assert status == 0, err
    header = "| model | MAE (eV/atom) | RMSE (eV/atom) | R² | fit (s) | predict (s) |"
    assert out.startswith(header)
    results = (tmp_path / "results.md").read_text()
    assert results.startswith("# Benchmark: E_form (eV/atom)\n") and header in results
    assert targets == ["E_form (eV/atom)"] * 2 + ["MAE of E_form (eV/atom)"]


@needs_data
def test_benchmark_stops_at_a_bad_structure_unless_skip_errors(folder60, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    lines = (folder60 / "id_prop.csv").read_text().splitlines()[:20]
    for line in lines:
        name = line.split(",")[0] + ".cif"
        os.symlink(os.readlink(folder60 / name), root / name)
    (root / "broken.cif").write_text("data_broken\n_cell_length_a 3\n")
    (root / "id_prop.csv").write_text("\n".join(lines + ["broken,-1.0"]) + "\n")
    argv = ["benchmark", root, "--models", "dummy", "--cv", "2", "--no-cache", "-q"]
    status, _, err = run(argv)
    assert_one_line_error(status, err, "benchmark", "broken", "--skip-errors")
    assert status == 1
    status, out, err = run(argv + ["--skip-errors"])
    assert status == 0, err
    assert "20 structures, 2 folds" in out
    assert "1 entries of the data skipped: broken" in err


@needs_data
def test_target_label_reaches_train_metrics_and_plots(folder60, tmp_path, monkeypatch):
    from skcgcnn import reporting

    seen = []
    for name in ("plot_parity", "plot_learning_curve"):
        real = getattr(reporting, name)

        def spy(*a, _real=real, _name=name, **kw):
            seen.append((_name, kw.get("target", a[-1] if _name == "plot_learning_curve"
                                       else None)))
            return _real(*a, **kw)

        monkeypatch.setattr(reporting, name, spy)
    status, _, err = run(["train", folder60, "--output-dir", tmp_path,
                          "--target-label", "E_form (eV/atom)"] + TINY)
    assert status == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["target"], metrics["target_label"]) == ("target", "E_form (eV/atom)")
    assert seen == [("plot_learning_curve", "CGCNN regression: E_form (eV/atom)"),
                    ("plot_parity", "E_form (eV/atom)")]
