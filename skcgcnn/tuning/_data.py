"""The data of a tuning study from a CGCNN folder: a seeded subset, one target."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def load_tuning_data(data_dir: str | os.PathLike, *, id_prop: str = "id_prop.csv",
                     target: str | None = None, limit: int | None = None,
                     ids: Any = None, random_state: int | None = 0, n_jobs: int | None = None,
                     cache: Any = True, on_error: str = "skip", verbose: int = 0
                     ) -> tuple[pd.Series, np.ndarray, str]:
    """Structures (a Series indexed by id), targets and the target's name from a CGCNN folder.

    ``limit`` picks ``sorted(default_rng(random_state).choice(n_rows, limit,
    replace=False))`` of the id_prop rows (the rule of ``skcgcnn benchmark --limit``),
    so only those CIFs are read; ``ids`` reads only those (e.g. the crystals of a split
    file), in their order.  ``cache`` and ``on_error`` (``"skip"``: leave unreadable
    structures out, logged; ``"raise"``: stop at the first) are
    :func:`~skcgcnn.datasets.load_cgcnn_folder`'s.
    """
    from ..datasets import load_cgcnn_folder, structures_and_target, subset_ids

    root = Path(data_dir)
    if ids is not None and limit is not None:
        raise ValueError("give ids or limit, not both")
    if limit is not None:
        prop = Path(id_prop) if Path(id_prop).is_absolute() else (
            (root.parent if root.is_file() else root) / id_prop)
        ids = subset_ids(prop, limit, random_state)
    df = load_cgcnn_folder(root, id_prop=id_prop, ids=ids, n_jobs=n_jobs, on_error=on_error,
                           cache=cache, verbose=verbose)
    return structures_and_target(df, target)
