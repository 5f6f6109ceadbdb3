"""Plots of ``skcgcnn train``: learning curve, parity plot, ROC curve."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ._data import LABELS


def plot_learning_curve(history: Any, score_name: str, best_epoch: int | None,
                         path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = history[:, "epoch"]
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_score = fig.subplots(1, 2)
    losses = {"train": history[:, "train_loss"], "validation": history[:, "valid_loss"]}
    for name, values in losses.items():
        ax_loss.plot(epochs, values, marker=".", label=name)
    kind = "NLL" if score_name != "valid_mae" else "MSE of standardised targets"
    ax_loss.set(xlabel="epoch", ylabel=f"loss ({kind})", title="loss")
    if all(v > 0 for values in losses.values() for v in values):
        ax_loss.set_yscale("log")
    ax_loss.legend()
    scores = [row.get(score_name, float("nan")) for row in history]
    label = f"validation {LABELS[score_name]}"
    ax_score.plot(epochs, scores, marker=".", color="C2")
    best = "" if best_epoch is None else \
        f" (best {scores[best_epoch - 1]:.4g}, epoch {best_epoch})"
    ax_score.set(xlabel="epoch", ylabel=label, title=label + best)
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)


def plot_parity(y: Any, pred: Any, metrics: dict, path: Path, target: str) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(y, pred, s=12, alpha=0.7, edgecolors="none")
    both = np.concatenate([np.asarray(y, float), np.asarray(pred, float)])
    low, high = float(np.min(both)), float(np.max(both))
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.4", linewidth=1)
    ax.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), aspect="equal",
           xlabel=f"{target} (true)", ylabel=f"{target} (predicted)",
           title=f"test set ({len(y)} crystals)")
    r2 = metrics.get("r2")
    text = f"MAE {metrics['mae']:.4g}\nRMSE {metrics['rmse']:.4g}" + (
        f"\nR² {r2:.3f}" if r2 is not None else "")
    ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top")
    fig.savefig(path, dpi=120)


def plot_roc(y_positive: Any, score: Any, auc: float | None, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    fpr, tpr, _ = roc_curve(y_positive, score)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}" if auc is not None else None)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"test set ROC ({len(score)} crystals)", aspect="equal")
    if auc is not None:
        ax.legend(loc="lower right")
    fig.savefig(path, dpi=120)

