"""What a ``skcgcnn train`` run leaves: test-set scores, the output folder, the summary.

:func:`evaluate_test` predicts the test set and scores it (a regression whose
predictions are not finite stops the run; a variance head's std is kept too),
:func:`write_outputs` writes ``model.pt``, ``test_results.csv`` (with the std last, for
a variance head), ``history.json``, ``metrics.json`` (with :func:`std_metrics`) and the
plots, and
:func:`summary` gives the lines printed at the end.  The metrics, ``metrics.json`` and
the plots are :mod:`skcgcnn.reporting`'s, the same as the benchmark's and the search's.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import CLIError
from ._data import write_results

__all__ = ["TrainRun", "evaluate_test", "std_metrics", "summary", "write_outputs"]

_GRAPH_KEYS = ("radius", "max_num_nbr", "dmin", "step", "atom_features")


@dataclass
class TrainRun:
    """A fitted ``skcgcnn train`` run: what its outputs are made of.

    Attributes
    ----------
    args : argparse.Namespace
        The command's options (those of the resumed run with ``--resume``).
    transformer : StructureGraphTransformer
        Fitted; saved with the estimator as one pipeline.
    est : CGCNNRegressor or CGCNNClassifier
        Fitted, with the weights of the best validation epoch when there was one.
    graphs : GraphCollection
        Every crystal of the run (train, validation and test).
    y : ndarray of shape (n_crystals,)
        Their target values.
    split : dict of str to ndarray
        Positions in ``graphs`` of the ``"train"``, ``"val"`` and ``"test"`` sets.
    target, source : str
        The target's name and where the data came from.
    score : str
        The validation score's name in the history (``"valid_mae"``, ...).
    best_epoch : int or None
        The epoch whose weights are kept; None when the score was never defined.
    best_score : float or None
        The validation score of that epoch.
    fit_seconds : float
        Wall time of ``fit``.
    done : int or None
        Epochs trained before ``--resume``; None for a new run.
    stopped_early : bool
        Whether ``--early-stopping`` ended training before ``--epochs``.
    world_size : int
        Processes that trained the model together (``torchrun --nproc-per-node``); 1
        for one.
    test_std : ndarray of shape (n_test,) or None
        The predicted std of the test predictions, in the target's units, for a model
        with a variance head (``--loss gaussian_nll``); set by :func:`evaluate_test`.
    test_std_metrics : dict or None
        :func:`std_metrics` of that std on the test set (``metrics.json``'s
        ``test_std``); set by :func:`evaluate_test`.
    """

    args: argparse.Namespace
    transformer: Any
    est: Any
    graphs: Any
    y: Any
    split: dict
    target: str
    source: str
    score: str
    best_epoch: int | None
    best_score: float | None
    fit_seconds: float
    done: int | None = None
    stopped_early: bool = False
    world_size: int = 1
    test_std: Any = None
    test_std_metrics: dict | None = None

    @property
    def classification(self) -> bool:
        return self.args.task == "classification"


def evaluate_test(run: TrainRun) -> tuple[Any, dict]:
    """Predictions shown for the test set (regression: values; binary classification: the
    probability of the second class; else labels) and the test metrics."""
    import numpy as np

    from .. import reporting

    test = run.split["test"]
    test_graphs, y_test = run.graphs[test], run.y[test]
    est = run.est
    if run.classification:
        proba = est.predict_proba(test_graphs)
        labels = est.classes_[proba.argmax(axis=1)]
        classes = est.classes_
        shown = proba[:, 1] if len(classes) == 2 else labels
        return shown, reporting.classification_metrics(y_test, labels, proba, classes)
    if est._has_variance_head():
        shown, std = (np.asarray(a, dtype=float) for a in est.predict(test_graphs,
                                                                       return_std=True))
    else:
        shown, std = np.asarray(est.predict(test_graphs), dtype=float), None
    bad = ~np.isfinite(shown) if std is None else ~(np.isfinite(shown) & np.isfinite(std))
    if bad.any():
        raise CLIError(f"training diverged: {int(bad.sum())} of {len(shown)} test "
                       "predictions (or their std) are not finite; lower --lr")
    run.test_std = std
    run.test_std_metrics = None if std is None else std_metrics(y_test, shown, std)
    return shown, reporting.regression_metrics(y_test, shown)


def std_metrics(y_true: Any, y_pred: Any, std: Any) -> dict:
    """How well a predicted std ranks and covers the errors of ``y_pred``.

    ``std_error_spearman``: Spearman's rank correlation of the std and the absolute
    error (None when either is constant); ``coverage_90``: the share of crystals within
    ``y_pred +- 1.645 std``, 0.90 for a calibrated Gaussian; ``mean_std``.
    """
    import numpy as np
    from scipy.stats import spearmanr

    error = np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))
    std = np.asarray(std, float)
    if len(std) == 0:  # no test set
        return {"std_error_spearman": None, "coverage_90": None, "mean_std": None}
    constant = np.ptp(std) == 0 or np.ptp(error) == 0
    rho = None if constant else float(spearmanr(std, error).statistic)
    return {"std_error_spearman": rho,
            "coverage_90": float(np.mean(error <= 1.645 * std)),
            "mean_std": float(np.mean(std))}


def _metrics_record(run: TrainRun, test_metrics: dict) -> dict:
    """The content of ``metrics.json``."""
    args, est, history = run.args, run.est, run.est.history
    graph_params = {**run.transformer.get_params(deep=False),
                    "atom_features": getattr(run.graphs.atom_features, "name", None)}
    metrics = {
        "task": args.task, "target": run.target,
        "target_label": args.target_label or run.target, "source": run.source,
        "n_train": len(run.split["train"]), "n_val": len(run.split["val"]),
        "n_test": len(run.split["test"]),
        "epochs": args.epochs, "epochs_trained": len(history),
        "stopped_early": run.stopped_early,
        "resumed_after_epoch": run.done,
        "best_epoch": run.best_epoch,
        "valid": {run.score.removeprefix("valid_"): run.best_score},
        "test": test_metrics,
        "split_file": args.split,
        "seed": args.seed, "fit_seconds": round(run.fit_seconds, 3),
        "world_size": run.world_size,
        "graph_params": {k: v for k, v in graph_params.items() if k in _GRAPH_KEYS},
        "network": {"atom_fea_len": args.atom_fea_len, "h_fea_len": args.h_fea_len,
                    "n_conv": args.n_conv, "n_h": args.n_h, "conv": args.conv},
        "optimizer": {"name": args.optim, "lr": args.lr,
                      "momentum": (est.get_params().get("optimizer__momentum")
                                   if args.optim == "SGD" else None),
                      "weight_decay": args.weight_decay, "batch_size": args.batch_size,
                      "lr_milestones": (list(args.lr_milestones)
                                        if args.lr_schedule == "multistep" else None),
                      "recipe": args.recipe, "lr_schedule": args.lr_schedule,
                      "warmup_fraction": (args.warmup_fraction
                                          if args.lr_schedule in ("onecycle", "cosine")
                                          else None),
                      "loss": None if run.classification else args.loss,
                      "early_stopping": args.early_stopping,
                      "n_iter_no_change": (args.n_iter_no_change if args.early_stopping
                                           else None)},
    }
    if run.classification:
        metrics["classes"] = est.classes_.tolist()
    else:
        metrics["optimizer"]["nll_beta"] = getattr(args, "nll_beta", None)
    if run.test_std is not None:
        metrics["test_std"] = run.test_std_metrics
    return metrics


def write_outputs(run: TrainRun, out_dir: Path, shown: Any, test_metrics: dict) -> list[str]:
    """Write the run's files into ``out_dir``; return their names (``split.csv`` and
    ``skipped.csv``, written when the run started, included)."""
    import numpy as np
    from sklearn.pipeline import Pipeline

    from .. import reporting
    from ..estimators import save_model

    args, est, history = run.args, run.est, run.est.history
    test = run.split["test"]
    y_test = run.y[test]
    label = args.target_label or run.target  # the name (and unit) on the plots
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    card = {"target_names": [run.target], "training_data": run.source,
            "test_metrics": test_metrics, "n_test": len(test)}
    if args.target_label:
        card["target_label"] = args.target_label
    save_model(Pipeline([("graph", run.transformer), ("cgcnn", est)]), out_dir / "model.pt",
               card=card)
    written.append("model.pt")
    ids = np.asarray(run.graphs.ids, dtype=object)
    columns = shown if run.test_std is None else np.column_stack([shown, run.test_std])
    write_results(out_dir / "test_results.csv", ids[test], y_test, columns)
    written.append("test_results.csv")
    written.append("split.csv")  # at the start
    if args.graphs is None and args.skip_errors:
        written.append("skipped.csv")
    history.to_file(str(out_dir / "history.json"))
    written.append("history.json")
    reporting.write_json(out_dir / "metrics.json", _metrics_record(run, test_metrics))
    written.append("metrics.json")
    reporting.plot_learning_curve(history, run.score, run.best_epoch,
                                  out_dir / "learning_curve.png",
                                  f"CGCNN {args.task}: {label}", loss=est)
    written.append("learning_curve.png")
    if not run.classification:
        reporting.plot_parity({"test": (y_test, shown)}, out_dir / "parity.png",
                              target=label, title=f"test set ({len(y_test)} crystals)",
                              text=reporting.metrics_text(test_metrics), size=(4.6, 4.4),
                              point_size=12)
        written.append("parity.png")
    elif len(est.classes_) == 2 and test_metrics.get("roc_auc") is not None:
        reporting.plot_roc(y_test == est.classes_[1], shown, out_dir / "roc_curve.png")
        written.append("roc_curve.png")
    return written


def summary(run: TrainRun, test_metrics: dict, written: list[str], out_dir: Path,
            started: float) -> list[str]:
    """The lines ``skcgcnn train`` prints at the end (``started``: its perf_counter)."""
    from .. import reporting

    name_of = reporting.METRIC_LABELS
    n_epochs, done = len(run.est.history), run.done
    best = ("no best epoch" if run.best_epoch is None
            else f"best epoch {run.best_epoch} (validation {name_of[run.score]} "
                 f"{run.best_score:.4g})")
    if done is None:
        epochs = f"{n_epochs} epochs"
    elif n_epochs > done:
        epochs = f"epochs {done + 1}-{n_epochs} (resumed after epoch {done})"
    else:
        epochs = f"no epoch left to train ({done} trained before)"
    n_train, n_val, n_test = (len(run.split[k]) for k in ("train", "val", "test"))
    lines = []
    m = run.test_std_metrics
    if m is not None and m["mean_std"] is not None:
        rho = "n/a" if m["std_error_spearman"] is None else f"{m['std_error_spearman']:.3f}"
        lines.append(f"test std: mean {m['mean_std']:.4g}, Spearman with |error| {rho}, "
                     f"{m['coverage_90']:.0%} within 1.645 std (0.90 if calibrated)")
    return [f"trained on {n_train} crystals ({n_val} validation, {n_test} test), "
            f"{epochs} in {run.fit_seconds:.1f} s; {best}",
            "test " + ", ".join(f"{name_of[k]} {v:.4g}" for k, v in test_metrics.items()
                                if v is not None),
            *lines,
            f"wrote {', '.join(written)} to {out_dir} "
            f"({time.perf_counter() - started:.1f} s in all)"]
