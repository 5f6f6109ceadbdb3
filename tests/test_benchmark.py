"""Tests for skcgcnn.benchmark (run_benchmark and the `skcgcnn benchmark` command)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold, ShuffleSplit

from skcgcnn.benchmark import make_models, run_benchmark
from skcgcnn.cli.benchmark import add_benchmark_parser, run_benchmark_command

from ._shared import SAMPLE500, sample_series

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:spglib"),
]

SAMPLE = SAMPLE500


@pytest.fixture(scope="module")
def sample40() -> tuple[pd.Series, np.ndarray]:
    return sample_series(40)


class NSites(RegressorMixin, BaseEstimator):
    """A small real model on structures: least squares on the number of sites."""

    def fit(self, X, y):
        n = np.array([len(s) for s in X], dtype=float)
        self.coef_ = np.polyfit(n, y, 1)
        return self

    def predict(self, X):
        return np.polyval(self.coef_, np.array([len(s) for s in X], dtype=float))


class DropsOne(RegressorMixin, BaseEstimator):
    """Like StructureGraphTransformer(on_error='skip') upstream: one prediction short."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X) - 1, self.mean_)


class Fails(RegressorMixin, BaseEstimator):
    def fit(self, X, y):
        raise RuntimeError("cannot fit")

    def predict(self, X):  # pragma: no cover - never fitted
        raise RuntimeError("not fitted")


def test_fixed_split_writes_every_file_with_exact_metrics(sample40, tmp_path):
    X, y = sample40
    train, test = np.arange(30), np.arange(30, 40)
    models = {"dummy": DummyRegressor(), "n sites": NSites()}
    result = run_benchmark(models, X, y, cv=(train, test), output_dir=tmp_path, verbose=0)

    expected_files = {
        "results.md", "results.csv", "folds.csv", "predictions.csv", "run.json",
        "parity_dummy.png", "parity_n_sites.png", "parity_overlay.png", "mae_bar.png",
    }
    assert {p.name for p in tmp_path.iterdir()} == expected_files
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = pd.read_csv(tmp_path / "results.csv", index_col="model")
    for name, model in models.items():
        pred = clone(model).fit(X.iloc[train], y[train]).predict(X.iloc[test])
        assert summary.loc[name, "mae_mean"] == pytest.approx(
            mean_absolute_error(y[test], pred), rel=1e-12)
        assert summary.loc[name, "rmse_mean"] == pytest.approx(
            root_mean_squared_error(y[test], pred), rel=1e-12)
        assert summary.loc[name, "r2_mean"] == pytest.approx(r2_score(y[test], pred), rel=1e-12)
        assert summary.loc[name, "mae_std"] == 0.0
        assert summary.loc[name, "n_folds"] == 1
        assert summary.loc[name, "fit_s_mean"] >= 0.0
    assert summary.loc["dummy", "mae_mean"] == pytest.approx(
        np.mean(np.abs(y[test] - y[train].mean())), rel=1e-12)

    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert list(preds.columns) == ["model", "fold", "index", "id", "y_true", "y_pred"]
    assert len(preds) == 20
    dummy = preds[preds["model"] == "dummy"]
    np.testing.assert_array_equal(dummy["index"], test)
    np.testing.assert_array_equal(dummy["id"], X.index[test])
    np.testing.assert_allclose(dummy["y_true"], y[test])
    np.testing.assert_allclose(dummy["y_pred"], y[train].mean())

    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| model | MAE | RMSE | R² | fit (s) | predict (s) |" in md
    mae = summary.loc["dummy", "mae_mean"]
    assert f"| dummy | {mae:.3f} | " in md and "±" not in md  # one split: no spread
    assert result.to_markdown() in md
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["n_samples"] == 40 and info["n_folds"] == 1


def test_prediction_ids_follow_the_one_id_rule(sample40):
    X, y = sample40
    structures = [s.copy() for s in X]  # copies: sample_series caches its structures
    split = (np.arange(30), np.arange(30, 40))

    def ids(inputs):
        result = run_benchmark({"d": DummyRegressor()}, inputs, y, cv=split, verbose=0)
        return list(result.predictions["id"])

    assert ids(X) == list(X.index[30:])  # a Series: its index
    for i, s in enumerate(structures):
        s.properties["id"] = f"mp-{i}"
    assert ids(structures) == [f"mp-{i}" for i in range(30, 40)]  # every structure's id
    del structures[0].properties["id"]
    assert ids(structures) == list(range(30, 40))  # not all: positions, never a mix
    assert ids(np.zeros((40, 3))) == list(range(30, 40))  # a feature array: positions


def test_kfold_gives_every_model_the_same_folds(sample40):
    X, y = sample40
    models = {"dummy": DummyRegressor(), "median": DummyRegressor(strategy="median")}
    result = run_benchmark(models, list(X), y, cv=4, random_state=7, verbose=0)
    preds = result.predictions
    expected = np.empty(40, dtype=int)
    for k, (_, test) in enumerate(KFold(4, shuffle=True, random_state=7).split(y)):
        expected[test] = k
    for name in models:
        part = preds[preds["model"] == name].sort_values("index")
        np.testing.assert_array_equal(part["index"], np.arange(40))
        np.testing.assert_array_equal(part["fold"], expected)
    folds = result.folds
    assert list(folds["n_test"]) == [10] * 8
    dummy = folds[folds["model"] == "dummy"]
    assert result.summary.loc["dummy", "mae_mean"] == pytest.approx(dummy["mae"].mean())
    assert result.summary.loc["dummy", "mae_std"] == pytest.approx(np.std(dummy["mae"]))
    assert list(result.summary.index) == ["dummy", "median"]


def test_splitters_and_lists_of_splits(sample40):
    X, y = sample40
    splitter = ShuffleSplit(n_splits=3, test_size=8, random_state=0)
    result = run_benchmark({"d": DummyRegressor()}, X, y, cv=splitter, verbose=0)
    assert len(result.folds) == 3
    splits = list(splitter.split(np.zeros(40)))
    result2 = run_benchmark({"d": DummyRegressor()}, X, y, cv=splits, verbose=0)
    np.testing.assert_allclose(result.folds["mae"], result2.folds["mae"])


def test_bad_input_is_reported(sample40):
    X, y = sample40
    with pytest.raises(TypeError, match="non-empty dict"):
        run_benchmark([DummyRegressor()], X, y)
    with pytest.raises(TypeError, match="model 'x' is a str"):
        run_benchmark({"x": "dummy"}, X, y)
    with pytest.raises(ValueError, match="single-target"):
        run_benchmark({"d": DummyRegressor()}, X, np.c_[y, y])
    y_nan = y.copy()
    y_nan[5] = np.nan
    with pytest.raises(ValueError, match=rf"structure 5 \({X.index[5]}\)"):
        run_benchmark({"d": DummyRegressor()}, X, y_nan)
    with pytest.raises(ValueError, match="at least 2 folds"):
        run_benchmark({"d": DummyRegressor()}, X, y, cv=1)
    with pytest.raises(ValueError, match="outside 0..39"):
        run_benchmark({"d": DummyRegressor()}, X, y, cv=(np.arange(30), np.arange(30, 41)))
    with pytest.raises(ValueError, match="same file name"):
        run_benchmark({"a b": DummyRegressor(), "a/b": DummyRegressor()}, X, y)


def test_dropped_predictions_are_an_error(sample40):
    X, y = sample40
    with pytest.raises(ValueError, match=r"shape \(9,\) for 10 test structures in fold 0"):
        run_benchmark({"drops": DropsOne()}, X, y, cv=(np.arange(30), np.arange(30, 40)),
                      verbose=0)


def test_error_score_keeps_the_other_models(sample40, tmp_path):
    X, y = sample40
    with pytest.raises(RuntimeError, match="cannot fit"):
        run_benchmark({"fails": Fails()}, X, y, cv=2, verbose=0)
    result = run_benchmark({"fails": Fails(), "d": DummyRegressor()}, X, y, cv=2,
                           error_score=np.nan, output_dir=tmp_path, verbose=0)
    assert np.isnan(result.summary.loc["fails", "mae_mean"])
    assert np.isfinite(result.summary.loc["d", "mae_mean"])
    assert set(result.predictions["model"]) == {"d"}
    assert "| fails | n/a |" in result.to_markdown()
    assert (tmp_path / "parity_d.png").exists() and not (tmp_path / "parity_fails.png").exists()


def test_make_models_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown model name\(s\) \['rf'\]"):
        make_models(["rf", "dummy"])
    with pytest.raises(ValueError, match="repeat"):
        make_models(["dummy", "dummy"])
    models = make_models(["magpie-rf", "dummy"], n_jobs=2, random_state=4)
    assert list(models) == ["magpie-rf", "dummy"]
    assert models["magpie-rf"].get_params()["model__random_state"] == 4


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skcgcnn")
    add_benchmark_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_command_runs_baselines_on_a_subset(tmp_path, capsys):
    if not (SAMPLE / "id_prop.csv").exists():
        pytest.skip(f"data not found: {SAMPLE}")
    out = tmp_path / "bench"
    args = _parse([
        "benchmark", str(SAMPLE), "--models", "magpie-rf,dummy", "--cv", "3", "--limit",
        "30", "--output-dir", str(out), "--n-jobs", "1", "--quiet",
    ])
    assert args.func is run_benchmark_command
    assert run_benchmark_command(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| model | MAE | RMSE | R² | fit (s) | predict (s) |")
    assert "| magpie-rf |" in printed and "30 structures, 3 folds" in printed
    preds = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    table = pd.read_csv(SAMPLE / "id_prop.csv", header=None, dtype={0: str})
    chosen = np.sort(np.random.default_rng(0).choice(len(table), 30, replace=False))
    assert sorted(preds.loc[preds["model"] == "dummy", "id"]) == sorted(table[0][chosen])
    assert (out / "mae_bar.png").exists()


def test_command_test_size_is_one_seeded_split(tmp_path, capsys):
    if not (SAMPLE / "id_prop.csv").exists():
        pytest.skip(f"data not found: {SAMPLE}")
    from skcgcnn.model_selection import holdout_split

    out = tmp_path / "bench"
    args = _parse(["benchmark", str(SAMPLE), "--models", "dummy", "--test-size", "0.25",
                   "--limit", "40", "--random-state", "3", "--output-dir", str(out), "-q"])
    assert run_benchmark_command(args) == 0
    assert "40 structures, one split, 0.25 test" in capsys.readouterr().out
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 1
    preds = pd.read_csv(out / "predictions.csv")
    (train, test), = holdout_split(n_samples=40, validation_fraction=0.25,
                                   random_state=3)[0]
    assert len(preds) == len(test) == 10
    assert sorted(preds["index"]) == sorted(test.tolist())
    for bad in ("0", "1.5"):
        assert run_benchmark_command(_parse(["benchmark", str(SAMPLE), "--test-size",
                                             bad])) == 2
        assert f"--test-size {float(bad)}: give a share of the rows in (0, 1)" in \
            capsys.readouterr().err


def test_make_models_trains_cgcnn_with_the_default_recipe():
    pytest.importorskip("torch")
    from skcgcnn.estimators import DEFAULT_RECIPE

    params = make_models(["cgcnn"])["cgcnn"].named_steps["cgcnn"].get_params()
    assert {key: params[key] for key in DEFAULT_RECIPE} == DEFAULT_RECIPE
    with pytest.raises(ValueError, match="epochs=0: use a positive integer"):
        make_models(["cgcnn"], epochs=0)


def test_command_reports_bad_arguments(tmp_path, capsys):
    assert run_benchmark_command(_parse(["benchmark"])) == 2
    assert "give a DATA_DIR" in capsys.readouterr().err
    assert run_benchmark_command(_parse(["benchmark", str(tmp_path / "nope")])) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert run_benchmark_command(_parse(["benchmark", str(tmp_path), "--models", "rf"])) == 2
    assert "unknown model name(s) ['rf']" in capsys.readouterr().err


def test_cgcnn_pipeline_is_benchmarked_like_the_others(sample40):
    pytest.importorskip("torch")
    X, y = sample40
    models = make_models(["cgcnn", "dummy"], epochs=2, batch_size=16, random_state=0)
    cgcnn = models["cgcnn"]
    assert [name for name, _ in cgcnn.steps] == ["graph", "cgcnn"]
    assert cgcnn.get_params()["cgcnn__max_epochs"] == 2
    assert cgcnn.get_params()["cgcnn__batch_size"] == 16
    train, test = np.arange(30), np.arange(30, 40)
    result = run_benchmark(models, X, y, cv=(train, test), verbose=0)
    pred = clone(cgcnn).fit(X.iloc[train], y[train]).predict(X.iloc[test])
    assert result.summary.loc["cgcnn", "mae_mean"] == pytest.approx(
        mean_absolute_error(y[test], pred), rel=1e-6)

    # Graphs built once for all rows give the same model as building them per fold.
    graphs = clone(cgcnn.named_steps["graph"]).fit_transform(X)
    bare = run_benchmark({"bare": clone(cgcnn.named_steps["cgcnn"])}, graphs, y,
                         cv=(train, test), verbose=0)
    assert bare.summary.loc["bare", "mae_mean"] == pytest.approx(
        result.summary.loc["cgcnn", "mae_mean"], rel=1e-6)
    np.testing.assert_array_equal(bare.predictions["id"].astype(str), X.index[test].astype(str))
