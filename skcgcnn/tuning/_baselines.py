"""Reference models scored on a study's own split(s), drawn beside its best trial."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._defaults import DMIN, MAX_NUM_NBR, RADIUS, STEP
from ..graph import GraphCache
from ._progress import seconds, write_line

logger = logging.getLogger(__name__)

#: Baseline name of the default CGCNN in :func:`evaluate_baselines`.
DEFAULT_CGCNN = "cgcnn"
#: What the stored ``"cgcnn"`` baseline of a study is: 2, the package's default
#: ``CGCNNRegressor()``.  Studies whose stored value has no such mark were scored with
#: mini-batches of 64 and have it scored again.
_CGCNN_BASELINE_VERSION = 2


def default_cgcnn(max_epochs: int, random_state: int | None, device: str) -> Any:
    """The package's default estimator, ``CGCNNRegressor()`` (its default recipe,
    :data:`~skcgcnn.estimators.DEFAULT_RECIPE`), for ``max_epochs`` and silent."""
    from ..estimators import CGCNNRegressor

    return CGCNNRegressor(max_epochs=int(max_epochs), random_state=random_state,
                          device=device, verbose=0)


def default_graphs(items: Sequence[Any], cache: GraphCache | None,
                   n_jobs: int | None = None) -> tuple[Any, np.ndarray]:
    """The graphs of ``StructureGraphTransformer()`` (radius 8 Å, 12 neighbours, the CGCNN
    atom features) and the positions they hold, from the study's cache where it fits."""
    if cache is None or (cache.dmin, cache.step) != (DMIN, STEP):
        cache = GraphCache(items, n_jobs=n_jobs, on_error=getattr(cache, "on_error", "raise"))
    graphs, kept = cache.get(RADIUS, MAX_NUM_NBR)
    return graphs.with_atom_features("cgcnn"), kept


def evaluate_baselines(structures: Sequence[Any], y: np.ndarray, splits: Sequence,
                       names: Sequence[str], *, max_epochs: int = 30,
                       random_state: int | None = 0, graph_cache: GraphCache | None = None,
                       n_jobs: int | None = None, device: str = "cpu",
                       verbose: int = 0) -> dict[str, float]:
    """Validation MAE of reference models on the study's own split(s).

    Parameters
    ----------
    structures : sequence of Structure
    y : ndarray of shape (n,)
    splits : list of (train, valid) index arrays
    names : sequence of str
        ``"cgcnn"`` (the package's default estimator, ``CGCNNRegressor()`` with its default
        recipe :data:`~skcgcnn.estimators.DEFAULT_RECIPE` and the default graphs: radius
        8 Å, 12 neighbours, the CGCNN atom features; for ``max_epochs``, as ``skcgcnn
        benchmark`` trains it) and names of :data:`skcgcnn.baselines.BASELINES`
        (``"magpie-rf"``, ``"structure-gb"``, ``"dummy"``).
    max_epochs : int, default=30
        Epochs of the default CGCNN (use the study's, for a fair comparison).
    random_state : int or None, default=0
    graph_cache : GraphCache, optional
        Reuses the study's graphs for the default CGCNN.
    verbose : int, default=0
        1: a line on standard error per baseline (its MAE and time); 0: a log line.

    Returns
    -------
    dict of str -> float
        Mean validation MAE over the splits.
    """
    from sklearn.metrics import mean_absolute_error
    from sklearn.model_selection import cross_validate

    y = np.asarray(y, dtype=float)
    items = list(structures)
    splits = list(splits)
    out: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        if name != DEFAULT_CGCNN:
            from ..baselines import make_baseline

            model = make_baseline(name, n_jobs=n_jobs, random_state=random_state)
            scores = cross_validate(model, items, y, cv=splits,
                                    scoring="neg_mean_absolute_error", error_score="raise")
            out[name] = float(np.mean(-scores["test_score"]))
        else:
            # by hand, not cross_validate: the default CGCNN trains on the study's cached
            # graphs, whose rows are the structures that became graphs (``kept``), so the
            # folds' positions are mapped onto those rows first
            graphs, kept = default_graphs(items, graph_cache, n_jobs)
            row_of = np.full(len(y), -1, dtype=np.int64)
            row_of[kept] = np.arange(len(kept))
            maes = []
            for train, valid in splits:
                r_train = row_of[train][row_of[train] >= 0]
                r_valid = row_of[valid][row_of[valid] >= 0]
                est = default_cgcnn(max_epochs, random_state, device)
                est.fit(graphs[r_train], y[kept][r_train])
                maes.append(mean_absolute_error(y[kept][r_valid], est.predict(graphs[r_valid])))
            out[name] = float(np.mean(maes))
        text = f"baseline {name}: valid MAE {out[name]:.4f}, " \
            f"{seconds(time.perf_counter() - start)}"
        if verbose:
            write_line(text, verbose)
        else:
            logger.info("%s", text)
    return out


def read_benchmark_maes(path: str | os.PathLike) -> dict[str, float]:
    """MAEs from a ``skcgcnn benchmark`` ``results.csv`` (columns ``model``, ``mae_mean``)."""
    table = pd.read_csv(path)
    if "model" not in table.columns or "mae_mean" not in table.columns:
        raise ValueError(f"{os.fspath(path)!r} has no 'model' and 'mae_mean' columns; give the "
                         "results.csv written by skcgcnn benchmark")
    return {str(m): float(v) for m, v in zip(table["model"], table["mae_mean"])}


def _baseline_values(baselines: Any, study: Any, items: list, y: np.ndarray, splits: list,
                     max_epochs: int, random_state: int | None, cache: GraphCache,
                     n_jobs: int | None, device: str, verbose: int = 0,
                     known: Mapping[str, float] | None = None) -> dict[str, float]:
    """The baselines' MAE: given, read from a file, stored in the study, ``known``
    (already scored on the study's split), or scored now and stored."""
    if baselines is None:
        return {}
    if isinstance(baselines, Mapping):
        return {str(k): float(v) for k, v in baselines.items()}
    if isinstance(baselines, (str, os.PathLike)) and (
            os.fspath(baselines).endswith(".csv") or Path(baselines).is_file()):
        return read_benchmark_maes(baselines)
    names = [baselines] if isinstance(baselines, str) else list(baselines)
    stored = dict(study.user_attrs.get("baselines", {}))
    if DEFAULT_CGCNN in stored and \
            study.user_attrs.get("cgcnn_baseline") != _CGCNN_BASELINE_VERSION:
        del stored[DEFAULT_CGCNN]  # scored with another recipe (batches of 64) before
    new = {n: float(v) for n, v in (known or {}).items() if n in names and n not in stored}
    wanted = [n for n in names if n not in stored and n not in new]
    if wanted:
        new.update(evaluate_baselines(items, y, splits, wanted, max_epochs=max_epochs,
                                      random_state=random_state, graph_cache=cache,
                                      n_jobs=n_jobs, device=device, verbose=verbose))
    if new:
        stored.update(new)
        study.set_user_attr("baselines", stored)
        if DEFAULT_CGCNN in new:
            study.set_user_attr("cgcnn_baseline", _CGCNN_BASELINE_VERSION)
    return {n: stored[n] for n in names}
