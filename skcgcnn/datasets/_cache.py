"""The parsed-structure cache: one ``.npz`` per data source, entries keyed by a digest of
their file's bytes; :func:`_structures_for` serves entries from it or parses them, and
:func:`_parsed_frame` turns them into the loaders' frame.

The cache folder is :func:`skcgcnn._defaults.default_cache_dir` (re-exported as
``skcgcnn.datasets.default_cache_dir``) unless the loader's ``cache=`` names another."""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._atomic import atomic_write
from .._defaults import default_cache_dir
from ._codec import _decode, _Entry, _parse_all
from ._errors import _report
from ._targets import _frame, _Table, _targets_array

logger = logging.getLogger(__name__)


PathLike = str | os.PathLike
CacheOption = bool | str | os.PathLike | None

_CACHE_FORMAT = 2  # 2: entries keyed by a digest of their file's bytes, not size + mtime


@contextlib.contextmanager
def _no_cyclic_gc() -> Any:
    """The cyclic garbage collector paused while a million site objects are made, and
    those objects then moved straight to the oldest generation.

    None of them is garbage, yet each collection of the young generations would scan
    them again: with the collector running, rebuilding the 36,737 structures of
    mp-formation-energy-36737 from the cache takes 4.9 s instead of 1.5 s, and paused
    alone, the first allocation after it still pays a 0.47 s scan of the two million new
    objects.  ``gc.freeze()`` then ``gc.unfreeze()`` moves every tracked object to the
    oldest generation without scanning it; they are collected as usual from there.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _cache_folder(cache: CacheOption, sub: str) -> Path | None:
    if cache is None or cache is False:
        return None
    root = default_cache_dir() if cache is True else Path(cache).expanduser()
    return root / sub


def _file_stamp(path: Path) -> tuple[int, int]:
    """A digest of the file's bytes (128-bit BLAKE2b as two int64): the cache key of the
    entries it holds.

    Size and modification time are not enough: a file rewritten with the same size and
    its old mtime restored (``cp -p``, ``rsync -t``, ``tar x``, ``os.utime``) would be
    served stale.  Hashing costs little next to parsing: measured 0.03 s for the 14 MB
    ``cifs.tar.gz`` of 36,737 crystals, and 4.4 ms per 500 CIF files of a folder (about
    0.3 s for 36,737 files, against 0.1 s to stat them).
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    first, second = np.frombuffer(digest.digest(), dtype="<i8").tolist()
    return first, second


class _StructureCache:
    """One ``.npz`` file of encoded entries for one data source.

    ``source`` names the source (kind, resolved path, options); ``source_stamp`` is the
    content digest (:func:`_file_stamp`) of an archive or table that holds all entries
    (None for folders, whose entries carry the digests of their own files).
    """

    def __init__(
        self, folder: Path | None, source: str, source_stamp: tuple[int, int] | None
    ) -> None:
        self.source = source
        self.source_stamp = list(source_stamp) if source_stamp else None
        self.path = None
        if folder is not None:
            digest = hashlib.sha256(source.encode()).hexdigest()[:24]
            self.path = folder / f"{digest}.npz"
        self._entries: dict[str, tuple[tuple[int, int], tuple]] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            with _no_cyclic_gc():
                self._read()

    def _meta(self) -> dict:
        import pymatgen.core

        return {
            "format": _CACHE_FORMAT,
            "source": self.source,
            "source_stamp": self.source_stamp,
            "pymatgen": getattr(pymatgen.core, "__version__", "unknown"),
        }

    def _read(self) -> None:
        assert self.path is not None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta != self._meta():
                    logger.info(
                        "ignoring the structure cache %s (made for other inputs)", self.path
                    )
                    return
                ids = data["ids"].tolist()
                stamps = data["stamps"].tolist()
                kinds = data["kinds"]
                nsites = data["nsites"]
                lattices = data["lattices"]
                z = data["z"]
                oxi = data["oxi"]
                frac = data["frac"]
                labels = data["labels"].tobytes().decode("utf-8").split("\x00")
                text_blob = data["text"].tobytes()
                text_offsets = data["text_offsets"]
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            logger.warning("ignoring the unreadable structure cache %s: %s", self.path, exc)
            return
        starts = np.concatenate([[0], np.cumsum(nsites)]).tolist()
        entries = {}
        for i, ident in enumerate(ids):
            kind = int(kinds[i])
            if kind == 0:
                a, b = starts[i], starts[i + 1]
                entry: tuple = ("c", lattices[i], z[a:b], oxi[a:b], frac[a:b], labels[a:b])
            else:
                text = text_blob[text_offsets[i] : text_offsets[i + 1]].decode("utf-8")
                entry = ("j" if kind == 1 else "e", text)
            entries[ident] = (tuple(stamps[i]), entry)
        self._entries = entries

    def get(self, ident: str, stamp: tuple[int, int]) -> tuple | None:
        hit = self._entries.get(ident)
        if hit is None or hit[0] != stamp:
            return None
        return hit[1]

    def put(self, ident: str, stamp: tuple[int, int], entry: tuple) -> None:
        self._entries[ident] = (stamp, entry)
        self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        ids = list(self._entries)
        n = len(ids)
        stamps = np.zeros((n, 2), dtype=np.int64)
        kinds = np.zeros(n, dtype=np.int8)
        nsites = np.zeros(n, dtype=np.int32)
        lattices = np.zeros((n, 3, 3), dtype=np.float64)
        zs, oxis, fracs, labels, texts = [], [], [], [], []
        text_offsets = np.zeros(n + 1, dtype=np.int64)
        position = 0
        for i, ident in enumerate(ids):
            stamp, entry = self._entries[ident]
            stamps[i] = stamp
            if entry[0] == "c":
                lattices[i] = entry[1]
                nsites[i] = len(entry[2])
                zs.append(entry[2])
                oxis.append(entry[3])
                fracs.append(entry[4])
                labels.extend(entry[5])
            else:
                kinds[i] = 1 if entry[0] == "j" else 2
                raw = entry[1].encode("utf-8")
                texts.append(raw)
                position += len(raw)
            text_offsets[i + 1] = position
        arrays = {
            "meta": np.array(json.dumps(self._meta())),
            "ids": np.array(ids, dtype=str),
            "stamps": stamps,
            "kinds": kinds,
            "nsites": nsites,
            "lattices": lattices,
            "z": np.concatenate(zs) if zs else np.zeros(0, np.int16),
            "oxi": np.concatenate(oxis) if oxis else np.zeros(0),
            "frac": np.concatenate(fracs) if fracs else np.zeros((0, 3)),
            "labels": np.frombuffer("\x00".join(labels).encode("utf-8"), dtype=np.uint8),
            "text": np.frombuffer(b"".join(texts), dtype=np.uint8),
            "text_offsets": text_offsets,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_write(self.path, "wb") as handle:
                np.savez(handle, **arrays)
        except OSError as exc:
            logger.warning("could not write the structure cache %s: %s", self.path, exc)
            return
        self._dirty = False
        logger.info("cached %d parsed structures in %s", n, self.path)


def _structures_for(
    entries: list[_Entry],
    cache: _StructureCache,
    n_jobs: int | None,
    verbose: int,
    desc: str,
    cif_reader: str | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Structures (from the cache, or parsed and cached) and per-id parse errors."""
    encoded: dict[str, tuple] = {}
    todo: list[_Entry] = []
    ready: dict[str, Any] = {}
    for entry in entries:
        if entry.kind == "structure":
            ready[entry.ident] = entry.payload
            continue
        hit = cache.get(entry.ident, entry.stamp)
        if hit is None:
            todo.append(entry)
        else:
            encoded[entry.ident] = hit
    if encoded:
        logger.info("%d structures from the cache %s", len(encoded), cache.path)
    if todo:
        start = time.perf_counter()
        parsed = _parse_all([(e.kind, e.payload) for e in todo], n_jobs, verbose, desc,
                            cif_reader)
        for entry, result in zip(todo, parsed):
            encoded[entry.ident] = result
            cache.put(entry.ident, entry.stamp, result)
        logger.info("parsed %d structures in %.1f s", len(todo), time.perf_counter() - start)
        cache.save()
    errors = []
    bar = tqdm(
        total=len(encoded), desc="building structures", unit="structure", disable=verbose < 1
    )
    with _no_cyclic_gc():
        for entry in entries:
            result = encoded.get(entry.ident)
            if result is None:
                continue
            if result[0] == "e":
                errors.append((entry.ident, result[1]))
            else:
                ready[entry.ident] = _decode(result)
            bar.update(1)
    bar.close()
    return ready, errors


def _parsed_frame(
    entries: list[_Entry],
    store: _StructureCache,
    table: _Table,
    errors: list[tuple[str, str]],
    *,
    on_error: str,
    what: str,
    n_jobs: int | None,
    verbose: int,
    desc: str,
    cif_reader: str | None = None,
) -> pd.DataFrame:
    """The loaders' frame of ``entries`` (cached or parsed) with their targets in ``table``.

    ``errors`` are the entries dropped before parsing (already reported); parse failures
    are reported against ``table.total`` and listed after them in ``df.attrs["errors"]``.
    """
    structures, parse_errors = _structures_for(entries, store, n_jobs, verbose, desc,
                                               cif_reader)
    _report(parse_errors, on_error, what, table.total)
    keep = [e.ident for e in entries if e.ident in structures]
    return _frame(
        keep,
        [structures[i] for i in keep],
        _targets_array(table, keep),
        table.names,
        [*errors, *parse_errors],
    )
