"""Side-by-side benchmarks of regression models on the same folds.

:func:`run_benchmark` fits every model on identical cross-validation folds (or one fixed
train/test split), times fit and predict, and scores the predictions with
:mod:`sklearn.metrics`. With an ``output_dir`` it writes:

======================  =================================================================
``results.md``          the summary table (mean ± std over folds) in markdown
``results.csv``         the same numbers, one row per model
``folds.csv``           one row per model and fold (written after every fold)
``predictions.csv``     every test prediction: model, fold, position, id, y_true, y_pred
``parity_<model>.png``  predicted against true values, one plot per model
``parity_overlay.png``  all models in one parity plot
``mae_bar.png``         MAE per model with its standard deviation over folds
``run.json``            the settings, sizes, wall time and package versions
======================  =================================================================

The ``skcgcnn benchmark`` command (``add_benchmark_parser``,
``run_benchmark_command``) lives in :mod:`skcgcnn.cli.benchmark`, above the library;
importing them from here raises an AttributeError that names their home.
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from . import reporting
from ._targets import check_finite_targets
from ._named_models import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_MODELS,  # noqa: F401
                            MODEL_NAMES, make_models)
from .model_selection import resolve_cv, take_rows
from .structures import ids_of

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkResult", "DEFAULT_MODELS", "MODEL_NAMES", "make_models",
           "run_benchmark"]

_METRICS = ("mae", "rmse", "r2", "fit_s", "predict_s")
_DIGITS = {"fit_s": 2, "predict_s": 2}  # the others: 3


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` measured.

    Attributes
    ----------
    summary : DataFrame
        One row per model (index: model name, in the order given) with ``n_folds`` and
        ``<metric>_mean`` / ``<metric>_std`` for ``mae``, ``rmse``, ``r2``, ``fit_s`` and
        ``predict_s``. The standard deviation is over folds (``ddof=0``).
    folds : DataFrame
        One row per model and fold: ``model, fold, n_train, n_test, mae, rmse, r2, fit_s,
        predict_s`` (metrics NaN where a fit failed and ``error_score`` allowed it).
    predictions : DataFrame
        Every test prediction: ``model, fold, index`` (position in X), ``id``, ``y_true``,
        ``y_pred``.
    n_samples : int
        Number of structures.
    wall_s : float
        Wall time of the whole run in seconds.
    output_dir : Path or None
        Where the files were written.
    target_name : str
        Name of the target used in the table and plots.
    files : list of Path
        The files written under ``output_dir``.
    """

    summary: pd.DataFrame
    folds: pd.DataFrame
    predictions: pd.DataFrame
    n_samples: int
    wall_s: float
    output_dir: Path | None = None
    target_name: str = "target"
    files: list[Path] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The summary as a markdown table (mean ± std over folds, the values alone for
        one split); the MAE and RMSE headers carry the unit of :attr:`target_name`."""
        unit = reporting.unit_of(self.target_name)
        return reporting.summary_markdown(self.summary, _METRICS, digits=_DIGITS,
                                          units={"mae": unit, "rmse": unit},
                                          spread=self.folds["fold"].nunique() > 1)

    def __str__(self) -> str:
        return self.to_markdown()


# -- data helpers ---------------------------------------------------------------------
def _default_ids(X: Any, n: int) -> np.ndarray:
    """Ids by :func:`skcgcnn.structures.ids_of` (Series or DataFrame index,
    GraphCollection ids, ``properties["id"]`` of every structure, else positions).
    X may also be anything else the models take (a feature array): positions."""
    if isinstance(X, (pd.Series, pd.DataFrame)):  # also a feature table
        return np.asarray(X.index)
    try:
        ids = ids_of(X)
    except (TypeError, ValueError):  # not structures: a 2-D feature array, say
        return np.arange(n)
    if ids == list(range(n)):
        return np.arange(n)
    out = np.empty(len(ids), dtype=object)
    out[:] = ids
    return out


def _check_target(y: Any, ids: np.ndarray, n: int) -> np.ndarray:
    y_arr = np.asarray(y, dtype=float)
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        y_arr = y_arr[:, 0]
    if y_arr.ndim != 1:
        raise ValueError(
            f"y has shape {y_arr.shape}; run_benchmark compares single-target regressors: "
            "pass one target column"
        )
    if len(y_arr) != n:
        raise ValueError(f"X has {n} structures but y has {len(y_arr)} values")
    check_finite_targets(y_arr, ids)
    return y_arr


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _check_models(models: Any) -> dict[str, Any]:
    if not isinstance(models, dict) or not models:
        raise TypeError(
            "models must be a non-empty dict of name -> scikit-learn estimator, "
            "e.g. {'dummy': make_baseline('dummy')}"
        )
    seen: dict[str, str] = {}
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"model names must be non-empty strings, got {name!r}")
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise TypeError(
                f"model {name!r} is a {type(model).__name__}, not an estimator with fit and "
                "predict; build it with make_models([...]) or skcgcnn.baselines.make_baseline"
            )
        safe = _safe_name(name)
        if safe in seen:
            raise ValueError(
                f"model names {seen[safe]!r} and {name!r} give the same file name {safe!r}; "
                "rename one"
            )
        seen[safe] = name
    return dict(models)


# -- the run --------------------------------------------------------------------------
def run_benchmark(models: dict[str, Any], X: Any, y: Any, *, cv: Any = 5,
                  output_dir: str | Path | None = None, random_state: int | None = 0,
                  ids: Any = None, target_name: str = "target",
                  error_score: str | float = "raise", plots: bool = True,
                  verbose: int = 1) -> BenchmarkResult:
    """Fit and score every model on the same folds.

    Each model is cloned for every fold (:func:`sklearn.base.clone`), fitted on the
    training rows and asked to predict the test rows. Fit time includes everything the
    pipeline does in ``fit`` (featurization, graph building, training); predict time
    likewise.

    Parameters
    ----------
    models : dict of str -> estimator
        Name -> scikit-learn regressor or Pipeline that takes ``X``, e.g. the CGCNN
        pipeline of :func:`skcgcnn.estimators.make_cgcnn_pipeline` and the baselines of
        :func:`skcgcnn.baselines.make_baseline` (see also :func:`make_models`).
    X : list, array or Series of structures (or anything the models take)
        The inputs. Their ids in ``predictions.csv`` follow
        :func:`skcgcnn.structures.ids_of` (a Series' index, ``properties["id"]`` when
        every structure has one, else positions).
    y : array-like of shape (n_samples,)
        One target.
    cv : int, splitter, (train, test) pair or list of pairs, default=5
        An int k means ``KFold(k, shuffle=True, random_state=random_state)``. A scikit-learn
        splitter (``split(X, y)``) is asked for its splits once, so every model sees the same
        ones. A pair of index arrays is one fixed split.
    output_dir : str or Path, default=None
        Where to write the tables and plots (created if missing). None writes nothing.
    random_state : int or None, default=0
        Seed of the folds when ``cv`` is an int. The models' own seeds are theirs.
    ids : array-like, default=None
        Ids of the structures for ``predictions.csv``. By default the Series index,
        ``structure.properties["id"]`` or the positions.
    target_name : str, default="target"
        Name of the target (with unit) for the plots, e.g. ``"E_form (eV/atom)"``.
    error_score : "raise" or float, default="raise"
        What a model that fails on a fold gives: the error is raised, or (for a number such
        as ``np.nan``) a warning is logged and its metrics for the fold are that number.
    plots : bool, default=True
        Write the PNG plots (when ``output_dir`` is given).
    verbose : int, default=1
        0: silent; 1: a progress bar over models x folds and one log line per fold.

    Returns
    -------
    result : BenchmarkResult
        ``result.summary`` (the table), ``result.folds``, ``result.predictions``.

    Notes
    -----
    Every fold rebuilds the model's features: the CGCNN pipeline builds the crystal graphs
    of the training and test rows again. To reuse graphs between runs on the same folds,
    give the pipeline a cache, ``make_cgcnn_pipeline(...).set_params(memory="cache_dir")``
    (scikit-learn caches the fitted transformer with joblib), or transform ``X`` once with
    ``StructureGraphTransformer`` and benchmark the bare ``CGCNNRegressor`` on the
    resulting ``GraphCollection``: graph building is per structure and learns nothing from
    the data, so this does not leak the test set.

    Examples
    --------
    >>> from skcgcnn.baselines import make_baseline
    >>> result = run_benchmark(  # doctest: +SKIP
    ...     {"magpie-rf": make_baseline("magpie-rf"), "dummy": make_baseline("dummy")},
    ...     structures, energies, cv=5, output_dir="results/bench")
    >>> print(result.to_markdown())  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    models = _check_models(models)
    if error_score != "raise" and not isinstance(error_score, (int, float)):
        raise ValueError(f"error_score={error_score!r}: use 'raise' or a number such as np.nan")
    n = len(X)
    ids_arr = _default_ids(X, n) if ids is None else np.asarray(ids, dtype=object)
    if len(ids_arr) != n:
        raise ValueError(f"ids has {len(ids_arr)} entries, X has {n}")
    y_arr = _check_target(y, ids_arr, n)
    folds, cv_desc = resolve_cv(cv, y_arr, random_state=random_state)

    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("benchmark of %d models on %d structures, %s", len(models), n, cv_desc)

    # One loop of our own, not sklearn's cross_validate per model: the out-of-fold
    # predictions (predictions.csv, the parity plots) come from the same predict call
    # that is timed and scored (cross_validate returns scores only: a second predict would
    # featurize every test set again); predict time is kept apart from scoring; the runs
    # go fold by fold across the models, with folds.csv rewritten after every fit, so an
    # interrupted long run keeps every model's finished folds; and a model that drops
    # structures gets an error naming the fold (see _run_one).
    fold_rows: list[dict[str, Any]] = []
    pred_frames: list[pd.DataFrame] = []
    with tqdm(total=len(models) * len(folds), desc="benchmark", unit="fit",
              disable=verbose < 1) as bar:
        for k, (train, test) in enumerate(folds):
            X_train, X_test = take_rows(X, train), take_rows(X, test)
            y_train, y_test = y_arr[train], y_arr[test]
            for name, model in models.items():
                bar.set_postfix_str(f"{name}, fold {k + 1}/{len(folds)}")
                row, pred = _run_one(name, model, k, X_train, y_train, X_test, y_test,
                                     error_score)
                row.update(n_train=len(train), n_test=len(test))
                fold_rows.append(row)
                if pred is not None:
                    pred_frames.append(pd.DataFrame({
                        "model": name, "fold": k, "index": test, "id": ids_arr[test],
                        "y_true": y_test, "y_pred": pred}))
                if verbose:
                    logger.info(
                        "%s fold %d/%d: MAE %.4f, RMSE %.4f, R2 %.4f (fit %.1f s, predict %.1f s)",
                        name, k + 1, len(folds), row["mae"], row["rmse"], row["r2"],
                        row["fit_s"], row["predict_s"])
                if out_dir is not None:
                    _folds_frame(fold_rows).to_csv(out_dir / "folds.csv", index=False)
                bar.update(1)

    folds_df = _folds_frame(fold_rows)
    summary = reporting.summarize(folds_df, _METRICS, order=list(models))
    predictions = (
        pd.concat(pred_frames, ignore_index=True)
        if pred_frames
        else pd.DataFrame(columns=["model", "fold", "index", "id", "y_true", "y_pred"])
    )
    result = BenchmarkResult(summary=summary, folds=folds_df, predictions=predictions,
                             n_samples=n, wall_s=time.perf_counter() - start,
                             output_dir=out_dir, target_name=target_name)
    if out_dir is not None:
        result.files = _write_outputs(result, cv_desc, plots)
        result.wall_s = time.perf_counter() - start
        _write_run_info(result, cv_desc, random_state, models, len(folds))
    return result


def _run_one(name: str, model: Any, k: int, X_train: Any, y_train: np.ndarray, X_test: Any,
             y_test: np.ndarray, error_score: str | float
             ) -> tuple[dict[str, Any], np.ndarray | None]:
    row: dict[str, Any] = {"model": name, "fold": k}
    estimator = clone(model)
    try:
        t0 = time.perf_counter()
        estimator.fit(X_train, y_train)
        row["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = estimator.predict(X_test)
        row["predict_s"] = time.perf_counter() - t0
        pred = np.asarray(pred, dtype=float)
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != y_test.shape:
            raise ValueError(
                f"model {name!r} returned predictions of shape {pred.shape} for "
                f"{len(y_test)} test structures in fold {k}; a step may have dropped "
                "structures (e.g. StructureGraphTransformer(on_error='skip')): use "
                "on_error='raise' or remove the bad structures before benchmarking"
            )
    except Exception:
        if error_score == "raise":
            raise
        logger.warning(
            "model %r failed on fold %d; its metrics are %s:\n%s",
            name, k, error_score, traceback.format_exc(),
        )
        row.update({m: float(error_score) for m in ("mae", "rmse", "r2")})
        row.setdefault("fit_s", float("nan"))
        row.setdefault("predict_s", float("nan"))
        return row, None
    scores = reporting.regression_metrics(y_test, pred)
    row.update({k: float("nan") if v is None else v for k, v in scores.items()})
    return row, pred


def _folds_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["model", "fold", "n_train", "n_test", *_METRICS]
    return pd.DataFrame(rows).reindex(columns=cols)


# -- files ----------------------------------------------------------------------------
def _write_outputs(result: BenchmarkResult, cv_desc: str, plots: bool) -> list[Path]:
    out = Path(result.output_dir)
    files = []
    summary_csv = out / "results.csv"
    result.summary.reset_index().to_csv(summary_csv, index=False)
    md = out / "results.md"
    md.write_text(
        f"# Benchmark: {result.target_name}\n\n"
        f"{result.n_samples} structures, {cv_desc}. " + ("Mean ± standard deviation over "
        "folds; " if result.folds["fold"].nunique() > 1 else "") + "fit and predict times "
        "include featurization / graph building.\n\n"
        f"{result.to_markdown()}\n\n"
        f"Wall time of the run: {result.wall_s:.0f} s.\n",
        encoding="utf-8",
    )
    folds_csv = out / "folds.csv"
    result.folds.to_csv(folds_csv, index=False)
    preds_csv = out / "predictions.csv"
    result.predictions.to_csv(preds_csv, index=False)
    files += [md, summary_csv, folds_csv, preds_csv]
    if plots:
        files += _plot_all(result)
    return files


def _write_run_info(result: BenchmarkResult, cv_desc: str, random_state: int | None,
                    models: dict[str, Any], n_folds: int) -> None:
    info = {
        "n_samples": result.n_samples,
        "n_folds": n_folds,
        "cv": cv_desc,
        "random_state": random_state,
        "target": result.target_name,
        "wall_s": round(result.wall_s, 2),
        "models": {name: reporting.describe_model(model) for name, model in models.items()},
        "versions": reporting.package_versions(),
    }
    result.files.append(reporting.write_json(result.output_dir / "run.json", info))


def _plot_all(result: BenchmarkResult) -> list[Path]:
    """parity_<model>.png (shared limits, so they compare), parity_overlay.png, mae_bar.png."""
    out, preds, summary = result.output_dir, result.predictions, result.summary
    if preds.empty:
        return []
    lims = reporting.parity_limits(preds["y_true"], preds["y_pred"])
    color = {name: f"C{i % 10}" for i, name in enumerate(summary.index)}
    names = [m for m in summary.index if (preds["model"] == m).any()]
    parts = {m: preds[preds["model"] == m] for m in names}
    files = []
    for name in names:
        rec = summary.loc[name]
        files.append(reporting.plot_parity(
            {name: (parts[name]["y_true"], parts[name]["y_pred"])},
            out / f"parity_{_safe_name(name)}.png", target=result.target_name, lims=lims,
            title=f"{name}: MAE {rec['mae_mean']:.3f}, R² {rec['r2_mean']:.3f}",
            colors=[color[name]]))
    files.append(reporting.plot_parity(
        {f"{m} (MAE {summary.loc[m, 'mae_mean']:.3f})": (parts[m]["y_true"], parts[m]["y_pred"])
         for m in names},
        out / "parity_overlay.png", target=result.target_name, lims=lims, title="all models",
        colors=[color[m] for m in names], size=(6, 6), point_size=5))
    files.append(reporting.plot_bars(
        summary["mae_mean"].to_dict(), out / "mae_bar.png",
        errors=summary["mae_std"].to_dict(), label=f"MAE of {result.target_name}",
        title="MAE, mean ± std over folds"))
    return files


# The ``skcgcnn benchmark`` command's two names lived here until issue 27: the library
# does not import the command line (data flow: benchmark -> cli).
_MOVED = {"add_benchmark_parser": "skcgcnn.cli.benchmark",
          "run_benchmark_command": "skcgcnn.cli.benchmark"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"skcgcnn.benchmark.{name} moved to {_MOVED[name]}: import it "
                             f"from there (the library no longer imports the command line)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
