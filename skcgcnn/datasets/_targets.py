"""Target values and the rows they belong to: parsing numbers, selecting ids, and the
loaders' result frame (id index, ``structure`` column, one float column per target)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._text import shorten
from ._errors import _MAX_LISTED


_MISSING_TOKENS = frozenset({"", "none", "nan", "na", "n/a", "null"})


def _parse_number(value: Any) -> float | None:
    """Return the value as float, None when it is missing; ValueError when not a number."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)  # class labels such as matbench's is_metal
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING_TOKENS:
            return None
        if text.lower() in ("true", "false"):
            return float(text.lower() == "true")
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{shorten(value)} is not a number") from None
    raise ValueError(f"{shorten(value)} is not a number")


def _parse_targets(
    ident: str,
    values: Sequence[Any],
    names: Sequence[str],
    missing_target: str,
    where: str,
) -> tuple[list[float] | None, str | None]:
    """Parse one entry's targets; return (values, None) or (None, reason)."""
    out = []
    for name, value in zip(names, values):
        try:
            number = _parse_number(value)
        except ValueError as exc:
            return None, f"target {name!r} {exc}{where}"
        if number is not None and math.isinf(number):
            return None, (
                f"target {name!r} is infinite ({shorten(value)}){where}; fix the value, or "
                "leave the field empty to mark it missing"
            )
        if number is None:
            if missing_target == "error":
                return None, (
                    f"missing target {name!r}{where}; add it, or pass missing_target='nan' "
                    "to keep the entry with NaN"
                )
            number = math.nan
        out.append(number)
    return out, None


def _is_numeric_column(values: Iterable[Any]) -> bool:
    seen = False
    for value in values:
        try:
            number = _parse_number(value)
        except ValueError:
            return False
        seen = seen or number is not None
    return seen


@dataclass
class _Table:
    ids: list[str] = field(default_factory=list)
    targets: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0


def _select(
    records: list[Any], key: Any, ids: Iterable[Any] | None, limit: int | None, what: str
) -> list[Any]:
    if ids is not None:
        wanted = [str(i) for i in ids]
        by_id: dict[str, list[Any]] = {}
        for record in records:
            by_id.setdefault(key(record), []).append(record)
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            shown = ", ".join(unknown[:_MAX_LISTED]) + (
                " ..." if len(unknown) > _MAX_LISTED else ""
            )
            raise ValueError(f"{len(unknown)} requested ids are not in {what}: {shown}")
        records = [r for i in dict.fromkeys(wanted) for r in by_id[i]]
    if limit is not None:
        if int(limit) < 0:
            raise ValueError(f"limit={limit!r} must be a non-negative integer")
        records = records[: int(limit)]
    return records


def _targets_array(table: _Table, keep: Sequence[str]) -> np.ndarray:
    position = {ident: i for i, ident in enumerate(table.ids)}
    out = np.empty((len(keep), len(table.names)), dtype=np.float64)
    for row, ident in enumerate(keep):
        out[row] = table.targets[position[ident]]
    return out


def _object_array(values: Sequence[Any]) -> np.ndarray:
    # Structures are sequences of sites: fill element-wise so numpy does not unpack them.
    arr = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        arr[i] = value
    return arr


def _frame(
    ids: Sequence[str],
    structures: Sequence[Any],
    targets: np.ndarray,
    names: Sequence[str],
    errors: list[tuple[str, str]],
) -> pd.DataFrame:
    df = pd.DataFrame(
        {"structure": _object_array(structures)},
        index=pd.Index(list(ids), name="id", dtype=object),
    )
    for j, name in enumerate(names):
        df[name] = np.asarray(targets[:, j], dtype=np.float64) if len(ids) else np.zeros(0)
    df.attrs["errors"] = list(errors)
    return df
