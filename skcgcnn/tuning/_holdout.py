"""A fixed train/val/test split: the study on train and val, both models once on test.

With ``tune(split=...)`` (``skcgcnn tune --split FILE``) the study's trials train on
the train rows and are scored on the val rows; the test rows take no part in the
search.  At the end the best configuration is refitted on the train rows (the val rows
having chosen it) and scored on the test rows beside the package's default estimator,
``CGCNNRegressor()``, fitted for the same epochs on the same train rows: the test MAE
of both, on the same crystals, is what tuning gained.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._baselines import default_cgcnn, default_graphs
from ._progress import plural, seconds, write_line

#: The parts of a split, as ``skcgcnn train`` writes them in split.csv.
PARTS = ("train", "val", "test")
#: The fewest rows each part needs.
_NEED = {"train": 2, "val": 1, "test": 1}


def fixed_split(split: Mapping[str, Any], n: int) -> tuple[dict[str, np.ndarray], str]:
    """The parts of ``split`` as sorted position arrays, and the text naming them.

    The text goes into the study's attributes (so a resumed study must have the same
    split): the size of each part and a hash of the positions.

    Raises
    ------
    ValueError
        Naming the part: not a mapping of exactly train, val and test, positions that are
        not integers in ``[0, n)``, a position in two parts or twice in one, a part with
        fewer rows than it needs (train 2, val and test 1).
    """
    if not isinstance(split, Mapping) or sorted(split) != sorted(PARTS):
        got = sorted(split) if isinstance(split, Mapping) else type(split).__name__
        raise ValueError(f"split={got!r}: give a mapping with the keys 'train', 'val' and "
                         "'test' (positions of the structures in each part)")
    parts: dict[str, np.ndarray] = {}
    owner: dict[int, str] = {}
    for part in PARTS:
        rows = np.asarray(split[part])
        if rows.size == 0:
            rows = rows.astype(np.intp)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"split[{part!r}] must be a 1-D array of integer positions, "
                             f"got {rows.dtype} of shape {rows.shape}")
        outside = rows[(rows < 0) | (rows >= n)]
        if outside.size:
            raise ValueError(f"split[{part!r}] has positions {outside[:5].tolist()} outside "
                             f"0..{n - 1} ({n} structures)")
        if len(rows) < _NEED[part]:
            raise ValueError(f"split[{part!r}] holds {len(rows)} rows; it needs at least "
                             f"{_NEED[part]}")
        for i in rows.tolist():
            if i in owner:
                where = "twice" if owner[i] == part else f"in {owner[i]!r} and {part!r}"
                raise ValueError(f"structure {i} is {where}; each belongs to one part")
            owner[i] = part
        parts[part] = np.sort(rows.astype(np.intp))
    text = ";".join(f"{p}:" + ",".join(map(str, parts[p].tolist())) for p in PARTS)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    desc = (f"split train={len(parts['train'])} val={len(parts['val'])} "
            f"test={len(parts['test'])} sha1={digest}")
    return parts, desc


def write_split(path: str | os.PathLike, ids: Any, parts: Mapping[str, np.ndarray]) -> Path:
    """``id,split`` rows, as the split.csv of ``skcgcnn train`` (``--split`` reads it)."""
    import pandas as pd

    ids = np.asarray(list(ids), dtype=object)
    rows = [(str(ident), part) for part in PARTS for ident in ids[parts[part]]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["id", "split"]).to_csv(path, index=False)
    return path


def _rows(positions: np.ndarray, kept: np.ndarray, n: int) -> np.ndarray:
    """Rows of a graph collection holding ``kept`` for the given positions."""
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    rows = row_of[positions]
    return rows[rows >= 0]


def fit_default(items: list, y: np.ndarray, parts: Mapping[str, np.ndarray], cache: Any,
                max_epochs: int, random_state: int | None, device: str,
                n_jobs: int | None, verbose: int) -> tuple[Any, float]:
    """``CGCNNRegressor()`` fitted for ``max_epochs`` on the train rows (default graphs),
    and its validation MAE: the ``"cgcnn"`` baseline of the study's split as well."""
    from sklearn.metrics import mean_absolute_error

    start = time.perf_counter()
    graphs, kept = default_graphs(items, cache, n_jobs)
    train, val = (_rows(parts[p], kept, len(y)) for p in ("train", "val"))
    write_line(f"default CGCNNRegressor(): fitting on {len(train)} train rows, "
               f"{plural(int(max_epochs), 'epoch')} ...", verbose)
    model = default_cgcnn(max_epochs, random_state, device)
    model.fit(graphs[train], y[kept][train])
    mae = float(mean_absolute_error(y[kept][val], model.predict(graphs[val])))
    write_line(f"default CGCNNRegressor(): valid MAE {mae:.4f}, "
               f"{seconds(time.perf_counter() - start)}", verbose)
    return model, mae


def score_on_test(tuned: Any, tuned_graphs: tuple, default: Any, items: list, y: np.ndarray,
                  test: np.ndarray, cache: Any, n_jobs: int | None, trial: int,
                  verbose: int) -> dict:
    """Test MAE of the tuned estimator and the default one on the same test rows (those
    that became graphs for both).

    ``tuned_graphs``: ``(graphs, kept)`` of the best configuration's graph settings.
    """
    from sklearn.metrics import mean_absolute_error

    graphs, kept = tuned_graphs
    d_graphs, d_kept = default_graphs(items, cache, n_jobs)
    common = np.intersect1d(np.intersect1d(test, kept), d_kept)
    tuned_mae = float(mean_absolute_error(
        y[common], tuned.predict(graphs[_rows(common, kept, len(y))])))
    default_mae = float(mean_absolute_error(
        y[common], default.predict(d_graphs[_rows(common, d_kept, len(y))])))
    write_line(f"test MAE on {len(common)} rows the study never saw: tuned (trial {trial}) "
               f"{tuned_mae:.4f}, default CGCNNRegressor() {default_mae:.4f}", verbose)
    return {"n_test": int(len(common)), "tuned_trial": int(trial),
            "tuned_test_mae": tuned_mae, "default_test_mae": default_mae}
