"""What tune() shows while it runs: a line per finished trial and the refit's, on stderr."""
from __future__ import annotations

import json
import re

import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from skcgcnn.cli import main  # noqa: E402
from skcgcnn.tuning import SearchSpace, tune  # noqa: E402
from skcgcnn.tuning._progress import TrialLines  # noqa: E402

from .test_tuning import BAD, DATA, GOOD, TINY, data, needs_data, one_torch_thread  # noqa: E402,F401

# one of each: a complete trial, one that diverges (pruned after its first epoch), another
THIRD = {"atom_features": "onehot", "optimizer": "adam", "n_conv": 2, "lr": 0.003}


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@needs_data
def test_tune_prints_a_line_per_trial_and_the_refit_on_stderr(data, capsys):
    X, y = data
    space = SearchSpace.from_dict(dict(TINY, lr=[1e-4, 1e3]))
    tune(X[:30], y[:30], space=space, n_trials=3, max_epochs=2, storage=":memory:",
         pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
         enqueue=[GOOD, BAD, THIRD], study_name="progress")
    out, err = capsys.readouterr()
    assert out == ""
    trials = _lines(err, "trial ")
    assert len(trials) == 3, err
    assert re.fullmatch(r"trial 0 \[1/3\]: valid MAE \d+\.\d{4} \(best\), \d+\.\d+ s: "
                        r"atom_features=cgcnn optimizer=adam n_conv=1 lr=0\.01", trials[0])
    # the diverging one is pruned after its first epoch
    assert re.fullmatch(r"trial 1 \[2/3\]: pruned at epoch 1 \(valid MAE \d+\.\d{4}\), "
                        r"\d+\.\d+ s: atom_features=cgcnn optimizer=sgd n_conv=1 lr=300",
                        trials[1]), trials[1]
    assert re.match(r"trial 2 \[3/3\]: (valid MAE|pruned at epoch 1) ", trials[2])
    assert trials[2].endswith(": atom_features=onehot optimizer=adam n_conv=2 lr=0.003")
    assert _lines(err, "study 'progress': 3 trials of 2 epochs, validation holdout")
    assert re.search(r"^study 'progress': (2 complete, 1 pruned|1 complete, 2 pruned); "
                     r"best valid MAE \d+\.\d{4} \(trial [02]\)$", err, re.M)
    (start,) = _lines(err, "refit: trial ")
    assert re.fullmatch(r"refit: trial [02]'s configuration on 30 structures, 2 epochs \.\.\.",
                        start)
    (end,) = _lines(err, "refit: done in ")
    assert err.index(start) < err.index(end)
    assert "train_loss" not in err  # no epoch table, from the trials or the refit
    assert err.index(trials[0]) < err.index(trials[1]) < err.index(trials[2]) < \
        err.index(start)


@needs_data
def test_tune_with_verbose_0_prints_nothing(data, capfd):
    X, y = data
    tune(X[:30], y[:30], space=SearchSpace.from_dict(TINY), n_trials=2, max_epochs=1,
         storage=":memory:", baselines=["dummy"], verbose=0)
    assert capfd.readouterr() == ("", "")


@needs_data
@pytest.mark.timeout(300)
def test_cli_prints_each_trial_once_and_nothing_with_quiet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))
    args = ["tune", str(DATA), "--limit", "30", "--space", json.dumps(TINY), "--n-trials",
            "2", "--epochs", "1", "--baselines", "dummy", "--storage", ":memory:",
            "--save-model", str(tmp_path / "best.pt")]
    assert main(args) == 0
    err = capsys.readouterr().err
    # written once: not also as log lines
    assert [line.split(":")[0] for line in _lines(err, "trial ")] == [
        "trial 0 [1/2]", "trial 1 [2/2]"]
    assert len(_lines(err, "refit: trial ")) == 1 and len(_lines(err, "refit: done")) == 1
    assert len(_lines(err, "baseline dummy: valid MAE ")) == 1
    assert "INFO: trial" not in err and "INFO: baseline" not in err
    assert main(args + ["-q"]) == 0
    err = capsys.readouterr().err
    assert not _lines(err, "trial ") and "refit" not in err and "baseline" not in err


def _trial(state: TrialState, steps: dict, **kw) -> object:
    return create_trial(state=state, params={"optimizer": "adam", "lr": 0.00123456},
                        distributions={"optimizer": CategoricalDistribution(["adam", "sgd"]),
                                       "lr": FloatDistribution(1e-4, 1e-1, log=True)},
                        intermediate_values=steps, **kw)


def test_trial_lines_name_the_fold_of_a_pruned_trial_and_skip_earlier_trials(capsys):
    before = _trial(TrialState.COMPLETE, {0: 0.5, 1: 0.4}, value=0.4)
    before.number = 0
    pruned = _trial(TrialState.PRUNED, {0: 0.9, 1: 0.8, 2: 0.85})
    pruned.number = 1
    failed = _trial(TrialState.FAIL, {}, user_attrs={"error": "OSError: disk full"})
    failed.number = 2
    worse = _trial(TrialState.COMPLETE, {0: 0.6, 1: 0.5, 2: 0.5, 3: 0.45}, value=0.45)
    worse.number = 3
    lines = TrialLines(n_trials=10, max_epochs=2, n_folds=2)
    lines.start([before])
    assert lines.done == 1
    lines.update([before, pruned, failed, worse])
    lines.update([before, pruned, failed, worse])  # shown once
    err = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in err] == [
        "trial 1 [2/10]: pruned at epoch 1 of fold 2 (valid MAE 0.8500)",
        "trial 2 [3/10]: failed (OSError: disk full)",
        "trial 3 [4/10]: valid MAE 0.4500"]  # not "(best)": trial 0 had 0.4
    assert err[0].endswith(": optimizer=adam lr=0.00123")
