"""StructureGraphTransformer: pymatgen Structures -> CGCNN crystal graphs."""
from __future__ import annotations

import gc
import logging
import mmap
import multiprocessing
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._text import shorten
from .atom_features import get_atom_features
from .graph import (FewNeighborsWarning, GraphCollection, StructureError, graph_from_arrays,
                    structure_arrays)

logger = logging.getLogger(__name__)

_ON_ERROR = ("raise", "skip")


def _describe(index: int, ident: Any) -> str:
    if ident is None or (isinstance(ident, (int, np.integer)) and ident == index):
        return f"structure {index}"
    return f"structure {index} ({ident})"


def _is_ase_atoms(obj: Any) -> bool:
    try:
        from ase import Atoms
    except ImportError:
        return False
    return isinstance(obj, Atoms)


def to_structure(obj: Any, name: str = "structure"):
    """A pymatgen Structure from a Structure, an ASE Atoms or a CIF file path."""
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.exists(path):
            if isinstance(path, str) and ("\n" in path or path.lstrip().startswith("data_")):
                raise StructureError(
                    f"{name} is text, not a file path: {shorten(path)}; parse CIF text "
                    "first with pymatgen's Structure.from_str(text, fmt='cif') or pass the "
                    "file's path")
            raise StructureError(f"{name}: no such file {shorten(path)}; pass a Structure or "
                                 "the path of a CIF file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Structure.from_file(path)
        except Exception as exc:  # pymatgen raises many kinds
            raise StructureError(f"{name}: cannot read {shorten(path)} as a structure "
                                 f"({shorten(str(exc), 200)}); fix the file or pass "
                                 "on_error='skip'") from exc
    if _is_ase_atoms(obj):
        from pymatgen.io.ase import AseAtomsAdaptor

        if not all(obj.pbc):
            raise StructureError(
                f"{name} is an ASE Atoms without periodic boundaries (pbc={obj.pbc}); "
                "CGCNN needs a 3D-periodic cell: set a cell and pbc=True")
        return AseAtomsAdaptor.get_structure(obj)
    return obj  # structure_arrays names what is wrong with it


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
        if parts:
            numbers = np.concatenate([p[0] for p in parts]).astype(np.int16, copy=False)
            nbr_idx = np.concatenate([p[1] for p in parts])
            nbr_dist = np.concatenate([p[2] for p in parts])
        else:
            numbers = np.zeros(0, dtype=np.int16)
            nbr_idx = np.zeros((0, max_num_nbr), dtype=np.int32)
            nbr_dist = np.zeros((0, max_num_nbr), dtype=np.float32)
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


def _no_structures(method: str) -> str:
    return (f"Found array with 0 sample(s): no structures given to "
            f"StructureGraphTransformer.{method}; pass at least one Structure, ASE Atoms "
            "or CIF path")


class StructureGraphTransformer(TransformerMixin, BaseEstimator):
    """Turn crystal structures into CGCNN crystal graphs.

    Each atom is joined to its ``max_num_nbr`` nearest neighbours within ``radius``
    under periodic boundary conditions, as in the original CGCNN (Xie & Grossman,
    2018).  The graphs keep neighbour indices and distances; the Gaussian expansion
    of the distances (centres ``arange(dmin, radius + step, step)``, width ``step``)
    happens inside the model.

    Parameters
    ----------
    radius : float, default=8.0
        Neighbour cut-off radius in Å.
    max_num_nbr : int, default=12
        Neighbours kept per atom.  An atom with fewer neighbours inside ``radius``
        keeps the ones it has (the rest are masked, not padded with atom 0) and a
        :class:`~skcgcnn.graph.FewNeighborsWarning` suggests a larger radius.
    dmin : float, default=0.0
        Smallest centre of the Gaussian distance expansion, in Å.
    step : float, default=0.2
        Spacing (and width) of the Gaussian distance expansion, in Å.
    atom_features : str, tuple of str, mapping or path, default="cgcnn"
        Atom-feature set, see :func:`skcgcnn.atom_features.get_atom_features`.
    n_jobs : int, default=None
        Worker processes (None or 1: this process; -1: all cores).  Workers are
        forked, so the structures reach them without pickling; where the platform
        cannot fork, the work stays in this process.
    on_error : {"raise", "skip"}, default="raise"
        What to do with a structure that cannot be turned into a graph.  With
        ``"skip"`` it is left out of the output and listed in ``errors_``; the
        positions that were kept are in ``kept_indices_`` and in the output's
        ``input_positions``.  So in a Pipeline the estimator stays aligned with the
        input: ``fit`` drops the matching rows of y, ``predict`` of
        :class:`~skcgcnn.estimators.CGCNNRegressor` answers NaN for the skipped
        structures (one row per input), ``predict_proba`` of
        :class:`~skcgcnn.estimators.CGCNNClassifier` NaN rows, and its ``predict``
        (which has no NaN label) refuses with an error naming them.
    verbose : int, default=0
        Show a progress bar when > 0.

    Attributes
    ----------
    atom_features_ : AtomFeatureTable
        The resolved atom-feature table.
    n_atom_features_ : int
        Its width.
    errors_ : list of (int, object, str)
        Position, id and reason of every structure left out by the last ``transform``.
    kept_indices_ : ndarray of int
        Positions of the structures present in the last ``transform``'s output.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = StructureGraphTransformer().fit_transform([nacl])
    >>> len(graphs), graphs.nbr_idx.shape
    (1, (8, 12))

    References
    ----------
    T. Xie and J. C. Grossman, "Crystal Graph Convolutional Neural Networks for an
    Accurate and Interpretable Prediction of Material Properties", Phys. Rev. Lett.
    120, 145301 (2018).
    """

    def __init__(self, radius: float = 8.0, max_num_nbr: int = 12, dmin: float = 0.0,
                 step: float = 0.2, atom_features: Any = "cgcnn", n_jobs: int | None = None,
                 on_error: str = "raise", verbose: int = 0):
        self.radius = radius
        self.max_num_nbr = max_num_nbr
        self.dmin = dmin
        self.step = step
        self.atom_features = atom_features
        self.n_jobs = n_jobs
        self.on_error = on_error
        self.verbose = verbose

    # -- scikit-learn API -------------------------------------------------------------
    def _validate(self) -> None:
        if not (isinstance(self.radius, (int, float)) and self.radius > 0):
            raise ValueError(f"radius must be a positive number of Å, got {self.radius!r}")
        if not (isinstance(self.max_num_nbr, (int, np.integer)) and self.max_num_nbr >= 1):
            raise ValueError(f"max_num_nbr must be an integer >= 1, got {self.max_num_nbr!r}")
        if not (isinstance(self.step, (int, float)) and self.step > 0):
            raise ValueError(f"step must be a positive number of Å, got {self.step!r}")
        if not (isinstance(self.dmin, (int, float)) and 0 <= self.dmin < self.radius):
            raise ValueError(f"dmin must be in [0, radius), got {self.dmin!r}")
        if self.on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {self.on_error!r}")

    def fit(self, X: Any = None, y: Any = None) -> "StructureGraphTransformer":
        """Check the parameters and resolve the atom-feature table (learns nothing from X).

        ``X`` may be None; when given, it must hold at least one structure.
        """
        self._validate()
        if X is not None and hasattr(X, "__len__") and len(X) == 0:
            raise ValueError(_no_structures("fit"))
        self.atom_features_ = get_atom_features(self.atom_features)
        self.n_atom_features_ = self.atom_features_.n_features
        return self

    def transform(self, X: Any) -> GraphCollection:
        """Build the crystal graphs of ``X``.

        Parameters
        ----------
        X : list, ndarray or pandas Series of Structure, ASE Atoms or CIF paths
            A pandas Series (or DataFrame with a ``structure`` column) gives its index
            as the graphs' ids.

        Returns
        -------
        GraphCollection
        """
        check_is_fitted(self, "atom_features_")
        items, ids = self._as_items(X)
        if not items:
            raise ValueError(_no_structures("transform"))
        names = [_describe(pos, ident) for pos, ident in enumerate(ids)]
        self.errors_: list[tuple[int, Any, str]] = []
        nbr = int(self.max_num_nbr)
        sizes = _known_sizes(items)
        n_jobs = min(self._n_jobs(), max(1, len(items) // 64))
        forked = n_jobs > 1 and "fork" in multiprocessing.get_all_start_methods()
        out = None if sizes is None else _Output(sizes, nbr, shared=forked)
        blocks = []
        for block in self._build(items, names, sizes, out, n_jobs if forked else 1):
            for pos, kind, message in block.events:
                if kind == "error":
                    self._fail(pos, ids[pos], message)
                else:
                    warnings.warn(message, FewNeighborsWarning, stacklevel=2)
            blocks.append(block)
        kept = (np.concatenate([b.kept for b in blocks]) if blocks
                else np.zeros(0, dtype=np.int64))
        self.kept_indices_ = kept
        if self.errors_:
            logger.warning("%d of %d structures were skipped; see errors_",
                           len(self.errors_), len(items))
        params = dict(radius=float(self.radius), max_num_nbr=nbr, dmin=float(self.dmin),
                      step=float(self.step), atom_features=self.atom_features_)
        id_arr = np.empty(len(items), dtype=object)
        id_arr[:] = ids
        if out is not None:
            graphs = GraphCollection(out.atom_ptr, out.numbers, out.nbr_idx, out.nbr_dist,
                                     id_arr, **params)
            # the rows of failed structures were never written: leave them out
            return graphs if len(kept) == len(items) else self._aligned(graphs[kept], kept,
                                                                       len(items))
        sizes = np.concatenate([b.sizes for b in blocks] or [np.zeros(0, dtype=np.int64)])
        atom_ptr = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=atom_ptr[1:])
        graphs = GraphCollection(
            atom_ptr,
            np.concatenate([b.numbers for b in blocks] or [np.zeros(0, dtype=np.int16)]),
            np.concatenate([b.nbr_idx for b in blocks]
                           or [np.zeros((0, nbr), dtype=np.int32)]),
            np.concatenate([b.nbr_dist for b in blocks]
                           or [np.zeros((0, nbr), dtype=np.float32)]),
            id_arr[kept], **params)
        return graphs if len(kept) == len(items) else self._aligned(graphs, kept, len(items))

    @staticmethod
    def _aligned(graphs: GraphCollection, kept: np.ndarray, n_inputs: int) -> GraphCollection:
        """Mark which inputs the graphs belong to, so that the estimators after this
        transformer in a Pipeline keep their rows aligned with the input."""
        graphs.input_positions = np.asarray(kept, dtype=np.int64)
        graphs.n_inputs = int(n_inputs)
        return graphs

    # -- helpers ----------------------------------------------------------------------
    def _fail(self, pos: int, ident: Any, message: str) -> None:
        if self.on_error == "raise":
            raise StructureError(message)
        self.errors_.append((pos, ident, message))

    @staticmethod
    def _as_items(X: Any) -> tuple[list, list]:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas comes with scikit-learn users
            pd = None
        if pd is not None and isinstance(X, pd.DataFrame):
            if "structure" not in X.columns:
                raise ValueError("a DataFrame passed to StructureGraphTransformer needs a "
                                 "'structure' column")
            X = X["structure"]
        if pd is not None and isinstance(X, pd.Series):
            return list(X.values), list(X.index)
        if isinstance(X, GraphCollection):
            raise TypeError("X is already a GraphCollection; pass it to the estimator "
                            "directly, without StructureGraphTransformer")
        if hasattr(X, "lattice") or isinstance(X, (str, os.PathLike)):
            raise TypeError("X must be a sequence of structures; wrap a single structure "
                            "in a list")
        if not isinstance(X, Iterable):
            raise TypeError(f"X must be a sequence of structures, got {type(X).__name__}")
        items = list(X.ravel()) if isinstance(X, np.ndarray) else list(X)
        return items, list(range(len(items)))

    def _n_jobs(self) -> int:
        n_jobs = self.n_jobs if self.n_jobs is not None else 1
        if n_jobs < 0:
            n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        return n_jobs

    def _build(self, items: list, names: list, sizes: np.ndarray | None,
               out: _Output | None, n_jobs: int):
        """Yield :class:`_Block` s covering all positions, in input order."""
        job = (items, names, self.atom_features_, float(self.radius), int(self.max_num_nbr),
               out)
        progress = None
        if self.verbose:
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
            global _FORK_JOB
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

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "atom_features_")
        return np.asarray(self.atom_features_.feature_names, dtype=object)

    def citations(self) -> list[str]:
        return [
            "@article{xie2018crystal, title={Crystal Graph Convolutional Neural Networks "
            "for an Accurate and Interpretable Prediction of Material Properties}, "
            "author={Xie, Tian and Grossman, Jeffrey C.}, journal={Physical Review "
            "Letters}, volume={120}, number={14}, pages={145301}, year={2018}, "
            "doi={10.1103/PhysRevLett.120.145301}}"
        ]

    def implementors(self) -> list[str]:
        return ["skcgcnn developers"]
