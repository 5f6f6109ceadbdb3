"""Paths of the shared reference data (read in place, never copied) and small helpers."""
from __future__ import annotations

import csv
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

# $SKCGCNN_SHARED_DATA moves the data elsewhere (benchmarks/gpu_suite.sh sets it)
DATA = Path(os.environ.get("SKCGCNN_SHARED_DATA")
            or Path(__file__).resolve().parents[1].parent / "shared" / "data")
REFERENCE = DATA / "cgcnn-reference"
MP = DATA / "mp-formation-energy-36737"
SAMPLE500 = MP / "sample-500"
SAMPLE_REGRESSION = REFERENCE / "sample-regression"
SAMPLE_CLASSIFICATION = REFERENCE / "sample-classification"
PRETRAINED = REFERENCE / "pre-trained"
EXPECTED = REFERENCE / "expected-predictions"



def _missing_reason(paths: tuple[Path, ...]) -> str | None:
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return None
    return (f"shared data not found: {missing[0]} (set $SKCGCNN_SHARED_DATA to the folder "
            "that holds it)")


def needs(*paths: Path) -> pytest.MarkDecorator:
    """A skip mark for tests that read ``paths`` of the shared data; the reason names the
    first one missing.  Every test module finds the data through this module."""
    reason = _missing_reason(paths)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_unless(*paths: Path) -> None:
    """Inside a test or fixture: skip it unless every one of ``paths`` exists."""
    reason = _missing_reason(paths)
    if reason is not None:
        pytest.skip(reason)


needs_shared = needs(SAMPLE500, REFERENCE)


def read_id_prop(path: Path) -> list[tuple[str, float]]:
    with open(path, newline="") as fh:
        return [(row[0].strip(), float(row[1])) for row in csv.reader(fh) if row]


@lru_cache(maxsize=None)
def load_structures(folder: str, limit: int | None = None):
    """Structures and targets of a CGCNN folder, in id_prop.csv order (cached per session)."""
    from pymatgen.core import Structure

    rows = read_id_prop(Path(folder) / "id_prop.csv")[:limit]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_file(str(Path(folder) / f"{i}.cif")) for i, _ in rows]
    return [i for i, _ in rows], structures, [t for _, t in rows]


def sample_series(limit: int):
    """The first ``limit`` crystals of sample-500 as (Series of Structures indexed by the
    integer id, targets); skips the test when the shared data is absent."""
    import pandas as pd

    if not (SAMPLE500 / "id_prop.csv").exists():
        pytest.skip(f"data not found: {SAMPLE500}")
    ids, structures, targets = load_structures(str(SAMPLE500), limit)
    return (pd.Series(list(structures), index=np.array([int(i) for i in ids])),
            np.asarray(targets, dtype=np.float64))
