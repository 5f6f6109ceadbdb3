"""StructureGraphTransformer: pymatgen Structures -> CGCNN crystal graphs."""
from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

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
            raise StructureError(f"{name}: no such file {path!r}; pass a Structure or the "
                                 "path of a CIF file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Structure.from_file(path)
        except Exception as exc:  # pymatgen raises many kinds
            raise StructureError(f"{name}: cannot read {path!r} as a structure ({exc}); "
                                 "fix the file or pass on_error='skip'") from exc
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


def _run(positions: Iterable[int], items: list, names: list, table: Any, radius: float,
         max_num_nbr: int) -> list:
    out = []
    for pos in positions:
        try:
            out.append((pos, _graph_of(items[pos], names[pos], table, radius, max_num_nbr),
                        None))
        except StructureError as exc:
            out.append((pos, None, str(exc)))
    return out


# the inputs of a parallel transform, inherited by forked workers (never pickled)
_FORK_JOB: tuple | None = None


def _run_forked(bounds: tuple[int, int]) -> list:
    items, names, table, radius, max_num_nbr = _FORK_JOB
    return _run(range(*bounds), items, names, table, radius, max_num_nbr)


def _chunks(sizes: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Split positions into contiguous ranges of about ``target`` atoms."""
    bounds, lo, atoms = [], 0, 0
    for pos, size in enumerate(sizes):
        atoms += int(size)
        if atoms >= target:
            bounds.append((lo, pos + 1))
            lo, atoms = pos + 1, 0
    if lo < len(sizes):
        bounds.append((lo, len(sizes)))
    return bounds


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
        positions that were kept are in ``kept_indices_``.
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
        """Check the parameters and resolve the atom-feature table (learns nothing from X)."""
        self._validate()
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
        names = [_describe(pos, ident) for pos, ident in enumerate(ids)]
        self.errors_: list[tuple[int, Any, str]] = []
        graphs, kept = [], []
        for pos, graph, error in self._build(items, names):
            if error is not None:
                self._fail(pos, ids[pos], error)
                continue
            numbers, nbr_idx, nbr_dist, note = graph
            if note:
                warnings.warn(note, FewNeighborsWarning, stacklevel=2)
            graphs.append((numbers, nbr_idx, nbr_dist))
            kept.append(pos)
        self.kept_indices_ = np.asarray(kept, dtype=np.int64)
        if self.errors_:
            logger.warning("%d of %d structures were skipped; see errors_",
                           len(self.errors_), len(items))
        return GraphCollection.from_graphs(
            graphs, ids=[ids[p] for p in kept], radius=float(self.radius),
            max_num_nbr=int(self.max_num_nbr), dmin=float(self.dmin),
            step=float(self.step), atom_features=self.atom_features_)

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

    def _build(self, items: list, names: list):
        """Yield ``(position, graph or None, error or None)`` in input order."""
        radius, nbr, table = float(self.radius), int(self.max_num_nbr), self.atom_features_
        n_jobs = min(self._n_jobs(), max(1, len(items) // 64))
        progress = None
        if self.verbose:
            from tqdm.auto import tqdm
            progress = tqdm(total=len(items), desc="structures", unit="struct")
        if n_jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():
            step = 256
            for lo in range(0, len(items), step):
                yield from _run(range(lo, min(lo + step, len(items))), items, names, table,
                                radius, nbr)
                if progress is not None:
                    progress.update(min(step, len(items) - lo))
        else:
            # forked workers read the inputs from memory they share with this process:
            # nothing is pickled on the way in, only the compact graphs come back
            global _FORK_JOB
            sizes = np.array([len(obj) if hasattr(obj, "sites") else 20 for obj in items])
            bounds = _chunks(sizes, target=max(2000, int(sizes.sum()) // (n_jobs * 16)))
            _FORK_JOB = (items, names, table, radius, nbr)
            try:
                with multiprocessing.get_context("fork").Pool(n_jobs) as pool:
                    for part in pool.imap(_run_forked, bounds):
                        yield from part
                        if progress is not None:
                            progress.update(len(part))
            finally:
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
