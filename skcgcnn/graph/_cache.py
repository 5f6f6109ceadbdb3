"""Crystal graphs of one set of structures, built once per ``(radius, max_num_nbr)``.

Kept in memory and, optionally, in ``.npz`` files shared between processes (the
search's worker processes share them).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write, file_lock
from .._defaults import DMIN, STEP
from ..structures import StructureError, describe
from ._collection import GraphCollection
from ._parallel import build_graphs

logger = logging.getLogger(__name__)

_GRAPH_FORMAT = 2  # 2: with a checksum of the arrays


def _numbers_table() -> Any:
    """A one-column table covering every element: graphs are built with it and get
    their real atom features per trial."""
    from ..atom_features import MAX_Z, AtomFeatureTable

    available = np.ones(MAX_Z + 1, dtype=bool)
    available[0] = False
    return AtomFeatureTable("atomic-number", np.arange(MAX_Z + 1, dtype=np.float32)[:, None],
                            available, ["Z"])


def _site_numbers(structure: Any) -> list[int]:
    """Atomic numbers of every species on every site (disordered sites give several)."""
    return [int(getattr(sp, "Z", 0)) for site in structure for sp in site.species]


def structures_fingerprint(structures: Sequence[Any]) -> str:
    """SHA-1 of the species, lattices and fractional coordinates of ``structures``."""
    digest = hashlib.sha1()
    for s in structures:
        digest.update(np.asarray(_site_numbers(s), dtype=np.int16).tobytes())
        digest.update(np.ascontiguousarray(s.lattice.matrix, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(s.frac_coords, dtype=np.float64).tobytes())
    return digest.hexdigest()


#: The arrays of a graph cache file, in the order :func:`_payload_checksum` reads them.
_GRAPH_ARRAYS = ("atom_ptr", "numbers", "nbr_idx", "nbr_dist", "kept", "fingerprint")


def _payload_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """BLAKE2b of the name, dtype, shape and bytes of each of :data:`_GRAPH_ARRAYS`.

    Stored in the graph cache file beside the arrays and checked on every read.  The
    zip format's CRC-32 catches most flipped bits inside one member, but not a member
    rewritten with a fresh CRC (a copy or repair tool, a partial edit) nor arrays that
    belong to different writes; the checksum covers the contents end to end.
    """
    digest = hashlib.blake2b(digest_size=32)
    for name in _GRAPH_ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class GraphCache:
    """Crystal graphs of one set of structures, built once per graph-parameter set.

    :meth:`get` builds the neighbour lists for ``(radius, max_num_nbr)`` the first time
    and keeps them in memory; with ``cache_dir`` they are also written there (``.npz``,
    no pickle, written to a temporary name and renamed) and read back by any process
    that asks for the same structures and parameters, so worker processes share them (a
    file lock makes the second worker wait for the first one's build instead of
    repeating it).  Each file holds a BLAKE2b checksum of its arrays: a truncated or
    damaged file is logged as a warning, rebuilt and written again, never used.  The
    graphs are built by :func:`build_graphs`, as ``StructureGraphTransformer`` builds
    them, and carry a placeholder atom-feature table: give them the real one with
    :meth:`GraphCollection.with_atom_features`, which does not touch the neighbour lists.

    Parameters
    ----------
    structures : sequence of pymatgen Structure
    ids : sequence, optional
        Ids of the structures (default: their positions).
    dmin, step : float, default=0.0, 0.2
        Gaussian expansion parameters stored with the graphs.
    cache_dir : str or Path, optional
        Folder for the graph files.
    n_jobs : int, optional
        Processes for the neighbour search.
    on_error : {"raise", "skip"}, default="raise"
        Structures that cannot become graphs (e.g. an atom without neighbour inside a
        small radius): an error, or left out of that parameter set's graphs.

    Attributes
    ----------
    builds : int
        Neighbour searches run by this object (graphs read from memory or disk do not count).
    fingerprint : str
        :func:`structures_fingerprint` of the structures.
    """

    def __init__(self, structures: Sequence[Any], ids: Sequence[Any] | None = None,
                 dmin: float = DMIN, step: float = STEP,
                 cache_dir: str | os.PathLike | None = None, n_jobs: int | None = None,
                 on_error: str = "raise"):
        self.structures = list(structures)
        self.ids = list(range(len(self.structures))) if ids is None else list(ids)
        if len(self.ids) != len(self.structures):
            raise ValueError(f"{len(self.ids)} ids for {len(self.structures)} structures")
        self.dmin = float(dmin)
        self.step = float(step)
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.n_jobs = n_jobs
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be one of ('raise', 'skip'), got {on_error!r}")
        self.on_error = on_error
        self.fingerprint = structures_fingerprint(self.structures)
        self.builds = 0
        self._memory: dict[tuple, tuple] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_memory"] = {}
        return state

    def _key(self, radius: float, max_num_nbr: int) -> str:
        text = json.dumps([_GRAPH_FORMAT, self.fingerprint, float(radius), int(max_num_nbr),
                           self.dmin, self.step])
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def get(self, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray]:
        """Graphs for ``(radius, max_num_nbr)`` and the positions of the structures they hold.

        Returns
        -------
        graphs : GraphCollection
            One graph per kept structure, with a placeholder atom-feature table.
        kept : ndarray of int
            Positions (in ``structures``) of the graphs' structures; all of them unless
            ``on_error="skip"`` left some out.
        """
        mem_key = (float(radius), int(max_num_nbr))
        if mem_key in self._memory:
            return self._memory[mem_key]
        result = None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path = self.cache_dir / f"graphs-{self._key(radius, max_num_nbr)}.npz"
            with file_lock(path.with_suffix(".lock")):
                result = self._read(path, radius, max_num_nbr)
                if result is None:
                    result = self._build(radius, max_num_nbr)
                    self._write(path, *result)
        else:
            result = self._build(radius, max_num_nbr)
        self._memory[mem_key] = result
        return result

    def _build(self, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray]:
        # graph's own parallel map, as StructureGraphTransformer runs it (same names,
        # ids and on_error rule), without going up the data path to the transformer
        start = time.perf_counter()
        few, skipped = 0, 0

        def on_event(pos: int, kind: str, message: str) -> None:
            nonlocal few, skipped
            if kind == "note":  # atoms short of max_num_nbr neighbours: counted, not warned
                few += 1
            elif self.on_error == "raise":
                raise StructureError(message)
            else:
                skipped += 1
                logger.warning("left out of the graphs for radius=%s: %s", radius, message)

        names = [describe(pos, ident) for pos, ident in enumerate(self.ids)]
        ids = np.empty(len(self.ids), dtype=object)
        ids[:] = self.ids
        graphs, kept = build_graphs(self.structures, names, ids, _numbers_table(),
                                    float(radius), int(max_num_nbr), self.dmin, self.step,
                                    n_jobs=self.n_jobs, on_event=on_event)
        self.builds += 1
        logger.info("graphs for radius=%s, max_num_nbr=%s: %d structures in %.1f s%s",
                    radius, max_num_nbr, len(graphs), time.perf_counter() - start,
                    f" ({few} with atoms short of {max_num_nbr} neighbours)" if few else "")
        if skipped:
            logger.warning("%d of %d structures were skipped", skipped, len(self.ids))
        return graphs, np.asarray(kept, dtype=np.int64)

    def _write(self, path: Path, graphs: Any, kept: np.ndarray) -> None:
        arrays = {"atom_ptr": graphs.atom_ptr, "numbers": graphs.numbers,
                  "nbr_idx": graphs.nbr_idx, "nbr_dist": graphs.nbr_dist, "kept": kept,
                  "fingerprint": np.array(self.fingerprint)}
        # written whole under another name, then renamed: a reader (or a crash) never
        # sees half a file under the real name
        try:
            with atomic_write(path, "wb", fsync=True) as fh:
                np.savez(fh, checksum=np.array(_payload_checksum(arrays)), **arrays)
        except OSError as exc:
            logger.warning("graph cache file %s not written (%s); the graphs stay in memory "
                           "for this process only", path, exc)

    def _read(self, path: Path, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray] | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in _GRAPH_ARRAYS}
                stored = str(data["checksum"])
            if _payload_checksum(arrays) != stored:
                raise ValueError("its checksum does not match its contents")
            if str(arrays["fingerprint"]) != self.fingerprint:
                return None
            kept = arrays["kept"].astype(np.int64)
            ids = np.empty(len(kept), dtype=object)
            ids[:] = [self.ids[p] for p in kept]
            graphs = GraphCollection(
                arrays["atom_ptr"], arrays["numbers"], arrays["nbr_idx"], arrays["nbr_dist"],
                ids, float(radius), int(max_num_nbr), self.dmin, self.step, _numbers_table())
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            # truncated (EOFError, BadZipFile), bit-flipped (BadZipFile's CRC, or only the
            # checksum when the zip itself is intact), or arrays that do not fit together
            logger.warning("graph cache file %s is damaged (%s: %s); rebuilding it", path,
                           type(exc).__name__, exc)
            return None
        logger.info("graphs for radius=%s, max_num_nbr=%s read from %s", radius, max_num_nbr,
                    path)
        return graphs, kept
