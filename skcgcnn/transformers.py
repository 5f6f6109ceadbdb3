"""StructureGraphTransformer: pymatgen Structures -> CGCNN crystal graphs.

The scikit-learn face of :mod:`skcgcnn.graph`: the neighbour search and the parallel
map over structures live there, input conversion in :mod:`skcgcnn.structures`.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._defaults import DMIN, MAX_NUM_NBR, RADIUS, STEP
from .atom_features import get_atom_features
from .graph import FewNeighborsWarning, GraphCollection, build_graphs
from .structures import StructureError, as_structures, describe
from .structures import to_structure  # noqa: F401 (importable from here as before)

logger = logging.getLogger(__name__)

_ON_ERROR = ("raise", "skip")


def _no_structures(method: str) -> str:
    return (f"Found array with 0 sample(s): no structures given to "
            f"StructureGraphTransformer.{method}; pass at least one Structure, ASE Atoms "
            "or CIF path")


class StructureGraphTransformer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
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

    def __init__(self, radius: float = RADIUS, max_num_nbr: int = MAX_NUM_NBR,
                 dmin: float = DMIN, step: float = STEP, atom_features: Any = "cgcnn",
                 n_jobs: int | None = None,
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
    def __sklearn_tags__(self):
        """X is a 1-D sequence of structures (or of CIF paths: strings), not a 2-D
        array, and the output is a GraphCollection, not an array of some dtype."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

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
            The graphs' ids follow :func:`skcgcnn.structures.as_structures`: a pandas
            Series (or DataFrame with a ``structure`` column) gives its index,
            structures that all carry ``properties["id"]`` give those, else the
            positions.

        Returns
        -------
        GraphCollection
        """
        check_is_fitted(self, "atom_features_")
        items, ids = as_structures(X, parse=False)
        if not items:
            raise ValueError(_no_structures("transform"))
        names = [describe(pos, ident) for pos, ident in enumerate(ids)]
        self.errors_: list[tuple[int, Any, str]] = []

        def on_event(pos: int, kind: str, message: str) -> None:
            if kind == "error":
                self._fail(pos, ids[pos], message)
            else:  # stacklevel: on_event, build_graphs, transform, its caller
                warnings.warn(message, FewNeighborsWarning, stacklevel=4)

        id_arr = np.empty(len(items), dtype=object)
        id_arr[:] = ids
        graphs, kept = build_graphs(items, names, id_arr, self.atom_features_,
                                    self.radius, self.max_num_nbr, self.dmin, self.step,
                                    n_jobs=self.n_jobs, verbose=self.verbose,
                                    on_event=on_event)
        self.kept_indices_ = kept
        if self.errors_:
            logger.warning("%d of %d structures were skipped; see errors_",
                           len(self.errors_), len(items))
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
