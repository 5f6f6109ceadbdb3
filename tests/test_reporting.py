"""Tests for skcgcnn.reporting: metrics, tables, run records and plots of every runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.metrics import (accuracy_score, f1_score, mean_absolute_error, r2_score,
                             roc_auc_score, root_mean_squared_error)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skcgcnn import reporting

PNG = b"\x89PNG\r\n\x1a\n"


# -- metrics --------------------------------------------------------------------------
def test_regression_metrics_are_sklearns():
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=30), rng.normal(size=30)
    m = reporting.regression_metrics(y, pred)
    assert m == {"mae": pytest.approx(mean_absolute_error(y, pred), rel=1e-15),
                 "rmse": pytest.approx(root_mean_squared_error(y, pred), rel=1e-15),
                 "r2": pytest.approx(r2_score(y, pred), rel=1e-15)}
    assert all(type(v) is float for v in m.values())
    one = reporting.regression_metrics([1.0], [1.5])
    assert one == {"mae": 0.5, "rmse": 0.5, "r2": None}


def test_classification_metrics():
    y = np.array([0, 0, 1, 1, 1, 0])
    proba1 = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    proba = np.c_[1 - proba1, proba1]
    labels = (proba1 > 0.5).astype(int)
    m = reporting.classification_metrics(y, labels, proba, np.array([0, 1]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, labels))
    assert m["f1"] == pytest.approx(f1_score(y, labels))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba1))
    assert set(m) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    # one class in y: ROC-AUC undefined
    m = reporting.classification_metrics(np.ones(3), np.ones(3), np.c_[np.zeros(3), np.ones(3)],
                                         [0, 1])
    assert m["roc_auc"] is None and m["accuracy"] == 1.0
    # three classes: accuracy only
    m = reporting.classification_metrics([0, 1, 2], [0, 1, 1], np.eye(3), [0, 1, 2])
    assert m == {"accuracy": pytest.approx(2 / 3)}


# -- tables ---------------------------------------------------------------------------
def test_summarize_and_markdown():
    rows = pd.DataFrame({"model": ["b", "a", "b", "a"], "mae": [1.0, 2.0, 3.0, np.nan],
                         "fit_s": [0.5, 0.25, 0.5, 0.25]})
    summary = reporting.summarize(rows, ["mae", "fit_s"], order=["a", "b", "c"])
    assert list(summary.index) == ["a", "b", "c"] and summary.index.name == "model"
    assert summary.loc["b", "mae_mean"] == 2.0 and summary.loc["b", "mae_std"] == 1.0
    assert np.isnan(summary.loc["a", "mae_mean"])  # a NaN fold makes the mean NaN
    assert summary.loc["c", "n_folds"] == 0 and np.isnan(summary.loc["c", "fit_s_mean"])
    assert list(reporting.summarize(rows, ["mae"]).index) == ["b", "a"]

    md = reporting.summary_markdown(summary, ["mae", "fit_s"], digits={"fit_s": 2})
    assert md.splitlines() == [
        "| model | MAE | fit (s) |",
        "|---|---|---|",
        "| a | n/a | 0.25 ± 0.00 |",
        "| b | 2.000 ± 1.000 | 0.50 ± 0.00 |",
        "| c | n/a | n/a |",
    ]
    table = pd.DataFrame({"number": [3, 1], "valid_mae": [0.123456, np.nan],
                          "conv": ["gated", None]})
    assert reporting.markdown_table(table).splitlines() == [
        "| number | valid_mae | conv |", "|---|---|---|", "| 3 | 0.1235 | gated |",
        "| 1 |  |  |"]


# -- run records ----------------------------------------------------------------------
def test_jsonable_and_write_json(tmp_path):
    record = {"a": np.float32(0.5), "b": (np.int64(3), np.nan), "c": np.arange(3),
              "d": {"e": float("inf"), "f": "x"}, "path": tmp_path}
    assert reporting.jsonable(record) == {"a": 0.5, "b": [3, None], "c": [0, 1, 2],
                                          "d": {"e": None, "f": "x"}, "path": tmp_path}
    path = reporting.write_json(tmp_path / "run.json", record)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == {"a": 0.5, "b": [3, None], "c": [0, 1, 2],
                                "d": {"e": None, "f": "x"}, "path": str(tmp_path)}


def test_describe_model_and_versions():
    import sklearn

    pipe = Pipeline([("scale", StandardScaler()), ("model", DummyRegressor(constant=[1.0]))])
    desc = reporting.describe_model(pipe)
    assert desc["class"] == "Pipeline"
    assert desc["steps"] == ["scale: StandardScaler", "model: DummyRegressor"]
    assert desc["params"]["model__strategy"] == "mean"
    assert desc["params"]["model__constant"] == [1.0]
    assert "steps" not in desc["params"] and "scale" not in desc["params"]
    assert reporting.describe_model(object()) == {"class": "object", "params": {}}
    versions = reporting.package_versions(("scikit-learn", "no-such-package-skcgcnn"))
    assert versions == {"scikit-learn": sklearn.__version__, "no-such-package-skcgcnn": None}


# -- plots ----------------------------------------------------------------------------
def _is_png(path: Path) -> bool:
    return Path(path).read_bytes()[:8] == PNG


def test_parity_limits_and_text():
    assert reporting.parity_limits([0.0, 1.0], [2.0]) == pytest.approx((-0.06, 2.06))
    assert reporting.parity_limits([1.0], [1.0]) == pytest.approx((0.97, 1.03))
    assert reporting.metrics_text({"mae": 0.12345, "rmse": 0.2, "r2": None}) == \
        "MAE 0.1235\nRMSE 0.2"


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=20)
    one = reporting.plot_parity({"test": (y, y + 0.1)}, tmp_path / "parity.png",
                                target="E (eV)", text="MAE 0.1")
    two = reporting.plot_parity({"a": (y, y), "b": (y, -y)}, tmp_path / "overlay.png",
                                lims=(-3, 3), colors=["C3", "C4"])
    positive = y > 0
    roc = reporting.plot_roc(positive, y + rng.normal(size=20), tmp_path / "roc.png")
    bars = reporting.plot_bars({"a": 0.3, "failed": np.nan, "c": 0.1}, tmp_path / "bar.png",
                               errors={"a": 0.05, "c": np.nan})
    hbars = reporting.plot_bars({"tuned": 0.2, "dummy": 0.5}, tmp_path / "hbar.png",
                                horizontal=True, colors=["tab:blue", "tab:gray"], digits=4)
    for path in (one, two, roc, bars, hbars):
        assert path.parent == tmp_path and _is_png(path)


def test_learning_curve_from_a_skorch_history(tmp_path):
    skorch = pytest.importorskip("skorch")
    history = skorch.history.History()
    for epoch, (train, valid, mae) in enumerate([(1.0, 0.9, 0.5), (0.5, 0.6, 0.3),
                                                 (0.25, 0.7, 0.4)], start=1):
        history.new_epoch()
        history.record("epoch", epoch)
        history.record("train_loss", train)
        history.record("valid_loss", valid)
        history.record("valid_mae", mae)
    path = reporting.plot_learning_curve(history, "valid_mae", 2, tmp_path / "lc.png",
                                         "CGCNN regression: E")
    assert _is_png(path)
    assert _is_png(reporting.plot_learning_curve(history, "valid_mae", None,
                                                 tmp_path / "lc2.png", "no best"))


def _loss_axis_label(monkeypatch, tmp_path, score_name="valid_mae", **kwargs) -> str:
    """The loss panel's y label of the learning curve that ``kwargs`` draw."""
    skorch = pytest.importorskip("skorch")
    history = skorch.history.History()
    for epoch in (1, 2):
        history.new_epoch()
        for key, value in (("epoch", epoch), ("train_loss", 1.0 / epoch),
                           ("valid_loss", 1.1 / epoch), (score_name, 0.5)):
            history.record(key, value)
    saved = []
    monkeypatch.setattr(reporting, "save_figure", lambda fig, path: saved.append(fig) or path)
    reporting.plot_learning_curve(history, score_name, 2, tmp_path / "lc.png", "t", **kwargs)
    return saved[0].axes[0].get_ylabel()


@pytest.mark.parametrize("loss, label", [
    ("absolute_error", "L1 loss (standardised targets)"),
    ("squared_error", "MSE (standardised targets)"),
    ("huber", "Huber loss (standardised targets)"),
    ("gaussian_nll", "Gaussian NLL (standardised targets)"),
])
def test_learning_curve_names_the_loss_that_was_trained(monkeypatch, tmp_path, loss, label):
    assert _loss_axis_label(monkeypatch, tmp_path, loss=loss) == label


def test_learning_curve_takes_the_loss_from_the_estimator(monkeypatch, tmp_path):
    import torch

    from skcgcnn import CGCNNClassifier, CGCNNRegressor

    def label(est, score_name="valid_mae"):
        return _loss_axis_label(monkeypatch, tmp_path, score_name, loss=est)

    assert label(CGCNNRegressor()) == "L1 loss (standardised targets)"  # the default
    assert label(CGCNNRegressor(loss="squared_error")) == "MSE (standardised targets)"
    # estimators made when MSELoss was the criterion's default: it stands for loss
    assert label(CGCNNRegressor(loss="huber", criterion=torch.nn.MSELoss)) == \
        "Huber loss (standardised targets)"
    assert label(CGCNNRegressor(loss="squared_error", criterion=torch.nn.SmoothL1Loss)) == \
        "SmoothL1Loss (standardised targets)"
    assert label(CGCNNClassifier(), "valid_acc") == "NLL (cross-entropy)"


def test_learning_curve_without_the_loss_names_none(monkeypatch, tmp_path):
    # the history alone does not say which loss a regressor trained
    assert _loss_axis_label(monkeypatch, tmp_path) == "loss (standardised targets)"
    assert _loss_axis_label(monkeypatch, tmp_path, "valid_acc") == "NLL (cross-entropy)"
    with pytest.raises(ValueError, match="loss='l1'.*absolute_error"):
        _loss_axis_label(monkeypatch, tmp_path, loss="l1")


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    assert plt.fignum_exists(fig.number)
    path = reporting.save_figure(fig, tmp_path / "f.png", tight=True)
    assert _is_png(path) and not plt.fignum_exists(fig.number)
