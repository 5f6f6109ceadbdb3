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

from .._defaults import BENCHMARK_BATCH_SIZE, MAX_NUM_NBR, RADIUS
from ..graph import GraphCache
from ._progress import seconds, write_line

logger = logging.getLogger(__name__)

#: Baseline name of the default CGCNN in :func:`evaluate_baselines`.
DEFAULT_CGCNN = "cgcnn"


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
        ``"cgcnn"`` (CGCNN as ``skcgcnn benchmark`` trains it: the original settings,
        SGD with lr 0.01, radius 8 Å, 12 neighbours, the full CGCNN features, mini-batches
        of :data:`skcgcnn._defaults.BENCHMARK_BATCH_SIZE`, for ``max_epochs``) and names of
        :data:`skcgcnn.baselines.BASELINES` (``"magpie-rf"``, ``"structure-gb"``,
        ``"dummy"``).
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

    from ..estimators import CGCNNRegressor

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
            cache = graph_cache or GraphCache(items, n_jobs=n_jobs)
            graphs, kept = cache.get(RADIUS, MAX_NUM_NBR)
            graphs = graphs.with_atom_features("cgcnn")
            row_of = np.full(len(y), -1, dtype=np.int64)
            row_of[kept] = np.arange(len(kept))
            maes = []
            for train, valid in splits:
                r_train = row_of[train][row_of[train] >= 0]
                r_valid = row_of[valid][row_of[valid] >= 0]
                est = CGCNNRegressor(max_epochs=max_epochs, batch_size=BENCHMARK_BATCH_SIZE,
                                     random_state=random_state, device=device, verbose=0)
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
                     n_jobs: int | None, device: str, verbose: int = 0) -> dict[str, float]:
    if baselines is None:
        return {}
    if isinstance(baselines, Mapping):
        return {str(k): float(v) for k, v in baselines.items()}
    if isinstance(baselines, (str, os.PathLike)) and (
            os.fspath(baselines).endswith(".csv") or Path(baselines).is_file()):
        return read_benchmark_maes(baselines)
    names = [baselines] if isinstance(baselines, str) else list(baselines)
    stored = dict(study.user_attrs.get("baselines", {}))
    wanted = [n for n in names if n not in stored]
    if wanted:
        stored.update(evaluate_baselines(items, y, splits, wanted, max_epochs=max_epochs,
                                         random_state=random_state, graph_cache=cache,
                                         n_jobs=n_jobs, device=device, verbose=verbose))
        study.set_user_attr("baselines", stored)
    return {n: stored[n] for n in names}
