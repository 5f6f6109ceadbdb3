"""What every experiment runner reports, written once: metrics, tables, plots, run records.

``skcgcnn.benchmark``, ``skcgcnn.tuning`` and ``skcgcnn train`` score with
:func:`regression_metrics` / :func:`classification_metrics`, write markdown with
:func:`markdown_table` / :func:`summary_markdown`, draw with :func:`plot_parity`,
:func:`plot_learning_curve`, :func:`plot_roc` and :func:`plot_bars`, and record a run
with :func:`write_json` (through :func:`jsonable`), :func:`describe_model` and
:func:`package_versions`.

Plots are :class:`matplotlib.figure.Figure` objects, not pyplot figures: no global state
and no display are needed, and nothing is left open.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._records import (RECORD_PACKAGES, describe_model, jsonable,  # noqa: F401
                       package_versions, write_json)

__all__ = [
    "METRIC_LABELS",
    "classification_metrics",
    "describe_model",
    "jsonable",
    "markdown_table",
    "package_versions",
    "plot_bars",
    "plot_learning_curve",
    "plot_parity",
    "plot_roc",
    "regression_metrics",
    "save_figure",
    "summarize",
    "summary_markdown",
    "write_json",
]

#: How tables and plots name the metrics (and skorch's validation scores).
METRIC_LABELS = {
    "mae": "MAE", "rmse": "RMSE", "r2": "R²", "accuracy": "accuracy",
    "precision": "precision", "recall": "recall", "f1": "F1", "roc_auc": "ROC-AUC",
    "valid_mae": "MAE", "valid_auc": "ROC-AUC", "valid_acc": "accuracy",
    "fit_s": "fit (s)", "predict_s": "predict (s)",
}

#: The learning curve's name for each ``CGCNNRegressor(loss=...)``; the regressors train
#: on standardised targets, which the label says too.
_LOSS_LABELS = {"absolute_error": "L1 loss", "squared_error": "MSE",
                "huber": "Huber loss", "gaussian_nll": "Gaussian NLL"}


# -- metrics --------------------------------------------------------------------------
def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float | None]:
    """MAE, RMSE and R² (:mod:`sklearn.metrics`); R² is None for fewer than 2 samples.

    Returns
    -------
    dict with keys ``"mae"``, ``"rmse"``, ``"r2"``
    """
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    return {"mae": float(mean_absolute_error(y_true, y_pred)),
            "rmse": float(root_mean_squared_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred)) if len(y_true) >= 2 else None}


def classification_metrics(y_true: Any, labels: Any, proba: Any, classes: Any
                           ) -> dict[str, float | None]:
    """Accuracy; for two classes also precision, recall, F1 and ROC-AUC of ``classes[1]``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
    labels : array-like of shape (n,)
        Predicted classes.
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities, columns in the order of ``classes``.
    classes : sequence
        The classes; ``classes[1]`` is the positive one of a binary task.

    Returns
    -------
    dict
        ``accuracy``; with two classes ``precision``, ``recall``, ``f1`` and ``roc_auc``
        (None when ``y_true`` holds one class only).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true)
    out: dict[str, float | None] = {"accuracy": float(accuracy_score(y_true, labels))}
    if len(classes) == 2:
        positive = classes[1]
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true == positive, np.asarray(labels) == positive, average="binary",
            zero_division=0)
        out.update(precision=float(precision), recall=float(recall), f1=float(f1))
        both = len(np.unique(y_true == positive)) == 2
        out["roc_auc"] = float(roc_auc_score(y_true == positive, proba[:, 1])) if both else None
    return out


# -- tables ---------------------------------------------------------------------------
def summarize(rows: pd.DataFrame, metrics: Sequence[str], *, by: str = "model",
              order: Sequence[Any] | None = None) -> pd.DataFrame:
    """Mean and standard deviation (``ddof=0``) of every metric per group.

    Parameters
    ----------
    rows : DataFrame
        One row per fold (or run), with a ``by`` column and the ``metrics`` columns.
    metrics : sequence of str
    by : str, default="model"
    order : sequence, default=None
        Groups in the order of the result (default: as they first occur); a group
        without rows gets NaN.

    Returns
    -------
    DataFrame
        Indexed by ``by``: ``n_folds`` and ``<metric>_mean`` / ``<metric>_std``.
    """
    order = list(dict.fromkeys(rows[by])) if order is None else list(order)
    records = []
    for name in order:
        part = rows[rows[by] == name]
        rec: dict[str, Any] = {by: name, "n_folds": len(part)}
        for m in metrics:
            values = part[m].to_numpy(dtype=float)
            rec[f"{m}_mean"] = float(np.mean(values)) if len(values) else float("nan")
            rec[f"{m}_std"] = float(np.std(values)) if len(values) else float("nan")
        records.append(rec)
    return pd.DataFrame(records).set_index(by)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame's columns as a markdown table (floats ``.4g``, missing values empty).

    Hand-written rather than :meth:`pandas.DataFrame.to_markdown`: that needs the
    optional ``tabulate`` package and pads the cells, and the tables in run outputs are
    read (and tested) line by line.
    """
    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def unit_of(label: str) -> str | None:
    """The unit of a target label: the text in its last parentheses, when the label ends
    with them (``"E_form (eV/atom)"`` -> ``"eV/atom"``,
    ``"log10(G_VRH) (log10(GPa))"`` -> ``"log10(GPa)"``); else None."""
    text = label.rstrip()
    if not text.endswith(")"):
        return None
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            # "log10(G_VRH)" alone is a name, not a name and a unit
            if i == 0 or text[i - 1] != " ":
                return None
            return text[i + 1:-1].strip() or None
    return None


def summary_markdown(summary: pd.DataFrame, metrics: Sequence[str], *,
                     digits: Mapping[str, int] | None = None, default_digits: int = 3,
                     units: Mapping[str, str | None] | None = None,
                     spread: bool = True) -> str:
    """A :func:`summarize` table in markdown, ``mean ± std`` per metric, ``n/a`` for NaN.

    Parameters
    ----------
    summary : DataFrame
        From :func:`summarize`; its index is the first column.
    metrics : sequence of str
        Columns, named by :data:`METRIC_LABELS`.
    digits : mapping of str -> int, default=None
        Decimals per metric (``default_digits`` for the others).
    units : mapping of str -> str, default=None
        Unit per metric, shown in its header as ``MAE (eV/atom)``.
    spread : bool, default=True
        Show ``± std``; False for the results of a single split (the mean alone).
    """
    digits = dict(digits or {})
    units = dict(units or {})

    def fmt(mean: float, std: float, d: int) -> str:
        if not np.isfinite(mean):
            return "n/a"
        return f"{mean:.{d}f} ± {std:.{d}f}" if spread else f"{mean:.{d}f}"

    cells = pd.DataFrame({summary.index.name or "": summary.index.astype(str)})
    for m in metrics:
        d = digits.get(m, default_digits)
        header = METRIC_LABELS.get(m, m)
        if units.get(m):
            header = f"{header} ({units[m]})"
        cells[header] = [
            fmt(a, b, d) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    return markdown_table(cells)


# -- plots ----------------------------------------------------------------------------
def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120, tight: bool = False) -> Path:
    """Save ``fig`` as PNG; close it too when pyplot made it (e.g. Optuna's plots)."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def parity_limits(*values: Any, pad: float = 0.03) -> tuple[float, float]:
    """Axis limits that hold every value, padded by ``pad`` of the range."""
    both = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    lo, hi = float(np.min(both)), float(np.max(both))
    margin = pad * (hi - lo or 1.0)
    return lo - margin, hi + margin


def metrics_text(metrics: Mapping[str, float | None]) -> str:
    """``"MAE 0.1\\nRMSE 0.2\\nR² 0.9"`` for the corner of a parity plot (None skipped)."""
    return "\n".join(f"{METRIC_LABELS.get(k, k)} {v:.3f}" if k == "r2" else
                     f"{METRIC_LABELS.get(k, k)} {v:.4g}"
                     for k, v in metrics.items() if v is not None)


def plot_parity(series: Mapping[str, tuple[Any, Any]], path: str | Path, *,
                target: str = "target", title: str = "", lims: tuple[float, float] | None = None,
                text: str | None = None, colors: Sequence[str] | None = None,
                size: tuple[float, float] = (5, 5), point_size: float = 6) -> Path:
    """Predicted against true values, one scatter per entry of ``series``.

    True values on x and predictions on y, as in the CGCNN paper and Matbench
    (scikit-learn's ``PredictionErrorDisplay(kind="actual_vs_predicted")`` puts them
    the other way round, and subsamples to 1,000 points), with the diagonal dashed.

    Parameters
    ----------
    series : mapping of str -> (y_true, y_pred)
        Label -> values; with two or more entries the labels make a legend.
    path : str or Path
        The PNG file.
    target : str, default="target"
        Name (and unit) of the target on the axes.
    title : str, default=""
    lims : (float, float), default=None
        Limits of both axes (default: :func:`parity_limits` of the values); give the
        same to plots that should be compared.
    text : str, default=None
        Written in the upper left corner, e.g. :func:`metrics_text`.
    colors : sequence of str, default=None
        One per entry (default: matplotlib's ``C0``, ``C1``, ...).
    """
    if lims is None:
        lims = parity_limits(*(v for pair in series.values() for v in pair))
    fig = _figure(size)
    ax = fig.add_subplot()
    ax.plot(lims, lims, color="0.4", lw=1, ls="--", zorder=0)
    for i, (label, (y_true, y_pred)) in enumerate(series.items()):
        color = colors[i] if colors is not None else f"C{i % 10}"
        ax.scatter(y_true, y_pred, s=point_size, alpha=0.5, color=color, linewidths=0,
                   label=label)
    ax.set(xlim=lims, ylim=lims, aspect="equal", xlabel=f"true {target}",
           ylabel=f"predicted {target}", title=title)
    if len(series) > 1:
        ax.legend(loc="upper left", markerscale=3, frameon=False)
    if text:
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top")
    return save_figure(fig, path)


def _loss_label(loss: Any, score_name: str) -> str:
    """The y-axis label of the loss panel (see :func:`plot_learning_curve`)."""
    classification = "NLL (cross-entropy)"
    if loss is None:  # the score tells a regression from a classification, not the loss
        return "loss (standardised targets)" if score_name == "valid_mae" else classification
    if not isinstance(loss, str):  # an estimator
        from sklearn.base import is_classifier

        if is_classifier(loss):
            return classification
        criterion = getattr(loss, "criterion", None)
        if getattr(criterion, "__name__", "MSELoss") != "MSELoss":  # a criterion of its own
            return f"{criterion.__name__} (standardised targets)"
        loss = loss.loss
    if loss not in _LOSS_LABELS:
        raise ValueError(f"plot_learning_curve(loss={loss!r}): use one of "
                         f"{list(_LOSS_LABELS)}, an estimator or None")
    return f"{_LOSS_LABELS[loss]} (standardised targets)"


def plot_learning_curve(history: Any, score_name: str, best_epoch: int | None,
                        path: str | Path, title: str, *, loss: Any = None) -> Path:
    """Training and validation loss, and the validation score, per epoch.

    Parameters
    ----------
    history : skorch History
        With ``epoch``, ``train_loss``, ``valid_loss`` and ``score_name`` per epoch.
    score_name : str
        The validation score's column, e.g. ``"valid_mae"``.
    best_epoch : int or None
        Marked by a dashed line (1-based, as skorch counts).
    loss : str, estimator or None, default=None
        What was trained, for the loss axis's label: a ``CGCNNRegressor`` ``loss``
        (``"absolute_error"``, the default: "L1 loss (standardised targets)";
        ``"squared_error"``: "MSE ..."; ``"huber"``: "Huber loss ..."; ``"gaussian_nll"``:
        "Gaussian NLL ..."), or the fitted estimator itself (its ``loss``, or its own
        ``criterion``; a classifier's is the negative log-likelihood).  None: a
        regression's (``score_name="valid_mae"``) is labelled "loss (standardised
        targets)" without naming it, any other "NLL (cross-entropy)".
    """
    from matplotlib.ticker import MaxNLocator

    loss_label = _loss_label(loss, score_name)  # a bad loss fails before any drawing
    epochs = history[:, "epoch"]
    fig = _figure((8, 3.4))
    ax_loss, ax_score = fig.subplots(1, 2)
    losses = {"train": history[:, "train_loss"], "validation": history[:, "valid_loss"]}
    for name, values in losses.items():
        ax_loss.plot(epochs, values, marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="loss")
    if all(v > 0 for values in losses.values() for v in values):
        ax_loss.set_yscale("log")
    ax_loss.legend()
    scores = [row.get(score_name, float("nan")) for row in history]
    label = f"validation {METRIC_LABELS.get(score_name, score_name)}"
    ax_score.plot(epochs, scores, marker=".", color="C2")
    # the best on a line of its own: on one line a long label ran past the figure's edge
    best = "" if best_epoch is None else \
        f"\n(best {scores[best_epoch - 1]:.4g}, epoch {best_epoch})"
    ax_score.set(xlabel="epoch", ylabel=label, title=label + best)
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_roc(y_positive: Any, score: Any, path: str | Path, *, name: str = "test set",
             title: str | None = None) -> Path:
    """ROC curve of a binary classifier (:class:`sklearn.metrics.RocCurveDisplay`) with
    its AUC in the legend and the chance level dashed.

    Parameters
    ----------
    y_positive : array-like of bool
        Whether each sample is of the positive class.
    score : array-like of float
        Probability (or score) of the positive class.
    name : str, default="test set"
        The curve's name in the legend, before its AUC.
    title : str, default=None
        Default: ``"test set ROC (<n> crystals)"``.
    """
    from sklearn.metrics import RocCurveDisplay

    fig = _figure((4.6, 4.4))
    ax = fig.add_subplot()
    RocCurveDisplay.from_predictions(
        np.asarray(y_positive, dtype=bool), score, ax=ax, name=name, plot_chance_level=True,
        chance_level_kw={"color": "0.6", "linestyle": "--", "linewidth": 1})
    ax.set(xlabel="false positive rate", ylabel="true positive rate", aspect="equal",
           title=title or f"test set ROC ({len(score)} crystals)")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_bars(values: Mapping[str, float], path: str | Path, *,
              errors: Mapping[str, float] | None = None, label: str = "MAE",
              title: str = "", horizontal: bool = False, colors: Sequence[str] | None = None,
              digits: int = 3) -> Path:
    """One bar per entry of ``values``, each labelled with its value.

    Parameters
    ----------
    values : mapping of str -> float
        Name -> value (NaN: an empty slot).
    path : str or Path
        The PNG file.
    errors : mapping of str -> float, default=None
        Error bars (e.g. the standard deviation over folds).
    label : str, default="MAE"
        The value axis.
    horizontal : bool, default=False
        Horizontal bars, the first entry on top (for long names); otherwise vertical
        bars with slanted names.
    colors : sequence of str, default=None
        One per entry (default: matplotlib's ``C0``, ``C1``, ...).
    digits : int, default=3
        Decimals of the value labels.
    """
    names = list(values)
    v = np.array([float(values[n]) for n in names])
    err = None if errors is None else np.array([float(errors.get(n, np.nan)) for n in names])
    colors = list(colors) if colors is not None else [f"C{i % 10}" for i in range(len(names))]
    finite = v[np.isfinite(v)]
    if horizontal:
        fig = _figure((6.4, 0.6 * len(names) + 1.2))
        ax = fig.add_subplot()
        pos = np.arange(len(names))[::-1]  # the first entry on top
        ax.barh(pos, v, xerr=err, capsize=4, color=colors)
        ax.set_yticks(pos, names)
        ax.set(xlabel=label, title=title,
               xlim=(0, finite.max() * 1.25 if finite.size and finite.max() > 0 else 1))
        for p, value in zip(pos, v):
            if np.isfinite(value):
                ax.text(value, p, f" {value:.{digits}f}", va="center")
    else:
        fig = _figure((1.2 + 1.1 * len(names), 4))
        ax = fig.add_subplot()
        pos = np.arange(len(names))
        ax.bar(pos, v, yerr=err, capsize=4, color=colors)
        ax.set_xticks(pos, names, rotation=20, ha="right")
        ax.set(ylabel=label, title=title)
        for p, value, sd in zip(pos, v, err if err is not None else np.zeros(len(v))):
            if np.isfinite(value):
                top = value + (sd if np.isfinite(sd) else 0.0)
                ax.annotate(f"{value:.{digits}f}", (p, top), textcoords="offset points",
                            xytext=(0, 3), ha="center", va="bottom", fontsize=8)
    return save_figure(fig, path)
