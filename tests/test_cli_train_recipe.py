"""``skcgcnn train``: --recipe, the recipe options (--lr-schedule, --warmup-fraction, --loss,
--early-stopping, --n-iter-no-change) and --split FILE (issue 14, parts 2 and 3)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from skcgcnn.cli import build_parser, main

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.usefixtures("structure_cache"),  # tests/conftest.py
]

# a tiny network and three epochs: the point is the plumbing, not the accuracy
NET = ["--atom-fea-len", "8", "--n-conv", "1", "--h-fea-len", "16", "--device", "cpu", "-q"]
TINY = ["--epochs", "3", "--batch-size", "16", "--train-ratio", "0.6", "--val-ratio", "0.2",
        "--test-ratio", "0.2", "--seed", "0"] + NET


def run(argv: list) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def one_error(status: int, err: str, *needles: str) -> str:
    """The single 'skcgcnn train: error:' line of a failed run; it holds every needle."""
    assert status != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("skcgcnn train: error: "), err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run1(folder60, tmp_path_factory) -> Path:
    """A run with the default recipe (and the tiny network, 3 epochs)."""
    out = tmp_path_factory.mktemp("run1")
    status, _, stderr = run(["train", folder60, "--output-dir", out] + TINY)
    assert status == 0, stderr
    return out


def build(argv: list, task: str = "regression"):
    """The estimator that ``skcgcnn train ROOT argv`` would fit (no data read)."""
    from skcgcnn.cli._training import apply_recipe, check_recipe_args, make_estimator

    args = build_parser().parse_args(["train", "root", "--task", task] + list(argv))
    args = apply_recipe(args)
    check_recipe_args(args)
    est, _ = make_estimator(args, None, ("valid_mae", None, True), Path("unused"))
    return est


def plain_params(est) -> dict:
    """get_params without the callback objects and the split (new objects each time)."""
    return {k: v for k, v in est.get_params(deep=False).items()
            if k not in ("callbacks", "train_split", "_params_to_validate")}


# -- --recipe ----------------------------------------------------------------------------
def test_recipe_values_are_the_estimators_recipes():
    from skcgcnn.cli._train_options import RECIPE_OPTIONS, recipe_help
    from skcgcnn.cli._training import recipe_values
    from skcgcnn.estimators import (DEFAULT_RECIPE, ORIGINAL_CLASSIFIER_RECIPE,
                                    ORIGINAL_RECIPE)

    # every parameter of the recipes has its option: none is dropped on the way
    assert set(ORIGINAL_RECIPE) <= set(RECIPE_OPTIONS)
    assert recipe_values("original", "regression") == {
        "epochs": 30, "batch_size": 256, "lr": 0.01, "optim": "SGD", "momentum": 0.9,
        "weight_decay": 0.0, "lr_schedule": "multistep", "early_stopping": False,
        "loss": "squared_error", "lr_milestones": [100]}
    assert set(ORIGINAL_CLASSIFIER_RECIPE) <= set(RECIPE_OPTIONS)
    assert "loss" not in recipe_values("original", "classification")
    assert set(DEFAULT_RECIPE) <= set(RECIPE_OPTIONS)
    assert recipe_values("default", "regression") == recipe_help() == {
        "epochs": 50, "batch_size": 128, "lr": 0.01, "optim": "AdamW", "weight_decay": 0.01,
        "lr_schedule": "onecycle", "early_stopping": False, "loss": "absolute_error"}
    assert "loss" not in recipe_values("default", "classification")


# main.py's options written out: what --recipe original must equal
MAIN_PY = ["--optim", "SGD", "--lr", "0.01", "--momentum", "0.9", "--weight-decay", "0",
           "--batch-size", "256", "--epochs", "30", "--lr-schedule", "multistep",
           "--lr-milestones", "100"]


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_recipe_original_builds_main_py_estimator(task):
    loss = ["--loss", "squared_error"] if task == "regression" else []
    recipe, spelled = build(["--recipe", "original"], task), build(MAIN_PY + loss, task)
    assert plain_params(recipe) == plain_params(spelled)
    assert plain_params(recipe) != plain_params(build([], task))
    assert [name for name, _ in recipe.callbacks] == [name for name, _ in spelled.callbacks]
    params = recipe.get_params(deep=False)
    assert (params["max_epochs"], params["batch_size"], params["lr"], params["optimizer"],
            params["optimizer__momentum"], params["optimizer__weight_decay"],
            params["lr_schedule"], params["early_stopping"],
            params["callbacks__lr_scheduler__milestones"]) == \
        (30, 256, 0.01, "sgd", 0.9, 0.0, "multistep", False, [100])
    if task == "regression":
        assert params["loss"] == "squared_error"


def test_options_given_with_the_recipe_override_it(caplog):
    with caplog.at_level(logging.INFO, logger="skcgcnn"):
        est = build(["--recipe", "original", "--epochs", "5", "--optim", "AdamW",
                     "--lr-schedule", "onecycle"])
    same = build(["--epochs", "5", "--optim", "AdamW", "--lr-schedule", "onecycle",
                  "--lr", "0.01", "--weight-decay", "0", "--batch-size", "256", "--loss",
                  "squared_error"])
    assert plain_params(est) == plain_params(same)
    assert {k: plain_params(est).get(k) for k in ("max_epochs", "optimizer", "lr_schedule",
                                                  "callbacks__lr_scheduler__milestones")} \
        == {"max_epochs": 5, "optimizer": "adamw", "lr_schedule": "onecycle",
            "callbacks__lr_scheduler__milestones": None}
    assert "--recipe original with --optim AdamW (recipe: SGD), --epochs 5 (recipe: 30), " \
        "--lr-schedule onecycle (recipe: multistep)" in caplog.text


def test_recipe_original_trains_as_main_py_options(run1, folder60, tmp_path):
    status, _, stderr = run(["train", folder60, "--output-dir", tmp_path / "a", "--recipe",
                             "original"] + TINY)
    assert status == 0, stderr
    status, _, stderr = run(["train", folder60, "--output-dir", tmp_path / "b"] + MAIN_PY
                            + ["--loss", "squared_error"] + TINY)  # TINY's --epochs 3 wins
    assert status == 0, stderr
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "test_results.csv").read_text() == (b / "test_results.csv").read_text()
    assert metrics(a)["test"] == metrics(b)["test"] != metrics(run1)["test"]
    assert metrics(a)["optimizer"]["recipe"] == "original"
    assert metrics(run1)["optimizer"]["recipe"] == "default"
    assert (metrics(run1)["optimizer"]["name"], metrics(run1)["optimizer"]["loss"]) == \
        ("AdamW", "absolute_error")


# -- the recipe options reach the estimator ----------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["--lr-schedule", "multistep"], {"lr_schedule": "multistep"}),
    (["--lr-schedule", "cosine", "--warmup-fraction", "0.25"],
     {"lr_schedule": "cosine", "warmup_fraction": 0.25}),
    (["--lr-schedule", "none"], {"lr_schedule": None}),
    (["--lr-schedule", "multistep", "--lr-milestones", "7", "9"],
     {"callbacks__lr_scheduler__milestones": [7, 9]}),
    (["--loss", "huber"], {"loss": "huber"}),
    (["--loss", "squared_error"], {"loss": "squared_error"}),
    (["--precision", "bfloat16"], {"precision": "bfloat16"}),  # issue 16 (docs/gpu.md)
])
def test_recipe_options_reach_the_estimator(argv, expected):
    params = build(argv).get_params(deep=False)
    assert {k: params.get(k) for k in expected} == expected
    default = build([]).get_params(deep=False)
    assert {k: default.get(k) for k in expected} != expected


@pytest.mark.parametrize("task, score, lower", [("regression", "valid_mae", True),
                                                ("classification", "valid_auc", False)])
def test_early_stopping_watches_the_validation_score_of_the_best_epoch(task, score, lower):
    from skorch.callbacks import EarlyStopping

    from skcgcnn.cli._training import apply_recipe, make_estimator

    args = apply_recipe(build_parser().parse_args(["train", "root", "--task", task,
                                                   "--early-stopping",
                                                   "--n-iter-no-change", "3"]))
    est, _ = make_estimator(args, None, (score, None, lower), Path("unused"))
    callbacks = dict(est.callbacks)
    names = [name for name, _ in est.callbacks]
    # last: after the score, the best checkpoint and training state (on --resume,
    # LoadTrainingState replays it over the restored history)
    assert names[-1] == "early_stopping"
    stopping = callbacks["early_stopping"]
    assert isinstance(stopping, EarlyStopping)
    assert (stopping.monitor, stopping.lower_is_better, stopping.patience, stopping.threshold,
            stopping.threshold_mode, stopping.load_best) == (score, lower, 3, 0.0, "abs", False)
    # the command's validation set, not the estimator's internal split
    assert est.get_params()["early_stopping"] is False
    assert "early_stopping" not in dict(build([]).callbacks)


def test_train_records_the_validation_mae_that_tune_records():
    """One validation MAE (issue 27): the regression score of ``skcgcnn train`` is the
    scorer of the library's ValidationMAE (which tune's trials record), in a callback
    with its settings."""
    from skcgcnn.cli._training import apply_recipe, make_estimator
    from skcgcnn.cli.train import _validation
    from skcgcnn.estimators._scoring import ValidationMAE, validation_mae

    args = apply_recipe(build_parser().parse_args(["train", "root"]))
    _, score = _validation(args, np.arange(10), np.linspace(0, 1, 10), np.arange(8),
                           np.arange(8, 10))
    assert score == ("valid_mae", validation_mae, True)
    est, _ = make_estimator(args, None, score, Path("unused"))
    settings = ("scoring", "lower_is_better", "on_train", "name", "use_caching")
    assert [getattr(dict(est.callbacks)["valid_score"], k) for k in settings] == \
        [getattr(ValidationMAE(), k) for k in settings]
    from skcgcnn.tuning import ValidationMAE as tuning_mae

    assert tuning_mae is ValidationMAE


@pytest.mark.parametrize("argv, needle", [
    (["--n-iter-no-change", "3"], "--n-iter-no-change 3 is the patience of early stopping: "
                                  "add --early-stopping"),
    (["--early-stopping", "--n-iter-no-change", "0"], "--n-iter-no-change 0: must be at "
                                                       "least 1"),
    (["--warmup-fraction", "1.5"], "--warmup-fraction 1.5: must be in [0, 1)"),
    (["--task", "classification", "--loss", "huber"], "--loss huber applies to regression "
                                                       "only"),
    (["--split", "split.csv", "--train-ratio", "0.5", "--test-size", "3"],
     "--train-ratio, --test-size cannot be used with --split"),
])
def test_recipe_and_split_usage_errors(argv, needle, tmp_path):
    status, _, err = run(["train", tmp_path, "--output-dir", tmp_path / "out"] + argv)
    assert status == 2
    one_error(status, err, needle)


def test_onecycle_huber_early_stopping_run(folder60, tmp_path):
    out = tmp_path / "out"
    status, _, stderr = run(["train", folder60, "--output-dir", out, "--lr-schedule",
                             "onecycle", "--warmup-fraction", "0.5", "--loss", "huber",
                             "--optim", "AdamW", "--lr", "0.005", "--early-stopping",
                             "--n-iter-no-change", "5"] + TINY)
    assert status == 0, stderr
    record = metrics(out)
    assert {k: record["optimizer"][k] for k in ("lr_schedule", "warmup_fraction", "loss",
                                                 "early_stopping", "n_iter_no_change",
                                                 "lr_milestones")} == \
        {"lr_schedule": "onecycle", "warmup_fraction": 0.5, "loss": "huber",
         "early_stopping": True, "n_iter_no_change": 5, "lr_milestones": None}
    history = json.loads((out / "history.json").read_text())
    # one-cycle per batch: 36 crystals in batches of 16 -> 3 steps an epoch, 9 in all,
    # up to --lr over the first half (torch's OneCycleLR: 0.005 / 25 at the first step)
    import torch

    lrs = [batch["event_lr"] for epoch in history for batch in epoch["batches"]
           if "train_loss" in batch]
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.005)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.005, total_steps=9,
                                                   pct_start=0.5)
    expected = []
    for _ in range(9):
        expected.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx(expected, rel=1e-12)


# -- early stopping, and --resume ---------------------------------------------------------
# a learning rate so small that only the batch-norm statistics move the validation MAE
STILL = ["--lr", "1e-9", "--lr-schedule", "none", "--early-stopping", "--n-iter-no-change",
         "2", "--batch-size", "16", "--train-ratio", "0.6", "--val-ratio", "0.2",
         "--test-ratio", "0.2", "--seed", "0"] + NET


def test_early_stopping_stops_and_resume_continues_its_count(folder60, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    status, stdout, stderr = run(["train", folder60, "--output-dir", whole, "--epochs",
                                  "30"] + STILL)
    assert status == 0, stderr
    record = metrics(whole)
    stop = record["epochs_trained"]
    assert 3 <= stop < 30 and record["stopped_early"] is True
    assert f"{stop} epochs" in stdout
    # it stopped 2 epochs after the best epoch, whose weights it keeps; every epoch,
    # the last too, has its validation MAE and training state
    history = json.loads((whole / "history.json").read_text())
    assert record["best_epoch"] == stop - 2
    assert all("valid_mae" in row for row in history)
    assert [row["epoch"] for row in history if row["valid_mae_best"]][-1] == stop - 2
    from skcgcnn.estimators import read_training_state

    assert read_training_state(whole / "training_state.pt")["epoch"] == stop
    # a finished, early-stopped run is left alone
    before = {p.name: p.stat().st_mtime_ns for p in whole.iterdir()}
    status, stdout, stderr = run(["train", "--resume", whole])
    assert status == 0, stderr
    assert f"early stopping ended it after epoch {stop} of 30" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in whole.iterdir()} == before

    # the same run cut one epoch before it stopped (one epoch without improvement so far)
    # and resumed: it stops where the whole run did, not 2 epochs after the resume
    status, _, stderr = run(["train", folder60, "--output-dir", cut, "--epochs",
                             str(stop - 1)] + STILL)
    assert status == 0, stderr
    assert metrics(cut)["stopped_early"] is False
    options = json.loads((cut / "train_options.json").read_text())
    options["options"]["epochs"] = 30
    (cut / "train_options.json").write_text(json.dumps(options))
    status, stdout, stderr = run(["train", "--resume", cut])
    assert status == 0, stderr
    assert f"epochs {stop}-{stop} (resumed after epoch {stop - 1})" in stdout
    assert (metrics(cut)["epochs_trained"], metrics(cut)["stopped_early"]) == (stop, True)
    assert (cut / "test_results.csv").read_text() == (whole / "test_results.csv").read_text()


def test_resume_with_a_per_batch_schedule_equals_the_uninterrupted_run(
        folder60, tmp_path, monkeypatch):
    from skcgcnn.estimators import TrainingCheckpoint

    argv = ["--lr-schedule", "cosine", "--warmup-fraction", "0.3", "--optim", "AdamW",
            "--lr", "0.005", "--epochs", "4"] + TINY[2:]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    status, _, stderr = run(["train", folder60, "--output-dir", whole] + argv)
    assert status == 0, stderr

    save = TrainingCheckpoint.on_epoch_end

    def ctrl_c_after_epoch_2(self, net, **kwargs):
        save(self, net, **kwargs)
        if len(net.history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", ctrl_c_after_epoch_2)
    status, _, stderr = run(["train", folder60, "--output-dir", cut] + argv)
    assert status == 0, stderr
    assert metrics(cut)["epochs_trained"] == 2
    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", save)
    status, stdout, stderr = run(["train", "--resume", cut])
    assert status == 0, stderr
    assert "epochs 3-4 (resumed after epoch 2)" in stdout

    histories = [json.loads((d / "history.json").read_text()) for d in (whole, cut)]
    lrs = [[b["event_lr"] for e in h for b in e["batches"] if "train_loss" in b]
           for h in histories]
    assert len(lrs[0]) == 12 and lrs[0] == lrs[1]
    assert [e["train_loss"] for e in histories[0]] == [e["train_loss"] for e in histories[1]]
    assert (cut / "test_results.csv").read_text() == (whole / "test_results.csv").read_text()


# -- --split FILE --------------------------------------------------------------------------
def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path


def test_split_file_gives_the_same_run_again(run1, folder60, tmp_path):
    out = tmp_path / "again"
    given = ["--epochs", "3", "--batch-size", "16", "--seed", "0"] + NET
    status, _, stderr = run(["train", folder60, "--output-dir", out, "--split",
                             run1 / "split.csv"] + given)
    assert status == 0, stderr
    assert (out / "split.csv").read_text() == (run1 / "split.csv").read_text()
    assert (out / "test_results.csv").read_text() == (run1 / "test_results.csv").read_text()
    assert metrics(out)["split_file"] == str(run1 / "split.csv")
    options = json.loads((out / "train_options.json").read_text())["options"]
    assert options["split"] == str((run1 / "split.csv").resolve())


def test_split_file_leaves_out_the_crystals_it_does_not_name(run1, folder60, tmp_path):
    rows = read_rows(run1 / "split.csv")
    kept = [rows[0]] + [r for r in rows[1:] if r[1] == "train"][:10] + \
        [r for r in rows[1:] if r[1] != "train"]
    split = write_rows(tmp_path / "part.csv", kept)
    status, stdout, stderr = run(["train", folder60, "--output-dir", tmp_path / "out",
                                  "--split", split, "--epochs", "1"] + NET)
    assert status == 0, stderr
    assert f"26 of the 60 crystals are not in {split} and are left out" in stderr
    assert "trained on 10 crystals (12 validation, 12 test)" in stdout
    assert read_rows(tmp_path / "out" / "split.csv") == kept


@pytest.mark.parametrize("change, needles", [
    (lambda rows: rows + [["no-such-id", "train"]],
     ["row 62: id 'no-such-id' is not a crystal of the data"]),
    (lambda rows: rows + [rows[5]], ["row 62: id", "is already in row 6"]),
    (lambda rows: rows[:3] + [[rows[3][0], "validation"]] + rows[4:],
     ["row 4: split 'validation' of", "is not one of train, val, test"]),
    (lambda rows: rows[:3] + [[rows[3][0]]] + rows[4:], ["row 4:", "is not id,split"]),
    (lambda rows: [r for r in rows if r[1] != "test"], ["the test set holds 0 crystals; it "
                                                        "needs at least 1"]),
    (lambda rows: [r for r in rows if r[1] != "train"], ["the train set holds 0 crystals"]),
    (lambda rows: rows[1:], ["the first row must be the header id,split"]),
])
def test_bad_split_files_are_refused(run1, folder60, tmp_path, change, needles):
    split = write_rows(tmp_path / "bad.csv", change(read_rows(run1 / "split.csv")))
    status, _, err = run(["train", folder60, "--output-dir", tmp_path / "out", "--split",
                          split] + NET)
    one_error(status, err, f"--split {str(split)!r}", *needles)
    assert not (tmp_path / "out" / "train_options.json").exists()


def test_missing_split_file_is_refused_before_the_data_are_read(tmp_path):
    split = tmp_path / "none.csv"
    status, _, err = run(["train", tmp_path / "no-data", "--split", split] + NET)
    assert status == 1
    one_error(status, err, f"--split {str(split)!r}: no such file")
    # nor is a folder
    (tmp_path / "dir.csv").mkdir()
    status, _, err = run(["train", tmp_path / "no-data", "--split", tmp_path / "dir.csv"]
                         + NET)
    one_error(status, err, "no such file")
