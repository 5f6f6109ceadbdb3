"""The one parallel map over structures: inputs -> crystal graphs, in worker processes.

:func:`build_graphs` turns a list of inputs (Structures, ASE Atoms, CIF paths) into a
:class:`~skcgcnn.graph.GraphCollection`.  With ``n_jobs > 1`` it forks workers that
read the inputs from memory shared with this process (nothing is pickled on the way
in) and, when every input's atom count is known up front, write the graphs into
shared memory (nothing is pickled on the way back).  Structures that fail are
reported through ``on_event`` and left out.
"""
from __future__ import annotations

import gc
import logging
import mmap
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..structures import StructureError, _is_ase_atoms, to_structure
from ._collection import GraphCollection, concatenate_arrays
from ._neighbors import graph_from_arrays, structure_arrays

logger = logging.getLogger(__name__)

__all__ = ["build_graphs"]


def _resolve_n_jobs(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs`` as scikit-learn reads it: None is 1, -1 every
    core, -2 all but one, ..."""
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs)


def _graph_of(obj: Any, name: str, table: Any, radius: float, max_num_nbr: int) -> tuple:
    """``(numbers, nbr_idx, nbr_dist, note)`` of one input; StructureError if it is bad."""
    structure = to_structure(obj, name)
    numbers, cart, lattice = structure_arrays(structure, name)
    missing = table.missing(numbers)
    if missing.size:
        from pymatgen.core.periodic_table import Element

        symbols = [Element.from_Z(int(z)).symbol if 1 <= z <= 118 else str(z)
                   for z in missing]
        raise StructureError(
            f"{name} contains {', '.join(symbols)}, which atom-feature set "
            f"{table.name!r} does not cover; choose another atom_features or pass "
            "on_error='skip'")
    nbr_idx, nbr_dist, note = graph_from_arrays(cart, lattice, radius, max_num_nbr, name)
    return numbers, nbr_idx, nbr_dist, note


class _Output:
    """The flat graph arrays of a transform, allocated before the work starts.

    Used when every input's atom count is known up front (Structures and ASE Atoms):
    each structure's graph is written straight into its rows, so there is nothing to
    concatenate, and forked workers write into memory shared with this process
    (``shared=True``), so no graph travels back through a pipe.  Rows of structures
    that fail stay unwritten and are dropped at the end.
    """

    def __init__(self, sizes: np.ndarray, max_num_nbr: int, shared: bool):
        self.atom_ptr = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.atom_ptr[1:])
        total = int(self.atom_ptr[-1])
        empty = _shared_empty if shared else np.empty
        self.numbers = empty((total,), np.int16)
        self.nbr_idx = empty((total, max_num_nbr), np.int32)
        self.nbr_dist = empty((total, max_num_nbr), np.float32)


def _shared_empty(shape: tuple, dtype: Any) -> np.ndarray:
    """An array in anonymous shared memory, which forked children write for us."""
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


class _Block:
    """What a contiguous range of inputs gave: kept positions, messages, and (when
    there is no :class:`_Output`) their graphs concatenated."""

    __slots__ = ("kept", "sizes", "numbers", "nbr_idx", "nbr_dist", "events")

    def __init__(self, kept, sizes, numbers, nbr_idx, nbr_dist, events):
        self.kept = kept          # positions of the structures that made a graph
        self.sizes = sizes        # their atom counts
        self.numbers = numbers    # concatenated over the kept structures, or None
        self.nbr_idx = nbr_idx
        self.nbr_dist = nbr_dist
        self.events = events      # (position, "error" | "note", message), in input order

    def __len__(self) -> int:
        return len(self.kept) + sum(1 for _, kind, _ in self.events if kind == "error")


def _run(lo: int, hi: int, items: list, names: list, table: Any, radius: float,
         max_num_nbr: int, out: _Output | None = None) -> _Block:
    kept, sizes, parts, events = [], [], [], []
    for pos in range(lo, hi):
        try:
            numbers, nbr_idx, nbr_dist, note = _graph_of(items[pos], names[pos], table,
                                                         radius, max_num_nbr)
        except StructureError as exc:
            events.append((pos, "error", str(exc)))
            continue
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # a library failing on odd input: still this structure's
            logger.debug("graph of %s failed", names[pos], exc_info=True)
            events.append((pos, "error", f"{names[pos]}: building its graph failed "
                           f"({type(exc).__name__}: {exc}); check the structure or pass "
                           "on_error='skip'"))
            continue
        if out is not None:
            start, stop = out.atom_ptr[pos], out.atom_ptr[pos + 1]
            if stop - start != len(numbers):  # pragma: no cover - sizes come from len()
                raise RuntimeError(f"{names[pos]} gave {len(numbers)} atoms, expected "
                                   f"{stop - start}")
            out.numbers[start:stop] = numbers
            out.nbr_idx[start:stop] = nbr_idx
            out.nbr_dist[start:stop] = nbr_dist
        else:
            parts.append((numbers, nbr_idx, nbr_dist))
        kept.append(pos)
        sizes.append(len(numbers))
        if note:
            events.append((pos, "note", note))
    numbers = nbr_idx = nbr_dist = None
    if out is None:
        numbers, nbr_idx, nbr_dist = concatenate_arrays(parts, max_num_nbr)
    return _Block(np.asarray(kept, dtype=np.int64), np.asarray(sizes, dtype=np.int64),
                  numbers, nbr_idx, nbr_dist, events)


# the inputs of a parallel transform, inherited by forked workers (never pickled)
_FORK_JOB: tuple | None = None


# A forked worker's main thread allocates from the malloc arena it inherited, whose
# free chunks lie on pages shared with the parent: every first write to one copies
# the page.  One thread per worker gets an arena of its own; measured on the
# 36,737-crystal set, the two workers used 3-4 % less CPU time that way.
_WORKER_THREAD: Any = None


def _run_forked(bounds: tuple[int, int]) -> _Block:
    global _WORKER_THREAD
    if _WORKER_THREAD is None:
        from concurrent.futures import ThreadPoolExecutor

        _WORKER_THREAD = ThreadPoolExecutor(max_workers=1)
    return _WORKER_THREAD.submit(_run, *bounds, *_FORK_JOB).result()


def _known_sizes(items: list) -> np.ndarray | None:
    """Atom counts of the inputs, or None when some (CIF paths) are unknown before parsing."""
    from pymatgen.core import Structure

    sizes = np.empty(len(items), dtype=np.int64)
    for pos, obj in enumerate(items):
        if isinstance(obj, Structure) or _is_ase_atoms(obj):
            sizes[pos] = len(obj)
        else:
            return None
    return sizes


def _chunks(sizes: np.ndarray, target: int, n_jobs: int = 1) -> list[tuple[int, int]]:
    """Split positions into contiguous ranges of about ``target`` atoms.

    With ``n_jobs > 1`` the ranges shrink as the work goes (guided scheduling: each
    takes a ``1 / (4 * n_jobs)`` share of the atoms left, and no fewer than
    ``target``), so the workers finish close together.
    """
    remaining = int(np.sum(sizes))
    bounds, lo, atoms = [], 0, 0
    goal = max(target, remaining // (4 * n_jobs)) if n_jobs > 1 else target
    for pos, size in enumerate(sizes):
        atoms += int(size)
        if atoms >= goal:
            bounds.append((lo, pos + 1))
            remaining -= atoms
            lo, atoms = pos + 1, 0
            if n_jobs > 1:
                goal = max(target, remaining // (4 * n_jobs))
    if lo < len(sizes):
        bounds.append((lo, len(sizes)))
    return bounds


def build_graphs(items: list, names: list, ids: np.ndarray, table: Any, radius: float,
                 max_num_nbr: int, dmin: float, step: float, n_jobs: int | None = 1,
                 verbose: int = 0,
                 on_event: Callable[[int, str, str], None] | None = None
                 ) -> tuple[GraphCollection, np.ndarray]:
    """The crystal graphs of ``items``, built in ``n_jobs`` forked processes.

    Parameters
    ----------
    items : list of Structure, ASE Atoms or CIF path
    names : list of str
        How messages name each input (:func:`skcgcnn.structures.describe`).
    ids : ndarray of object, shape (len(items),)
        The inputs' ids; the kept ones become the collection's ids.
    table : AtomFeatureTable
    radius, max_num_nbr, dmin, step : float, int, float, float
        The graph parameters.
    n_jobs : int or None, default=1
        Worker processes (None: 1; -1: one per core; at most one per 64 inputs); where
        the platform cannot fork, the work stays in this process.
    verbose : int, default=0
        A progress bar when > 0.
    on_event : callable, optional
        Called as ``on_event(position, kind, message)``, in input order as the work
        goes, with ``kind`` "error" (the input is left out) or "note" (a
        FewNeighborsWarning message).  It may raise to stop the work.

    Returns
    -------
    graphs : GraphCollection
        The graphs of the inputs that made one.
    kept : ndarray of int
        Their positions in ``items``.
    """
    nbr = int(max_num_nbr)
    sizes = _known_sizes(items)
    n_jobs = min(_resolve_n_jobs(n_jobs), max(1, len(items) // 64))
    forked = n_jobs > 1 and "fork" in multiprocessing.get_all_start_methods()
    out = None if sizes is None else _Output(sizes, nbr, shared=forked)
    blocks = []
    for block in _map(items, names, table, float(radius), nbr, sizes, out,
                      n_jobs if forked else 1, verbose):
        for pos, kind, message in block.events:
            if on_event is not None:
                on_event(pos, kind, message)
        blocks.append(block)
    kept = (np.concatenate([b.kept for b in blocks]) if blocks
            else np.zeros(0, dtype=np.int64))
    params = dict(radius=float(radius), max_num_nbr=nbr, dmin=float(dmin),
                  step=float(step), atom_features=table)
    if out is not None:
        graphs = GraphCollection(out.atom_ptr, out.numbers, out.nbr_idx, out.nbr_dist,
                                 ids, **params)
        # the rows of failed structures were never written: leave them out
        return (graphs if len(kept) == len(items) else graphs[kept]), kept
    sizes = np.concatenate([b.sizes for b in blocks] or [np.zeros(0, dtype=np.int64)])
    atom_ptr = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=atom_ptr[1:])
    graphs = GraphCollection(
        atom_ptr, *concatenate_arrays([(b.numbers, b.nbr_idx, b.nbr_dist) for b in blocks],
                                      nbr),
        ids[kept], **params)
    return graphs, kept


def _map(items: list, names: list, table: Any, radius: float, max_num_nbr: int,
         sizes: np.ndarray | None, out: _Output | None, n_jobs: int, verbose: int):
    """Yield :class:`_Block` s covering all positions, in input order."""
    global _FORK_JOB
    job = (items, names, table, radius, max_num_nbr, out)
    progress = None
    if verbose:
        from tqdm.auto import tqdm
        progress = tqdm(total=len(items), desc="structures", unit="struct")
    if sizes is None:
        sizes = np.full(len(items), 20)  # CIF paths: atom counts unknown until parsed
    if n_jobs == 1:
        bounds = _chunks(sizes, target=4096)
        blocks = (_run(lo, hi, *job) for lo, hi in bounds)
    else:
        # Forked workers read the inputs from memory they share with this process,
        # so nothing is pickled on the way in; with an _Output they write the graphs
        # into shared memory too.  gc.freeze keeps the workers' garbage collections
        # off the inherited objects, whose pages would otherwise be copied into
        # every worker.
        bounds = _chunks(sizes, target=500, n_jobs=n_jobs)
        _FORK_JOB = job
        gc.freeze()
        pool = multiprocessing.get_context("fork").Pool(n_jobs)
        blocks = pool.imap(_run_forked, bounds)
    try:
        for block in blocks:
            yield block
            if progress is not None:
                progress.update(len(block))
    finally:
        if n_jobs > 1:
            pool.terminate()
            pool.join()
            gc.unfreeze()
            _FORK_JOB = None
        if progress is not None:
            progress.close()
