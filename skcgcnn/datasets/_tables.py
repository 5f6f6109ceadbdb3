"""Tables of structures: CSV / JSON (optionally gzipped) of CIF text or structure dicts."""
from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ._cache import (
    CacheOption,
    PathLike,
    _cache_folder,
    _file_stamp,
    _parsed_frame,
    _StructureCache,
)
from ._codec import _Entry, _structure_entry
from ._errors import _check_missing_target, _check_on_error, _report
from ._targets import _is_numeric_column, _object_array, _parse_targets, _select, _Table

logger = logging.getLogger(__name__)


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_json_table(path: Path) -> pd.DataFrame:
    with _open_text(path) as handle:
        data = json.load(handle)
    if isinstance(data, list):
        if not all(isinstance(row, Mapping) for row in data):
            raise ValueError(
                f"{path} is a JSON list but not a list of objects (one object per row)"
            )
        return pd.DataFrame.from_records(data)
    if isinstance(data, Mapping):
        if {"columns", "data"} <= set(data):  # pandas / matminer orient="split"
            return pd.DataFrame(data["data"], index=data.get("index"), columns=data["columns"])
        columns = {}
        for key, value in data.items():
            if isinstance(value, Mapping):  # orient="columns": {column: {index: value}}
                columns[key] = pd.Series(
                    _object_array(list(value.values())), index=list(value.keys())
                )
            elif isinstance(value, list):  # {column: [values]}
                columns[key] = pd.Series(_object_array(value))
            else:
                raise ValueError(
                    f"{path}: column {key!r} is neither a list nor an object of values"
                )
        return pd.DataFrame(columns)
    raise ValueError(
        f"{path} holds a JSON {type(data).__name__}; expected a table (list of rows or columns)"
    )


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    if base.endswith(".json"):
        return _read_json_table(path)
    raise ValueError(f"{path}: unknown table format; use .csv, .csv.gz, .json or .json.gz")


def _frame_from_table(
    raw: pd.DataFrame,
    *,
    what: str,
    source_key: str | None,
    source_stamp: tuple[int, int] | None,
    structure_column: str,
    id_column: str | None,
    target_columns: Sequence[str] | None,
    ids: Iterable[Any] | None,
    limit: int | None,
    missing_target: str,
    n_jobs: int | None,
    on_error: str,
    cache: CacheOption,
    verbose: int,
) -> pd.DataFrame:
    if structure_column not in raw.columns:
        raise ValueError(
            f"{what} has no column {structure_column!r} (columns: {list(map(str, raw.columns))}); "
            "pass structure_column=<the column holding CIF text or structure dicts>"
        )
    if id_column is None:
        for candidate in ("material_id", "id"):
            if candidate in raw.columns:
                id_column = candidate
                break
    if id_column is not None:
        if id_column not in raw.columns:
            raise ValueError(
                f"{what} has no id column {id_column!r} (columns: {list(map(str, raw.columns))})"
            )
        id_values = [str(v) for v in raw[id_column].tolist()]
    elif not isinstance(raw.index, pd.RangeIndex):
        id_values = [str(v) for v in raw.index.tolist()]
    else:
        id_values = [str(i) for i in range(len(raw))]
    others = [c for c in raw.columns if c not in (structure_column, id_column)]
    if target_columns is None:
        names = [c for c in others if _is_numeric_column(raw[c].tolist())]
        dropped = [c for c in others if c not in names]
        if dropped:
            logger.info("%s: non-numeric columns %s are not targets", what, dropped)
    else:
        names = list(target_columns) if not isinstance(target_columns, str) else [target_columns]
        absent = [c for c in names if c not in raw.columns]
        if absent:
            raise ValueError(
                f"{what} has no target column(s) {absent} (columns: {list(map(str, raw.columns))})"
            )
        if structure_column in names or (id_column is not None and id_column in names):
            raise ValueError("target_columns must not include the structure or id column")
    if "structure" in names and structure_column != "structure":
        raise ValueError(f"{what}: a target column may not be called 'structure'; rename it")

    struct_values = raw[structure_column].tolist()
    target_values = [raw[c].tolist() for c in names]
    rows = list(range(len(raw)))
    rows = _select(rows, lambda r: id_values[r], ids, limit, what)

    table = _Table(names=[str(n) for n in names], total=len(rows))
    first_row: dict[str, int] = {}
    entries: list[_Entry] = []
    for r in rows:
        ident = id_values[r]
        if ident in first_row:
            table.errors.append(
                (
                    ident,
                    f"duplicate id (rows {first_row[ident]} and {r} of {what}); the first is kept",
                )
            )
            continue
        first_row[ident] = r
        parsed, reason = _parse_targets(
            ident, [col[r] for col in target_values], table.names, missing_target, f" (row {r})"
        )
        if reason:
            table.errors.append((ident, reason))
            continue
        entry = _structure_entry(ident, struct_values[r])
        if entry is None:
            table.errors.append((ident, f"no structure in column {structure_column!r} (row {r})"))
            continue
        entry.stamp = source_stamp or (0, 0)
        entries.append(entry)
        table.ids.append(ident)
        table.targets.append(parsed)
    _report(table.errors, on_error, what, table.total)

    store = _StructureCache(
        _cache_folder(cache, "structures") if source_key else None, source_key or "", source_stamp
    )
    return _parsed_frame(
        entries, store, table, table.errors, on_error=on_error, what=what, n_jobs=n_jobs,
        verbose=verbose, desc="parsing structures",
    )


def load_cif_table(
    path: PathLike,
    structure_column: str = "cif",
    id_column: str | None = None,
    target_columns: Sequence[str] | str | None = None,
    *,
    ids: Iterable[Any] | None = None,
    limit: int | None = None,
    missing_target: Literal["error", "nan"] = "error",
    n_jobs: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    cache: CacheOption = True,
    verbose: int = 0,
) -> pd.DataFrame:
    """Load a table of structures: CSV / CSV.gz / JSON / JSON.gz of CIF text or structure dicts.

    Parameters
    ----------
    path : str or path
        ``.csv``, ``.csv.gz`` (with a header row), ``.json`` or ``.json.gz``. JSON may be a
        list of row objects, pandas' ``orient="split"`` (``{"index", "columns", "data"}``,
        the matminer / matbench format) or columns (``{column: {index: value}}`` or
        ``{column: [values]}``).
    structure_column : str, default="cif"
        Column holding each structure: CIF text, a pymatgen ``Structure.as_dict()`` (a JSON
        object, or its JSON text in a CSV cell).
    id_column : str, optional
        Column of ids. By default ``material_id`` or ``id`` if present, else the JSON
        index if it is not ``0..n-1``, else the row number.
    target_columns : sequence of str, optional
        Target columns. By default every other column whose values are all numbers (or
        missing); other columns are left out.
    ids, limit, missing_target, n_jobs, on_error, cache, verbose
        As in :func:`load_cgcnn_folder`.

    Returns
    -------
    pandas.DataFrame
        Indexed by id (str, index name ``"id"``), in table order, with a ``structure``
        column and one float column per target; ``df.attrs["errors"]`` lists skipped
        entries.

    Examples
    --------
    >>> df = load_cif_table("structures.json.gz", structure_column="structure",
    ...                     id_column="material_id",
    ...                     target_columns=["formation_energy_per_atom"])  # doctest: +SKIP
    """
    _check_on_error(on_error)
    _check_missing_target(missing_target)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    raw = _read_table(path)
    key = f"table:{path.resolve()}:{structure_column}:{id_column}"
    return _frame_from_table(
        raw,
        what=str(path),
        source_key=key,
        source_stamp=_file_stamp(path),
        structure_column=structure_column,
        id_column=id_column,
        target_columns=target_columns,
        ids=ids,
        limit=limit,
        missing_target=missing_target,
        n_jobs=n_jobs,
        on_error=on_error,
        cache=cache,
        verbose=verbose,
    )
