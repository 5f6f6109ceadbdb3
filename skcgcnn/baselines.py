"""Descriptor baselines built from matminer featurizers, as scikit-learn Pipelines.

The pipelines made here take the same input as the CGCNN pipeline (a list, array or
:class:`pandas.Series` of pymatgen Structures) and the same targets, so that
:func:`skcgcnn.benchmark.run_benchmark` can compare them on identical folds.

Three baselines are available through :func:`make_baseline`:

``"magpie-rf"``
    Magpie composition statistics (``ElementProperty.from_preset("magpie")``, 132
    features) + median imputation + a random forest: the family of Matbench's
    RF-SCM/Magpie reference model.
``"structure-gb"``
    Magpie composition statistics plus structure descriptors (density, volume per atom and
    packing fraction; space group number, crystal system, centrosymmetry and number of
    symmetry operations; structural complexity; the largest eigenvalues of the sine
    Coulomb matrix) + histogram gradient boosting.
``"dummy"``
    The mean of the training targets.

This module needs matminer (``pip install 'skcgcnn[baselines]'``).
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from functools import partial
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from skcgcnn._featurizers import (
    ElementPropertyPreset,
    SineCoulombEigenvalues,
    _to_composition,
)
from skcgcnn._optional import require
from skcgcnn.structures import as_structures, describe, to_structure

# The whole module is about matminer: fail at import with the name of the extra.
_mm_base = require("matminer.featurizers.base")
BaseFeaturizer = _mm_base.BaseFeaturizer
MultipleFeaturizer = _mm_base.MultipleFeaturizer

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "ElementPropertyPreset",
    "MatminerFeaturizer",
    "SineCoulombEigenvalues",
    "make_baseline",
]

#: Names accepted by :func:`make_baseline`, with a one-line description.
BASELINES: dict[str, str] = {
    "magpie-rf": "magpie composition features + random forest",
    "structure-gb": "magpie + density, symmetry, complexity and sine Coulomb features "
    "+ histogram gradient boosting",
    "dummy": "mean of the training targets",
}

_INPUTS = ("structure", "composition")
_ON_ERROR = ("nan", "raise")

def _effective_n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs=0 is not allowed; use None or 1 (serial), k > 1 or -1 (all cores)")
    return int(n_jobs)


def _short_error(text: str) -> str:
    """Last non-empty line of a traceback string (the exception type and message)."""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else str(text)


class MatminerFeaturizer(TransformerMixin, BaseEstimator):
    """Compute matminer features of structures as a scikit-learn transformer.

    Each entry of ``X`` is converted to what the featurizers take (a Structure, or its
    Composition when ``input="composition"``) and featurized by every featurizer in turn;
    the feature vectors are concatenated into one float row.

    A failing entry does not stop the batch. With ``on_error="nan"`` (the default) the
    features of the featurizer that failed on it are NaN (impute them, or use a model that
    accepts NaN) and the failure is listed in :attr:`errors_`; with ``on_error="raise"`` the
    first failure raises a ``ValueError`` that names the structure.

    Parameters
    ----------
    featurizers : matminer featurizer or list of them
        For example ``[ElementProperty.from_preset("magpie")]``. They are cloned in ``fit``;
        the instances passed here are not changed.
    input : {"structure", "composition"}, default="structure"
        What the featurizers take. With ``"composition"``, structures are reduced to
        ``structure.composition`` (formula strings and Compositions are also accepted).
    n_jobs : int, default=None
        Worker processes for featurization (matminer's ``set_n_jobs`` and its
        ``multiprocessing.Pool``). None means 1, -1 all cores. Parallelism pays off for
        featurizers slower than a few milliseconds per structure.
    on_error : {"nan", "raise"}, default="nan"
        What a structure that cannot be featurized gives: NaN features, or an error.
    verbose : int, default=0
        Show a tqdm progress bar when > 0.

    Attributes
    ----------
    featurizers_ : list of matminer featurizers
        The fitted clones of ``featurizers``.
    feature_names_out_ : ndarray of str
        Labels of the output columns, from each featurizer's ``feature_labels()``.
    errors_ : list of (int, object, str)
        Failures of the last ``transform`` (or ``fit_transform``) call: position in ``X``, id
        (by :func:`skcgcnn.structures.as_structures`: the index label for a Series,
        ``structure.properties["id"]`` when every structure has one, else the position)
        and the error message, prefixed with the featurizer's name.
    failed_indices_ : ndarray of int
        Sorted positions in ``X`` of the last call's entries with at least one failure.

    Examples
    --------
    >>> from matminer.featurizers.composition import ElementProperty
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> feat = MatminerFeaturizer([ElementProperty.from_preset("magpie")], input="composition")
    >>> feat.fit_transform([nacl]).shape
    (1, 132)
    >>> feat.get_feature_names_out()[0]
    'MagpieData minimum Number'
    """

    def __init__(
        self,
        featurizers: Any,
        input: str = "structure",
        n_jobs: int | None = None,
        on_error: str = "nan",
        verbose: int = 0,
    ) -> None:
        self.featurizers = featurizers
        self.input = input
        self.n_jobs = n_jobs
        self.on_error = on_error
        self.verbose = verbose

    # -- validation -------------------------------------------------------------------
    def _featurizer_list(self) -> list[Any]:
        feats = self.featurizers
        if isinstance(feats, BaseFeaturizer):
            feats = [feats]
        if not isinstance(feats, (list, tuple)) or len(feats) == 0:
            raise ValueError(
                "featurizers must be a matminer featurizer or a non-empty list of them, "
                f"got {self.featurizers!r}"
            )
        for i, f in enumerate(feats):
            if not isinstance(f, BaseFeaturizer):
                raise TypeError(
                    f"featurizers[{i}] is a {type(f).__name__}, not a matminer featurizer "
                    "(a subclass of matminer.featurizers.base.BaseFeaturizer)"
                )
        return list(feats)

    def _validate_params(self) -> None:
        if self.input not in _INPUTS:
            raise ValueError(f"input={self.input!r} is not one of {_INPUTS}")
        if self.on_error not in _ON_ERROR:
            raise ValueError(f"on_error={self.on_error!r} is not one of {_ON_ERROR}")
        _effective_n_jobs(self.n_jobs)

    def _convert(self, items: list[Any], ids: list[Any]) -> tuple[list[Any], list[str | None]]:
        convert = (_to_composition if self.input == "composition"
                   else partial(to_structure, strict=True))
        converted: list[Any] = []
        messages: list[str | None] = []
        for i, x in enumerate(items):
            try:
                converted.append(convert(x, describe(i, ids[i])))
                messages.append(None)
            except Exception as exc:  # one bad entry must not stop the batch
                converted.append(None)
                messages.append(f"cannot read the entry: {type(exc).__name__}: {exc}")
        return converted, messages

    # -- scikit-learn API -------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> MatminerFeaturizer:
        """Clone and fit the featurizers (most need no fit) on the structures ``X``.

        Parameters
        ----------
        X : list, array or Series of Structures
            Training structures (ASE Atoms and CIF paths are converted).
        y : ignored

        Returns
        -------
        self : MatminerFeaturizer
        """
        self._validate_params()
        with warnings.catch_warnings():
            # matminer warns whenever an ElementProperty is cloned (see ElementPropertyPreset)
            warnings.filterwarnings("ignore", message="The data_source has been specified")
            featurizers = [clone(f) for f in self._featurizer_list()]
        items, ids = as_structures(X, parse=False)
        if len(items) == 0:
            raise ValueError("X is empty; fit needs at least one structure")
        if any(type(f).fit is not BaseFeaturizer.fit for f in featurizers):
            converted, _ = self._convert(items, ids)
            usable = [c for c in converted if c is not None]
            for f in featurizers:
                f.fit(usable)
        self.featurizers_ = featurizers
        labels: list[str] = []
        for f in featurizers:
            labels.extend(str(lab) for lab in f.feature_labels())
        if len(set(labels)) != len(labels):
            # Duplicates (same featurizer twice, say): make names unique by prefixing.
            labels = [
                f"{type(f).__name__}__{lab}" for f in featurizers for lab in f.feature_labels()
            ]
        self.feature_names_out_ = np.asarray(labels, dtype=object)
        self.errors_: list[tuple[int, Any, str]] = []
        self.failed_indices_ = np.zeros(0, dtype=int)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Featurize the structures ``X``.

        Parameters
        ----------
        X : list, array or Series of Structures

        Returns
        -------
        features : ndarray of shape (n_structures, n_features)
            NaN where a featurizer failed on a structure (see :attr:`errors_`).
        """
        check_is_fitted(self, "featurizers_")
        items, ids = as_structures(X, parse=False)
        n_features = len(self.feature_names_out_)
        out = np.full((len(items), n_features), np.nan)
        errors: list[tuple[int, Any, str]] = []
        if len(items) == 0:
            self.errors_ = errors
            self.failed_indices_ = np.zeros(0, dtype=int)
            return out

        converted, read_errors = self._convert(items, ids)
        for i, msg in enumerate(read_errors):
            if msg is not None:
                errors.append((i, ids[i], msg))
        ok = [i for i, c in enumerate(converted) if c is not None]

        n_jobs = _effective_n_jobs(self.n_jobs)
        multi = MultipleFeaturizer(self.featurizers_, iterate_over_entries=True)
        multi.set_n_jobs(n_jobs)
        widths = [len(f.feature_labels()) for f in self.featurizers_]
        batch_size = 256 * n_jobs
        from tqdm.auto import tqdm

        with tqdm(
            total=len(ok),
            desc=f"featurizing ({', '.join(map(_featurizer_name, self.featurizers_))})",
            unit="structure",
            disable=not self.verbose,
        ) as bar:
            for start in range(0, len(ok), batch_size):
                batch = ok[start : start + batch_size]
                # one task (and one fresh worker, matminer uses maxtasksperchild=1) per job
                multi.set_chunksize(max(1, math.ceil(len(batch) / n_jobs)))
                rows = multi.featurize_many(
                    [(converted[i],) for i in batch],
                    ignore_errors=True,
                    return_errors=True,
                    pbar=False,
                )
                for pos, row in zip(batch, rows):
                    self._fill_row(out, pos, ids[pos], row, widths, errors)
                bar.update(len(batch))

        errors.sort(key=lambda e: e[0])
        self.errors_ = errors
        self.failed_indices_ = np.array(sorted({e[0] for e in errors}), dtype=int)
        if errors:
            first = errors[0]
            if self.on_error == "raise":
                raise ValueError(
                    f"{describe(first[0], first[1])} could not be featurized: {first[2]}; "
                    f"({len(self.failed_indices_)} of {len(items)} structures failed) fix or "
                    "drop it, or pass on_error='nan' to get NaN features for it"
                )
            logger.warning(
                "%d of %d structures could not be featurized and have NaN features; "
                "the first: %s: %s (all are in errors_)",
                len(self.failed_indices_),
                len(items),
                describe(first[0], first[1]),
                first[2],
            )
        return out

    def _fill_row(
        self,
        out: np.ndarray,
        pos: int,
        id_: Any,
        row: list[Any],
        widths: list[int],
        errors: list[tuple[int, Any, str]],
    ) -> None:
        # matminer appends one error entry (NaN or a traceback string) per featurizer.
        col = 0
        k = 0
        for f, width in zip(self.featurizers_, widths):
            values = row[k : k + width]
            err = row[k + width]
            k += width + 1
            if isinstance(err, str):
                errors.append((pos, id_, f"{_featurizer_name(f)}: {_short_error(err)}"))
            else:
                try:
                    out[pos, col : col + width] = np.asarray(values, dtype=float)
                except (TypeError, ValueError) as exc:
                    bad = next(
                        (lab, v)
                        for lab, v in zip(f.feature_labels(), values)
                        if not _is_number(v)
                    )
                    raise TypeError(
                        f"{_featurizer_name(f)} returned the non-numeric feature {bad[0]!r} = "
                        f"{bad[1]!r} for {describe(pos, id_)}; choose numeric features "
                        "(e.g. its desired_features parameter)"
                    ) from exc
            col += width

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit the featurizers on ``X`` and featurize ``X``."""
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Labels of the output columns (matminer's ``feature_labels``).

        Parameters
        ----------
        input_features : ignored
            The input is structures, which have no feature names.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()


def _featurizer_name(f: Any) -> str:
    return type(f).__name__


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _check_params(estimator: BaseEstimator, params: dict[str, Any], name: str) -> None:
    valid = estimator.get_params(deep=False)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for baseline {name!r} "
            f"({type(estimator).__name__}); valid ones are: {sorted(valid)}"
        )


def make_baseline(
    name: str,
    *,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    verbose: int = 0,
    **params: Any,
):
    """Make a descriptor baseline Pipeline that takes structures and targets.

    Parameters
    ----------
    name : {"magpie-rf", "structure-gb", "dummy"}
        Which baseline (see :data:`BASELINES`):

        - ``"magpie-rf"``: ``MatminerFeaturizer([ElementPropertyPreset("magpie")])`` ->
          ``SimpleImputer(strategy="median")`` ->
          ``RandomForestRegressor(n_estimators=300, max_features=1/3, min_samples_leaf=1)``.
        - ``"structure-gb"``: ``MatminerFeaturizer([ElementPropertyPreset("magpie"),
          DensityFeatures, GlobalSymmetryFeatures (numeric ones),
          StructuralComplexity, SineCoulombEigenvalues(n_eigs=32)])`` ->
          ``HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05)``, which handles
          the NaN features of failed structures itself.
        - ``"dummy"``: ``DummyRegressor(strategy="mean")``.
    n_jobs : int, default=None
        Processes for featurization and trees for the random forest (None: 1, -1: all).
    random_state : int or None, default=0
        Seed of the model.
    verbose : int, default=0
        Show featurization progress bars when > 0.
    **params
        Parameters of the final regressor, overriding the defaults above (for example
        ``n_estimators=100`` for ``"magpie-rf"``, ``max_iter=200`` for ``"structure-gb"``).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps ``"featurize"``, (``"impute"``,) ``"model"``; ``"dummy"`` has only ``"model"``.

    Examples
    --------
    >>> model = make_baseline("magpie-rf", n_estimators=50, n_jobs=2)
    >>> [name for name, _ in model.steps]
    ['featurize', 'impute', 'model']
    """
    from sklearn.dummy import DummyRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if name not in BASELINES:
        raise ValueError(
            f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}"
        )

    if name == "dummy":
        model = DummyRegressor(strategy="mean")
        _check_params(model, params, name)
        model.set_params(**params)
        return Pipeline([("model", model)])

    if name == "magpie-rf":
        model = RandomForestRegressor(
            n_estimators=300,
            max_features=1 / 3,
            n_jobs=n_jobs,
            random_state=random_state,
        )
        _check_params(model, params, name)
        model.set_params(**params)
        featurize = MatminerFeaturizer(
            [ElementPropertyPreset("magpie")],
            n_jobs=n_jobs,
            verbose=verbose,
        )
        return Pipeline(
            [
                ("featurize", featurize),
                ("impute", SimpleImputer(strategy="median")),
                ("model", model),
            ]
        )

    # name == "structure-gb"
    structure = require("matminer.featurizers.structure")
    model = HistGradientBoostingRegressor(
        max_iter=500, learning_rate=0.05, random_state=random_state
    )
    _check_params(model, params, name)
    model.set_params(**params)
    featurize = MatminerFeaturizer(
        [
            ElementPropertyPreset("magpie"),
            structure.DensityFeatures(),
            structure.GlobalSymmetryFeatures(
                desired_features=[
                    "spacegroup_num",
                    "crystal_system_int",
                    "is_centrosymmetric",
                    "n_symmetry_ops",
                ]
            ),
            structure.StructuralComplexity(),
            SineCoulombEigenvalues(n_eigs=32),
        ],
        input="structure",
        n_jobs=n_jobs,
        verbose=verbose,
    )
    return Pipeline([("featurize", featurize), ("model", model)])
