"""tune(split=...) and skcgcnn tune --split: trials on train/val, both models once on test."""
from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from skcgcnn.cli import main  # noqa: E402
from skcgcnn.estimators import CGCNNRegressor  # noqa: E402
from skcgcnn.tuning import SearchSpace, evaluate_baselines, tune  # noqa: E402
from skcgcnn.tuning._baselines import _baseline_values  # noqa: E402

from .test_tuning import DATA, TINY, data, needs_data, one_torch_thread  # noqa: E402,F401

PARTS = {"train": np.arange(24), "val": np.arange(24, 32), "test": np.arange(32, 40)}


@pytest.fixture
def spy(monkeypatch):
    """Every CGCNNRegressor fit and predict: the ids of its graphs (and of a fixed
    validation set)."""
    calls = []
    fit, predict = CGCNNRegressor.fit, CGCNNRegressor.predict

    @functools.wraps(fit)
    def spied_fit(self, X, y=None, **kw):
        valid = getattr(self.train_split, "keywords", {}).get("valid_ds")
        calls.append(("fit", set(X.ids), None if valid is None else set(valid.X.ids)))
        return fit(self, X, y, **kw)

    @functools.wraps(predict)
    def spied_predict(self, X, **kw):
        # skorch's scoring passes a Dataset (the validation set of a trial)
        calls.append(("predict", set(X.ids if hasattr(X, "ids") else X.X.ids), None))
        return predict(self, X, **kw)

    monkeypatch.setattr(CGCNNRegressor, "fit", spied_fit)
    monkeypatch.setattr(CGCNNRegressor, "predict", spied_predict)
    return calls


@needs_data
def test_split_trains_on_train_scores_on_val_and_tests_once(data, spy, tmp_path):
    from sklearn.metrics import mean_absolute_error

    X, y = data
    X, y = X[:40], y[:40]
    ids = {part: set(X.index[rows]) for part, rows in PARTS.items()}
    out = tmp_path / "out"
    result = tune(X, y, space=SearchSpace.from_dict(TINY), n_trials=2, max_epochs=1,
                  storage=":memory:", split=PARTS, baselines=["cgcnn", "dummy"],
                  output_dir=out, verbose=0)
    fits = [c for c in spy if c[0] == "fit"]
    # two trials, the default CGCNNRegressor() (also the "cgcnn" baseline) and the refit
    assert len(fits) == 4
    assert all(train == ids["train"] for _, train, _ in fits)
    trial_fits = [c for c in fits if c[2] is not None]
    assert len(trial_fits) == 2 and all(valid == ids["val"] for *_, valid in trial_fits)
    # the test rows are predicted twice, at the end, and seen nowhere else
    touched = [c for c in spy if c[1] & ids["test"]]
    assert [(kind, rows) for kind, rows, _ in touched] == [("predict", ids["test"])] * 2
    assert spy[-2:] == touched

    attrs = result.study.user_attrs["skcgcnn"]
    assert attrs["validation"].startswith("split train=24 val=8 test=8 sha1=")
    test = result.test
    assert test["n_test"] == 8 and test["tuned_trial"] == result.study.best_trial.number
    expected = mean_absolute_error(y[32:], result.best_pipeline.predict(list(X[32:])))
    assert test["tuned_test_mae"] == pytest.approx(expected, rel=1e-5)
    # the refit is the best trial again: its train rows and seed
    refit_val = mean_absolute_error(y[24:32], result.best_pipeline.predict(list(X[24:32])))
    assert refit_val == pytest.approx(result.best_value, rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"] == test and summary["validation"] == attrs["validation"]
    table = pd.read_csv(out / "test.csv")
    assert list(table["model"]) == [f"tuned CGCNN (trial {test['tuned_trial']})",
                                    "default CGCNNRegressor()"]
    np.testing.assert_allclose(table["test_mae"],
                               [test["tuned_test_mae"], test["default_test_mae"]])
    written = pd.read_csv(out / "split.csv", dtype=str)
    assert {p: set(written["id"][written["split"] == p]) for p in PARTS} == ids
    assert (out / "test.png").exists()


def test_split_is_checked():
    from pymatgen.core import Lattice, Structure

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    structures, y = [nacl] * 40, np.zeros(40)
    bad = [({"train": [0, 1], "val": [2]}, "keys 'train', 'val' and 'test'"),
           ({"train": [0, 1], "val": [2], "test": [1]}, "structure 1 is in 'train' and 'test'"),
           ({"train": [0, 1], "val": [2], "test": [12]}, r"positions \[12\] outside 0..9"),
           ({"train": [0], "val": [2], "test": [3]}, "holds 1 rows; it needs at least 2"),
           ({"train": [0, 1], "val": [], "test": [3]}, r"split\['val'\] holds 0 rows")]
    from skcgcnn.tuning._holdout import fixed_split

    for split, message in bad:
        with pytest.raises(ValueError, match=message):
            fixed_split(split, 10)
    with pytest.raises(ValueError, match="give split or cv, not both"):
        tune(structures, y, split=PARTS, cv=2, storage=":memory:")


@needs_data
def test_cgcnn_baseline_is_the_default_estimator(data, monkeypatch):
    X, y = data
    params = {}
    fit = CGCNNRegressor.fit

    def recording(self, X_, y_=None, **kw):
        params.update(self.get_params())
        return fit(self, X_, y_, **kw)

    monkeypatch.setattr(CGCNNRegressor, "fit", recording)
    evaluate_baselines(list(X[:30]), y[:30], [(np.arange(24), np.arange(24, 30))],
                       ["cgcnn"], max_epochs=1)
    default = CGCNNRegressor().get_params()
    differ = {k for k in default if not k.startswith("callbacks") and params[k] != default[k]}
    assert differ == {"max_epochs", "random_state", "verbose"}
    assert params["batch_size"] == 128 and params["optimizer"] == "adamw"


def test_a_cgcnn_baseline_stored_with_the_old_recipe_is_scored_again(monkeypatch):
    from skcgcnn.tuning import _baselines

    monkeypatch.setattr(_baselines, "evaluate_baselines",
                        lambda *a, names=None, **kw: {n: 1.0 for n in a[3]})
    study = optuna.create_study()
    study.set_user_attr("baselines", {"cgcnn": 0.5, "dummy": 0.7})  # batches of 64
    args = (study, [], np.zeros(3), [], 1, 0, None, None, "cpu")
    assert _baseline_values(["cgcnn", "dummy"], *args) == {"cgcnn": 1.0, "dummy": 0.7}
    assert study.user_attrs["cgcnn_baseline"] == 2
    study.set_user_attr("baselines", {"cgcnn": 0.5, "dummy": 0.7})  # now marked as default
    assert _baseline_values(["cgcnn", "dummy"], *args) == {"cgcnn": 0.5, "dummy": 0.7}
    # a value the caller already has (the default model of a fixed split) is not redone
    fresh = optuna.create_study()
    assert _baseline_values(["cgcnn"], fresh, *args[1:], known={"cgcnn": 0.25}) == {
        "cgcnn": 0.25}
    assert fresh.user_attrs["baselines"] == {"cgcnn": 0.25}


def _split_file(path, ids) -> None:
    rows = ["id,split"] + [f"{ident},{part}" for part, rows in PARTS.items()
                           for ident in np.asarray(ids)[rows]]
    path.write_text("\n".join(rows) + "\n")


@needs_data
@pytest.mark.timeout(300)
def test_cli_split_reports_tuned_and_default_test_mae(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))
    ids = [line.split(",")[0] for line in
           (DATA / "id_prop.csv").read_text().splitlines()[:40]]
    split = tmp_path / "split.csv"
    _split_file(split, ids)
    out = tmp_path / "out"
    args = ["tune", str(DATA), "--split", str(split), "--space", json.dumps(TINY),
            "--n-trials", "2", "--epochs", "1", "--baselines", "cgcnn",
            "--storage", ":memory:", "--output-dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "validation split train=24 val=8 test=8 sha1=" in printed.err
    (line,) = [x for x in printed.out.splitlines() if x.startswith("test MAE on 8 rows")]
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['test']['tuned_test_mae']:.4f}" in line
    assert f"default CGCNNRegressor() {summary['test']['default_test_mae']:.4f}" in line
    assert summary["n_samples"] == 40  # only the crystals the file names were read
    assert pd.read_csv(out / "split.csv", dtype=str).values.tolist() == [
        row.split(",") for row in split.read_text().splitlines()[1:]]
    for extra, option in ((["--limit", "40"], "--limit"), (["--cv", "2"], "--cv"),
                          (["--validation-fraction", "0.3"], "--validation-fraction")):
        assert main(args + extra) == 2
        assert f"{option} cannot be used with --split" in capsys.readouterr().err
    split.write_text("id,part\n")
    assert main(args) == 1  # as skcgcnn train --split: before any crystal is read
    assert "the first row must be the header id,split" in capsys.readouterr().err


@needs_data
def test_trials_on_a_share_of_the_train_rows_the_best_rerun_in_full(data, spy, tmp_path):
    from sklearn.metrics import mean_absolute_error

    X, y = data
    X, y = X[:40], y[:40]
    ids = {part: set(X.index[rows]) for part, rows in PARTS.items()}
    result = tune(X, y, space=SearchSpace.from_dict(TINY), n_trials=3, max_epochs=1,
                  storage=":memory:", split=PARTS, baselines=[], trial_rows=0.5,
                  rerun_top=2, refit_epochs=2, output_dir=tmp_path, verbose=0)
    fits = [c for c in spy if c[0] == "fit"]
    trial_fits = [c for c in fits if c[2] is not None]
    # three trials on the same 12 of the 24 train rows, scored on all the val rows
    assert len(trial_fits) == 3
    assert all(len(train) == 12 and train < ids["train"] for _, train, _ in trial_fits)
    assert len({frozenset(train) for _, train, _ in trial_fits}) == 1
    assert all(valid == ids["val"] for *_, valid in trial_fits)
    # then the default model and the two best trials again, each on all the train rows;
    # no separate refit: the chosen re-run is the model scored on test
    assert [train == ids["train"] for _, train, _ in fits[3:]] == [True] * 3
    assert len(fits) == 6
    complete = sorted((t for t in result.study.trials if t.value is not None),
                      key=lambda t: t.value)
    reruns = result.reruns
    assert sorted(r["trial"] for r in reruns) == sorted(t.number for t in complete[:2])
    assert reruns[0]["value"] <= reruns[1]["value"]
    assert result.test["tuned_trial"] == reruns[0]["trial"]
    # the re-run's score is the returned model's validation MAE, 2 epochs on 24 rows
    val = mean_absolute_error(y[24:32], result.best_pipeline.predict(list(X[24:32])))
    assert val == pytest.approx(reruns[0]["value"], rel=1e-5)
    assert result.best_pipeline.named_steps["cgcnn"].max_epochs == 2
    assert len(result.best_pipeline.named_steps["cgcnn"].history) == 2
    assert result.study.user_attrs["skcgcnn"]["trial_rows"] == 0.5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reruns"] == reruns and summary["trial_rows"] == 0.5


def test_trial_rows_and_rerun_top_are_checked():
    from skcgcnn.tuning._fidelity import subset_splits

    train, valid = np.arange(10), np.arange(10, 14)
    (cut, same), = subset_splits([(train, valid)], 4, 0)
    assert len(cut) == 4 and set(cut) < set(train)
    np.testing.assert_array_equal(same, valid)
    assert len(subset_splits([(train, valid)], 0.25, 0)[0][0]) == 2  # round(2.5) = 2
    assert len(subset_splits([(train, valid)], 1, 0)[0][0]) == 10  # 1: all of them
    assert len(subset_splits([(train, valid)], 50, 0)[0][0]) == 10  # capped
    structures, y = [None] * 10, np.zeros(10)
    for kwargs, message in [({"trial_rows": 0.0}, r"fraction must lie in \(0, 1\]"),
                            ({"trial_rows": 1.5}, r"fraction must lie in \(0, 1\]"),
                            ({"trial_rows": 0}, "at least 2 rows"),
                            ({"trial_rows": "half"}, "use a fraction"),
                            ({"rerun_top": -1}, "rerun_top=-1"),
                            ({"rerun_top": 2, "cv": 3}, "with cv give rerun_top=0")]:
        with pytest.raises(ValueError, match=message):
            tune(structures, y, storage=":memory:", **kwargs)
