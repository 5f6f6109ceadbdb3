"""The one check of targets every entry point makes: no NaN or infinite value.

``CGCNNRegressor.fit``, ``CGCNNClassifier.fit``, :func:`skcgcnn.benchmark.run_benchmark`
and :func:`skcgcnn.tuning.tune` call it, so a bad target is named the same way
everywhere: its rows and their ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .structures import describe

__all__ = ["check_finite_targets"]


def check_finite_targets(y: np.ndarray, ids: Sequence[Any]) -> None:
    """Raise a ValueError naming the rows of ``y`` (one per crystal, any further axes
    being targets) that hold a NaN or infinite value, and their ``ids``.

    Non-numeric ``y`` (class labels as strings) passes: it cannot be NaN.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"y has {rows.size} row(s) with NaN or infinite targets (the first "
            f"{describe(int(rows[0]), ids[rows[0]])}; rows {rows[:5].tolist()}, ids "
            f"{[str(ids[r]) for r in rows[:5]]}); drop them before fitting")
