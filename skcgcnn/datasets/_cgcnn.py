"""CGCNN datasets: ``id_prop.csv`` plus one CIF per id, in a folder or a tar archive."""
from __future__ import annotations

import csv
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from ._cache import (
    CacheOption,
    PathLike,
    _cache_folder,
    _file_stamp,
    _parsed_frame,
    _StructureCache,
)
from ._codec import _Entry
from ._errors import DatasetError, _check_missing_target, _check_on_error, _report
from ._targets import _MISSING_TOKENS, _parse_targets, _select, _Table


_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _looks_like_header(row: list[str]) -> bool:
    fields = [f.strip() for f in row[1:]]
    if not fields:
        return False
    for text in fields:
        if text.lower() in _MISSING_TOKENS:
            return False
        try:
            float(text)
            return False
        except ValueError:
            pass
    return True


def _default_names(n: int) -> list[str]:
    return ["target"] if n == 1 else [f"target_{j}" for j in range(n)]


def _column_count(
    path: Path, rows: list[tuple[int, list[str]]], header: list[str] | None
) -> int:
    """The number of columns every row of an id_prop file must have: the header's, else
    the first row's.  A file whose rows differ (a stray comma, a missing column) is refused
    as a whole, naming the first rows that differ: read row by row, each short row would
    look like a crystal with a missing target."""
    expected = len(header) if header else len(rows[0][1])
    basis = "the header has" if header else "the file's first row has"
    bad = [(line, row) for line, row in rows if len(row) != expected]
    if not bad:
        return expected
    shown = ", ".join(
        f"line {line} (id {row[0].strip() or '<empty>'}) has {len(row)}"
        + (" columns" if not i else "")
        for i, (line, row) in enumerate(bad[:3])
    )
    more = f" (and {len(bad) - 3} more rows differ)" if len(bad) > 3 else ""
    raise DatasetError(
        f"{path}: {shown}{more}, but {basis} {expected}; every row needs "
        "id,target[,target...] with the same number of targets (leave a field empty for a "
        "missing target, e.g. 'mp-1,1.5,,0.3')",
        [(row[0].strip(), f"{len(row)} columns on line {line}, expected {expected}")
         for line, row in bad],
    )


def _read_id_prop(
    path: Path,
    target_names: Sequence[str] | None,
    missing_target: str,
    ids: Iterable[Any] | None,
    limit: int | None,
) -> _Table:
    """Read a CGCNN ``id_prop.csv``: ``id,target[,target...]`` rows, no header, CRLF allowed.

    A first row whose target fields are all non-numeric is taken as a header.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [
                (n, row)
                for n, row in enumerate(csv.reader(handle), start=1)
                if any(f.strip() for f in row)
            ]
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path} is not UTF-8 text ({exc}); it should be a CSV of id,target rows"
        ) from None
    if not rows:
        raise DatasetError(f"{path} is empty; it should hold one 'id,target' row per crystal")
    header = None
    if _looks_like_header(rows[0][1]):
        header = [f.strip() for f in rows[0][1]]
        rows = rows[1:]
    n_targets = _column_count(path, rows, header) - 1
    if n_targets < 1:
        raise DatasetError(
            f"{path} has no target column; each row should be 'id,target' (e.g. '1000041,1.5')"
        )
    if target_names is not None:
        names = [str(n) for n in target_names]
        if len(names) != n_targets:
            raise ValueError(
                f"target_names has {len(names)} names but {path.name} has {n_targets} target "
                f"column(s); give {n_targets} names"
            )
    elif header:
        names = header[1:]
    else:
        names = _default_names(n_targets)
    if "structure" in names or len(set(names)) != len(names):
        raise ValueError(f"target names {names} must be unique and must not be 'structure'")

    rows = _select(rows, lambda r: r[1][0].strip(), ids, limit, str(path))
    table = _Table(names=names, total=len(rows))
    first_line: dict[str, int] = {}
    for line, row in rows:
        ident = row[0].strip()
        if not ident:
            table.errors.append((f"<line {line}>", f"empty id on line {line} of {path.name}"))
            continue
        if ident in first_line:
            table.errors.append(
                (
                    ident,
                    f"duplicate id (lines {first_line[ident]} and {line} of {path.name}); the first is kept",
                )
            )
            continue
        first_line[ident] = line
        values = row[1:]
        parsed, reason = _parse_targets(
            ident, values, names, missing_target, f" (line {line} of {path.name})"
        )
        if reason:
            table.errors.append((ident, reason))
            continue
        table.ids.append(ident)
        table.targets.append(parsed)
    return table


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _has_cif(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(".cif") and e.is_file() for e in it)
    except OSError:
        return False


def _locate(root: Path, id_prop: PathLike) -> tuple[Path, str, Path]:
    """Return (id_prop path, source kind 'folder'|'archive', CIF folder or archive)."""
    if not root.exists():
        raise FileNotFoundError(
            f"{root} does not exist; pass a CGCNN root_dir or a .tar.gz of CIFs"
        )
    if root.is_file():
        if not _is_archive(root):
            raise ValueError(
                f"{root} is a file but not a tar archive ({', '.join(_ARCHIVE_SUFFIXES)}); pass the "
                "folder holding id_prop.csv and the CIFs, or a .tar.gz of CIFs"
            )
        prop = Path(id_prop)
        prop = prop if prop.is_absolute() else root.parent / prop
        if not prop.is_file():
            raise FileNotFoundError(
                f"no {prop.name} at {prop}; with an archive as root, pass id_prop=<path to id_prop.csv>"
            )
        return prop, "archive", root
    prop = Path(id_prop)
    prop = prop if prop.is_absolute() else root / prop
    if not prop.is_file():
        raise FileNotFoundError(
            f"no {Path(id_prop).name} in {root}; a CGCNN root_dir holds id_prop.csv "
            "(id,target rows) and <id>.cif files (or an archive of them); pass id_prop= to name another file"
        )
    if _has_cif(root):
        return prop, "folder", root
    if (root / "cifs").is_dir() and _has_cif(root / "cifs"):
        return prop, "folder", root / "cifs"
    archives = sorted(p for p in root.iterdir() if p.is_file() and _is_archive(p))
    preferred = [p for p in archives if p.name.lower().startswith("cifs.")]
    if len(preferred) == 1 or len(archives) == 1:
        return prop, "archive", (preferred or archives)[0]
    if archives:
        raise ValueError(
            f"{root} holds no .cif files and several archives ({', '.join(p.name for p in archives)}); "
            "pass the archive itself as root with id_prop=<path>"
        )
    raise FileNotFoundError(f"{root} holds no .cif files and no .tar.gz archive of CIFs")


def _read_archive(
    archive: Path, wanted: set[str], verbose: int
) -> tuple[dict[str, str], dict[str, str]]:
    """CIF texts of the wanted ids (by member file stem), read without extracting to disk."""
    texts: dict[str, str] = {}
    problems: dict[str, str] = {}
    seen: dict[str, str] = {}
    bar = tqdm(total=len(wanted), desc=f"reading {archive.name}", unit="file", disable=verbose < 1)
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name).name
                if not name.lower().endswith(".cif"):
                    continue
                stem = name[:-4]
                if stem not in wanted:
                    continue
                if stem in seen:
                    problems[stem] = (
                        f"two CIFs for this id in {archive.name}: {seen[stem]} and {member.name}"
                    )
                    continue
                seen[stem] = member.name
                handle = tar.extractfile(member)
                raw = handle.read() if handle is not None else b""
                texts[stem] = raw.decode("utf-8", errors="replace")
                bar.update(1)
                if len(texts) == len(wanted) and not problems:
                    break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read the archive {archive}: {exc}") from exc
    finally:
        bar.close()
    for stem in problems:
        texts.pop(stem, None)
    return texts, problems


def load_cgcnn_folder(
    root: PathLike,
    *,
    id_prop: PathLike = "id_prop.csv",
    target_names: Sequence[str] | None = None,
    ids: Iterable[Any] | None = None,
    limit: int | None = None,
    missing_target: Literal["error", "nan"] = "error",
    n_jobs: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    cache: CacheOption = True,
    verbose: int = 0,
    cif_reader: str | None = None,
) -> pd.DataFrame:
    """Load a CGCNN dataset: ``id_prop.csv`` plus one CIF per id, from a folder or an archive.

    Parameters
    ----------
    root : str or path
        One of

        - a CGCNN ``root_dir``: ``id_prop.csv`` and ``<id>.cif`` files (the CIFs may also
          sit in a ``cifs/`` sub-folder);
        - a folder with ``id_prop.csv`` and a tar archive of CIFs (``cifs.tar.gz``, as in
          ``mp-formation-energy-36737``), read without extracting it to disk;
        - the path of such an archive, with ``id_prop`` naming the id_prop file
          (relative paths are taken beside the archive).

        CIFs are matched to ids by file stem (``<id>.cif``; folders inside the archive
        are ignored).
    id_prop : str or path, default="id_prop.csv"
        The id/target file, relative to ``root`` (e.g. ``"id_prop_multi.csv"``) or
        absolute. Rows are ``id,target[,target...]`` without a header, as in the original
        CGCNN (CRLF line ends allowed); a first row whose targets are all non-numeric is
        read as a header that names the targets.
    target_names : sequence of str, optional
        Names of the target columns. Defaults to the header names, else ``"target"`` for
        one target and ``"target_0"``, ``"target_1"``, ... for several.
    ids : iterable, optional
        Load only these ids (compared as strings), in this order.
    limit : int, optional
        Load only the first ``limit`` rows (after ``ids``).
    missing_target : {"error", "nan"}, default="error"
        What an empty target field (or ``None``, ``nan``, ``NA``, ``null``) is: an error
        for that id, or NaN.
    n_jobs : int, optional
        Processes for parsing CIFs (joblib convention: None means 1, -1 all cores).
    on_error : {"raise", "skip"}, default="raise"
        ``"raise"``: a :class:`DatasetError` listing every bad entry (all id_prop
        problems are reported before any CIF is parsed). ``"skip"``: drop bad entries, log
        a warning and list them in ``df.attrs["errors"]``.
    cache : bool or str or path, default=True
        Keep parsed structures in ``<cache>/structures`` (True: :func:`default_cache_dir`;
        False: no cache; a path: that folder).
    verbose : int, default=0
        Show progress bars when >= 1.
    cif_reader : {"auto", "gemmi", "pymatgen"}, optional
        Who reads the CIFs (default ``$SKCGCNN_CIF_READER``, else ``"auto"``): gemmi's
        fast reader (``pip install skcgcnn[fast]``), which gives the structures pymatgen
        gives and leaves the files it does not take to pymatgen (one log line counts
        them), or pymatgen alone; ``"auto"`` is gemmi when it is installed.

    Returns
    -------
    pandas.DataFrame
        Indexed by id (str, index name ``"id"``), in id_prop order, with a ``structure``
        column and one float column per target. ``df.attrs["errors"]`` lists skipped
        entries as ``(id, reason)``.

    Raises
    ------
    DatasetError
        Bad entries with ``on_error="raise"``: an unreadable CIF, a missing,
        non-numeric or infinite target, a duplicate id, an id without a CIF.  Rows of
        the id_prop file with another number of columns than its first row (or header)
        are refused whatever ``on_error``: the file itself is malformed.
    FileNotFoundError
        ``root`` or the id_prop file does not exist.

    Examples
    --------
    >>> df = load_cgcnn_folder("../shared/data/mp-formation-energy-36737", n_jobs=2)  # doctest: +SKIP
    >>> df = load_cgcnn_folder(
    ...     "../shared/data/mp-formation-energy-36737/cifs.tar.gz",
    ...     id_prop="id_prop_multi.csv",
    ...     target_names=["e_form", "band_gap", "efermi", "volume", "magnetization"],
    ...     missing_target="nan",
    ... )  # doctest: +SKIP
    """
    _check_on_error(on_error)
    _check_missing_target(missing_target)
    root = Path(root).expanduser()
    prop_path, kind, source = _locate(root, id_prop)
    table = _read_id_prop(prop_path, target_names, missing_target, ids, limit)
    what = str(prop_path)
    errors = list(table.errors)
    _report(errors, on_error, what, table.total)

    entries: list[_Entry] = []
    missing: list[tuple[str, str]] = []
    folder = _cache_folder(cache, "structures")
    if kind == "folder":
        for ident in table.ids:
            path = source / f"{ident}.cif"
            try:
                stamp = _file_stamp(path)
            except OSError:
                missing.append((ident, f"no CIF file {path}"))
                continue
            entries.append(_Entry(ident, "file", str(path), stamp))
        store = _StructureCache(folder, f"folder:{source.resolve()}", None)
    else:
        stamp = _file_stamp(source)
        store = _StructureCache(folder, f"archive:{source.resolve()}", stamp)
        cached = {i for i in table.ids if store.get(i, stamp) is not None}
        wanted = set(table.ids) - cached
        texts, problems = _read_archive(source, wanted, verbose) if wanted else ({}, {})
        for ident in table.ids:
            if ident in cached:
                entries.append(_Entry(ident, "cif", None, stamp))
            elif ident in texts:
                entries.append(_Entry(ident, "cif", texts[ident], stamp))
            else:
                reason = problems.get(ident, f"no {ident}.cif in {source.name}")
                missing.append((ident, reason))
    _report(missing, on_error, what, table.total)
    return _parsed_frame(
        entries, store, table, errors + missing, on_error=on_error, what=what, n_jobs=n_jobs,
        verbose=verbose, desc=f"parsing CIFs ({root.name})", cif_reader=cif_reader,
    )


def list_cgcnn_folder(
    root: PathLike,
    *,
    id_prop: PathLike = "id_prop.csv",
    missing_target: Literal["error", "nan"] = "nan",
    on_error: Literal["raise", "skip"] = "raise",
) -> pd.DataFrame:
    """The entries of a CGCNN folder with their CIF paths, nothing parsed.

    For streaming work on sets too large to hold as structures
    (:func:`skcgcnn.streaming.predict_iter`): only ``id_prop.csv`` is read and the CIF
    files are checked to exist.

    Parameters
    ----------
    root : str or path
        A CGCNN ``root_dir`` with its CIFs as files (in it or in ``cifs/``); an archive
        of CIFs is refused (read it with :func:`load_cgcnn_folder`, or extract it).
    id_prop, missing_target, on_error
        As in :func:`load_cgcnn_folder`.

    Returns
    -------
    pandas.DataFrame
        Indexed by id, in id_prop order, with a ``path`` column (str) and one float
        column per target; ``df.attrs["errors"]`` lists the skipped ``(id, reason)``.
    """
    _check_on_error(on_error)
    _check_missing_target(missing_target)
    root = Path(root).expanduser()
    prop_path, kind, source = _locate(root, id_prop)
    if kind != "folder":
        raise ValueError(f"{root}: the CIFs are in the archive {source.name}; listing "
                         "needs them as files (extract it, or use load_cgcnn_folder)")
    table = _read_id_prop(prop_path, None, missing_target, None, None)
    errors = list(table.errors)
    ids, paths, targets = [], [], []
    for ident, values in zip(table.ids, table.targets):
        path = source / f"{ident}.cif"
        if path.is_file():
            ids.append(ident)
            paths.append(str(path))
            targets.append(values)
        else:
            errors.append((ident, f"no CIF file {path}"))
    _report(errors, on_error, str(prop_path), table.total)
    frame = pd.DataFrame(targets, columns=table.names, index=pd.Index(ids, name="id"),
                         dtype=float)
    frame.insert(0, "path", pd.Series(paths, index=frame.index, dtype=object))
    frame.attrs["errors"] = errors
    return frame
