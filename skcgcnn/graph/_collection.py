"""GraphCollection: the crystal graphs of many structures in flat arrays, and their batching.

Storage is flat over all crystals of a collection::

    atom_ptr  : int64   (n_crystals + 1,)          atoms of crystal k are atom_ptr[k]:atom_ptr[k+1]
    numbers   : int16   (n_atoms,)                 atomic numbers
    nbr_idx   : int32   (n_atoms, max_num_nbr)     neighbour index inside its crystal, -1 = none
    nbr_dist  : float32 (n_atoms, max_num_nbr)     neighbour distance in Å, 0 where nbr_idx is -1

that is ``2 + 8 * max_num_nbr`` bytes per atom (98 for 12 neighbours), against about
2 kB per atom for the expanded 41-float edge vectors of the original code.

This module knows numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._defaults import DMIN, MAX_NUM_NBR, RADIUS, STEP

if TYPE_CHECKING:
    from ._io import GraphBundle


def concatenate_arrays(graphs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                       max_num_nbr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers, nbr_idx, nbr_dist)`` triples joined into the flat int16 / int32 /
    float32 arrays of a collection (empty ones of the right shape for no triple)."""
    if not graphs:
        return (np.zeros(0, dtype=np.int16), np.zeros((0, max_num_nbr), dtype=np.int32),
                np.zeros((0, max_num_nbr), dtype=np.float32))
    return (np.concatenate([g[0] for g in graphs]).astype(np.int16, copy=False),
            np.concatenate([g[1] for g in graphs]).astype(np.int32, copy=False),
            np.concatenate([g[2] for g in graphs]).astype(np.float32, copy=False))


@dataclass(eq=False)
class GraphCollection:
    """Crystal graphs of many structures in flat arrays (see the module docstring).

    Supports ``len``, integer / slice / boolean / integer-array indexing (a new
    collection, as scikit-learn's CV splitters need), pickling, and :meth:`save` /
    :meth:`load` to a graph file that runs no code when read.

    Attributes
    ----------
    atom_ptr, numbers, nbr_idx, nbr_dist : ndarray
        The flat storage.
    ids : ndarray of object, shape (n_crystals,)
        The structures' ids (their position in the input when none were given).
    radius, max_num_nbr, dmin, step : float, int, float, float
        The graph parameters.
    atom_features : AtomFeatureTable
        Features by atomic number, looked up at batching time.
    input_positions : ndarray of int or None
        Set by :class:`~skcgcnn.transformers.StructureGraphTransformer` when
        ``on_error="skip"`` left structures out: the position in the transformer's input
        of each crystal here.  The estimators use it to stay aligned with that input
        (``fit`` keeps the matching rows of y, ``predict`` answers NaN for the rest).
        Indexing drops it: the result belongs to no input.
    n_inputs : int or None
        Length of that input.
    """

    atom_ptr: np.ndarray
    numbers: np.ndarray
    nbr_idx: np.ndarray
    nbr_dist: np.ndarray
    ids: np.ndarray
    radius: float = RADIUS
    max_num_nbr: int = MAX_NUM_NBR
    dmin: float = DMIN
    step: float = STEP
    atom_features: Any = None
    meta: dict = field(default_factory=dict)
    input_positions: np.ndarray | None = None
    n_inputs: int | None = None
    #: per atom, the crystal-local index of the first atom of its class
    #: (:func:`skcgcnn.graph._orbits.equivalent_atoms`), found on first use
    atom_classes: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_graphs(cls, graphs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    ids: Sequence[Any] | None = None, **params: Any) -> "GraphCollection":
        """Concatenate per-structure ``(numbers, nbr_idx, nbr_dist)`` triples."""
        max_num_nbr = int(params.get("max_num_nbr", MAX_NUM_NBR))
        sizes = np.array([len(g[0]) for g in graphs], dtype=np.int64)
        atom_ptr = np.zeros(len(graphs) + 1, dtype=np.int64)
        np.cumsum(sizes, out=atom_ptr[1:])
        numbers, nbr_idx, nbr_dist = concatenate_arrays(graphs, max_num_nbr)
        if ids is None:
            ids = np.arange(len(graphs))
        id_arr = np.empty(len(graphs), dtype=object)
        id_arr[:] = list(ids)
        return cls(atom_ptr, numbers, nbr_idx, nbr_dist, id_arr, **params)

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per crystal, shape (n_crystals,)."""
        return np.diff(self.atom_ptr)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.atom_ptr, self.numbers, self.nbr_idx,
                                           self.nbr_dist)))

    @property
    def skipped_positions(self) -> np.ndarray:
        """Positions of the transformer's input that have no graph here (see
        ``input_positions``); empty when nothing was skipped."""
        if self.input_positions is None:
            return np.zeros(0, dtype=np.int64)
        keep = np.ones(self.n_inputs, dtype=bool)
        keep[self.input_positions] = False
        return np.flatnonzero(keep)

    @property
    def graph_params(self) -> dict:
        """``radius``, ``max_num_nbr``, ``dmin`` and ``step`` as plain float / int (as
        graph files store them and the transformer takes them)."""
        return {"radius": float(self.radius), "max_num_nbr": int(self.max_num_nbr),
                "dmin": float(self.dmin), "step": float(self.step)}

    @property
    def shape(self) -> tuple[int]:
        """``(n_crystals,)``: lets scikit-learn index the collection like an array."""
        return (len(self),)

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    def __repr__(self) -> str:
        name = getattr(self.atom_features, "name", None)
        skipped = ("" if self.input_positions is None else
                   f", skipped={self.n_inputs - len(self)} of {self.n_inputs} inputs")
        return (f"GraphCollection(n_crystals={len(self)}, n_atoms={len(self.numbers)}, "
                f"radius={self.radius}, max_num_nbr={self.max_num_nbr}, "
                f"atom_features={name!r}{skipped})")

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(numbers, nbr_idx, nbr_dist)`` of crystal ``i`` (views, not copies)."""
        a, b = self.atom_ptr[i], self.atom_ptr[i + 1]
        return self.numbers[a:b], self.nbr_idx[a:b], self.nbr_dist[a:b]

    def _atom_rows(self, rows: np.ndarray) -> np.ndarray:
        starts = self.atom_ptr[rows]
        sizes = self.atom_ptr[rows + 1] - starts
        total = int(sizes.sum())
        offsets = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
        return np.arange(total, dtype=np.int64) + offsets

    def __getitem__(self, key: Any) -> "GraphCollection":
        if isinstance(key, tuple) and len(key) == 2 and key[1] is Ellipsis:
            key = key[0]  # array-style X[key, ...], as scikit-learn's _safe_indexing does
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"index {key} is out of range for {n} crystals")
            rows = np.array([key % n])
        elif isinstance(key, slice):
            rows = np.arange(len(self))[key]
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                if rows.shape != (len(self),):
                    raise IndexError(f"boolean index of shape {rows.shape} does not match "
                                     f"{len(self)} crystals")
                rows = np.flatnonzero(rows)
            elif rows.size == 0:
                rows = rows.astype(np.int64)
            elif not np.issubdtype(rows.dtype, np.integer):
                raise IndexError("GraphCollection takes integers, slices, boolean masks "
                                 f"or integer arrays as index, not {rows.dtype}")
            rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
                raise IndexError(f"index out of range for {len(self)} crystals")
        atoms = self._atom_rows(rows)
        sizes = self.atom_ptr[rows + 1] - self.atom_ptr[rows]
        atom_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(sizes, out=atom_ptr[1:])
        return GraphCollection(
            atom_ptr, self.numbers[atoms], self.nbr_idx[atoms], self.nbr_dist[atoms],
            self.ids[rows], self.radius, self.max_num_nbr, self.dmin, self.step,
            self.atom_features, dict(self.meta),
            atom_classes=None if self.atom_classes is None else self.atom_classes[atoms])

    def save(self, path: Any, targets: Any = None, target_names: Sequence[str] | None = None,
             info: dict | None = None) -> None:
        """Write the graphs (and targets) to an ``.npz`` graph file that runs no code
        when read; see :func:`skcgcnn.graph.save_graphs`."""
        from ._io import save_graphs

        save_graphs(path, self, targets, None if target_names is None else list(target_names),
                    info)

    @classmethod
    def load(cls, path: Any) -> GraphCollection:
        """The graphs of a graph file written by :meth:`save` or ``skcgcnn featurize``
        (its targets: :func:`skcgcnn.graph.load_graphs`)."""
        from ._io import read_graphs

        return read_graphs(path, cls).graphs

    def with_atom_features(self, atom_features: Any) -> "GraphCollection":
        """The same graphs with another atom-feature table (no neighbour search)."""
        from ..atom_features import get_atom_features

        table = get_atom_features(atom_features)
        missing = table.missing(self.numbers)
        if missing.size:
            raise ValueError(
                f"atom-feature set {table.name!r} has no entry for atomic number(s) "
                f"{missing.tolist()}; choose another set or drop those structures")
        return GraphCollection(self.atom_ptr, self.numbers, self.nbr_idx, self.nbr_dist,
                               self.ids, self.radius, self.max_num_nbr, self.dmin,
                               self.step, table, dict(self.meta), self.input_positions,
                               self.n_inputs, self.atom_classes)

    def equivalent_atoms(self) -> np.ndarray:
        """Per atom, the crystal-local index of the first atom of its class: atoms the
        network cannot tell apart (:mod:`skcgcnn.graph._orbits`); found once, kept."""
        if self.atom_classes is None:
            from ._orbits import equivalent_atoms

            self.atom_classes = equivalent_atoms(self.atom_ptr, self.numbers, self.nbr_idx,
                                                 self.nbr_dist)
        return self.atom_classes

    def reduced(self) -> tuple["GraphCollection", np.ndarray]:
        """The collection of the first atom of each class of :meth:`equivalent_atoms`,
        neighbours pointing to those atoms, and how many atoms each stands for (float32,
        one per kept atom): what ``collate(reduce=True)`` batches, for a whole set."""
        first = self.equivalent_atoms() + self.atom_ptr[:-1].repeat(self.n_atoms)
        kept = np.flatnonzero(first == np.arange(len(first)))
        position = np.empty(len(first), dtype=np.int64)
        position[kept] = np.arange(len(kept))
        position = position[first]                            # each atom's kept atom
        crystal = np.repeat(np.arange(len(self)), self.n_atoms)
        atom_ptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(crystal[kept], minlength=len(self)), out=atom_ptr[1:])
        nbr = self.nbr_idx[kept].astype(np.int64) + self.atom_ptr[:-1][crystal[kept], None]
        local = position[np.maximum(nbr, 0)] - atom_ptr[:-1][crystal[kept], None]
        graphs = GraphCollection(
            atom_ptr, self.numbers[kept],
            np.where(self.nbr_idx[kept] >= 0, local, -1).astype(self.nbr_idx.dtype),
            self.nbr_dist[kept], self.ids, self.radius, self.max_num_nbr, self.dmin,
            self.step, self.atom_features, dict(self.meta))
        return graphs, np.bincount(position, minlength=len(kept)).astype(np.float32)

    def collate(self, rows: np.ndarray | None = None,
                reduce: bool = False) -> dict[str, np.ndarray]:
        """Batch crystals ``rows`` (all by default) into one set of arrays.

        With ``reduce``, only the first atom of each class of :meth:`equivalent_atoms`
        is kept, its neighbours point to the kept atoms, and ``atom_weight`` says how
        many atoms each kept one stands for (:class:`skcgcnn.model.CGCNN` weighs its
        batch statistics and pooling with it).

        Returns
        -------
        dict with
            atom_fea : float32 (n_atoms, n_features) -- atom features
            nbr_idx : int64 (n_atoms, max_num_nbr) -- batch-wide neighbour index, -1 = none
            nbr_dist : float32 (n_atoms, max_num_nbr)
            crystal_idx : int64 (n_atoms,) -- which crystal of the batch each atom is in
            atom_weight : float32 (n_atoms,) -- with ``reduce`` only
        """
        if self.atom_features is None:
            raise ValueError("this GraphCollection has no atom-feature table; use "
                             "with_atom_features(...) or StructureGraphTransformer")
        if reduce:
            self.equivalent_atoms()  # found on the whole collection, kept by slicing
        batch = self if rows is None else self[rows]
        if reduce:
            reduced, weight = batch.reduced()
            return {**reduced.collate(), "atom_weight": weight}
        sizes = batch.n_atoms
        crystal_idx = np.repeat(np.arange(len(batch), dtype=np.int64), sizes)
        shift = batch.atom_ptr[:-1][crystal_idx][:, None]
        nbr_idx = np.where(batch.nbr_idx >= 0, batch.nbr_idx + shift, -1)
        return {
            "atom_fea": batch.atom_features(batch.numbers),
            "nbr_idx": nbr_idx,
            "nbr_dist": batch.nbr_dist,
            "crystal_idx": crystal_idx,
        }



def load_graphs(path: Any, trusted: bool = False) -> GraphBundle:
    """Read a graph file written by :func:`~skcgcnn.graph.save_graphs` (``skcgcnn
    featurize``); the format is that of :mod:`skcgcnn.graph._io`.

    Parameters
    ----------
    path : str or path-like
    trusted : bool, default=False
        Also read the old pickle graph files (format version 1).  Unpickling can run
        code, so only for files you made yourself.

    Returns
    -------
    GraphBundle

    Raises
    ------
    UntrustedGraphFileError
        For an old pickle graph file without ``trusted=True``.
    GraphFileError
        For anything else that is not an intact graph file.
    """
    from ._io import read_graphs

    return read_graphs(path, GraphCollection, trusted)
