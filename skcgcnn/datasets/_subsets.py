"""Seeded subsets of a data set and the choice of one target.

The rules behind ``skcgcnn benchmark --limit``, ``skcgcnn tune --limit`` and
:func:`skcgcnn.tuning.load_tuning_data`: the ids of an ``id_prop.csv`` (read with the
loader's header rule), a seeded random subset of them, so that only those CIFs are read,
and one numeric target from a loader's frame.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

# the header rule of load_cgcnn_folder, so that the ids here are the loader's ids
from ._cgcnn import _looks_like_header

logger = logging.getLogger(__name__)


def id_prop_ids(path: str | os.PathLike) -> list[str] | None:
    """The ids (first column) of a CGCNN ``id_prop.csv``, in file order, or None if there
    is no such file.  A header row is skipped as :func:`load_cgcnn_folder` skips it."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    if rows and _looks_like_header(rows[0]):
        rows = rows[1:]
    return [row[0].strip() for row in rows]


def sample_rows(n_rows: int, limit: int | None, random_state: int | None
                ) -> np.ndarray | None:
    """Positions of a seeded random subset of ``limit`` rows, in order; None for all rows.

    The rule of ``skcgcnn benchmark --limit`` and ``skcgcnn tune --limit``:
    ``sorted(default_rng(random_state).choice(n_rows, limit, replace=False))``.
    """
    if limit is None or limit >= n_rows:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n_rows, size=limit,
                                                               replace=False))


def subset_ids(id_prop: str | os.PathLike, limit: int | None, random_state: int | None
               ) -> list[str] | None:
    """The ids of the seeded ``--limit`` subset of an ``id_prop.csv``, in file order; None
    for all rows, or when there is no such file (:func:`id_prop_ids`, :func:`sample_rows`).

    Choosing the ids first means that only those CIFs are read.
    """
    all_ids = id_prop_ids(id_prop)
    keep = None if all_ids is None else sample_rows(len(all_ids), limit, random_state)
    return None if keep is None else [all_ids[i] for i in keep]


def structures_and_target(df: pd.DataFrame, target: str | None = None
                          ) -> tuple[pd.Series, np.ndarray, str]:
    """The ``structure`` column, one numeric target and its name, from a loader's frame.

    ``target`` defaults to the first column other than ``structure``; rows whose target
    is missing or not a number are dropped with a warning.
    """
    targets = [c for c in df.columns if c != "structure"]
    if target is not None:
        if target not in targets:
            raise ValueError(f"--target {target!r} is not among the columns {targets}")
    elif targets:
        target = targets[0]
    else:
        raise ValueError("the loaded data has no target column")
    y = pd.to_numeric(df[target], errors="coerce")
    keep_rows = y.notna().to_numpy()
    if not keep_rows.all():
        logger.warning("dropping %d rows whose %r is missing", int((~keep_rows).sum()), target)
    return df["structure"][keep_rows], y[keep_rows].to_numpy(dtype=float), str(target)
