"""CGCNNEnsembleRegressor: a deep ensemble of CGCNNRegressors with a predictive spread."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch, check_random_state

from ..graph import GraphCollection
from ._checks import _InputChecks
from ._domain import _DomainHooks
from ._regressor import CGCNNRegressor

logger = logging.getLogger(__name__)

__all__ = ["CGCNNEnsembleRegressor"]

_OWN_PARAMS = ("n_estimators", "bootstrap", "n_jobs", "random_state", "domain")


def _fit_member(params: dict, seed: int, X: GraphCollection, y: np.ndarray,
                sample_weight: np.ndarray | None) -> CGCNNRegressor:
    """One member, fitted (run in a joblib worker)."""
    member = CGCNNRegressor(**params, random_state=seed)
    return member.fit(X, y, sample_weight=sample_weight)


class CGCNNEnsembleRegressor(_DomainHooks, _InputChecks, RegressorMixin, BaseEstimator):
    """A deep ensemble of :class:`CGCNNRegressor` networks (Lakshminarayanan et al. 2017).

    ``n_estimators`` CGCNNs are trained on the same graphs from different random
    seeds (weight initialisation and batch order), optionally each on a bootstrap
    sample of the rows.  ``predict`` answers their mean, and with ``return_std=True``
    also their standard deviation, as scikit-learn's ``GaussianProcessRegressor`` and
    ``BayesianRidge`` do.  The spread is the members' disagreement (an epistemic
    uncertainty): it is not calibrated; wrap a fitted ensemble in MAPIE's
    ``SplitConformalRegressor`` for intervals with a coverage guarantee (see
    ``docs/uncertainty.md``).  With ``loss="gaussian_nll"`` every member also predicts
    a variance (a mean-variance head), and the std is that of the members' Gaussian
    mixture, ``sqrt(var of the means + mean of the variances)`` (Lakshminarayanan et
    al. 2017); :meth:`predict_uncertainty` gives both parts.

    X is the :class:`~skcgcnn.graph.GraphCollection` made by
    :class:`~skcgcnn.transformers.StructureGraphTransformer`, as for
    :class:`CGCNNRegressor`.

    Parameters
    ----------
    n_estimators : int, default=5
        Number of networks.
    bootstrap : bool, default=False
        Train each member on a bootstrap sample of the rows (drawn with replacement,
        as many as there are rows), passed as integer ``sample_weight`` counts.  Deep
        ensembles usually do better without (every member sees every row).
    n_jobs : int or None, default=None
        Members trained in parallel processes (joblib): None is one at a time, -1
        every core.  Each process then runs torch with fewer threads.
    random_state : int, RandomState instance or None, default=None
        Draws one seed per member (and the bootstrap samples).  Members always get
        different seeds, also with None.
    domain : {None, "knn"} or ApplicabilityDomain, default=None
        Fit an applicability domain on the training crystals' embeddings (the members'
        side by side) after ``fit`` (``domain_``); ``predict`` then warns
        (``OutsideDomainWarning``) about crystals outside it, and
        ``return_domain=True`` also answers each crystal's distance.
    **member_params
        Any :class:`CGCNNRegressor` parameter (``max_epochs``, ``lr``,
        ``module__n_conv``, ``lr_schedule``, ...), the same for every member.  What
        is not given takes CGCNNRegressor's default.  They are parameters of the
        ensemble: ``get_params``, ``set_params`` and ``GridSearchCV`` see them.

    Attributes
    ----------
    estimators_ : list of CGCNNRegressor
        The fitted members.
    seeds_ : ndarray of shape (n_estimators,)
        The ``random_state`` of each member.
    n_outputs_ : int
    graph_params_ : dict
        The graph settings of ``fit``'s graphs; ``predict`` refuses graphs built
        otherwise.
    domain_ : ApplicabilityDomain
        Only with ``domain``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import StructureGraphTransformer, CGCNNEnsembleRegressor
    >>> pipe = make_pipeline(StructureGraphTransformer(),
    ...                      CGCNNEnsembleRegressor(n_estimators=5, max_epochs=50))
    >>> pipe.fit(structures, formation_energies)                    # doctest: +SKIP
    >>> mean, std = pipe.predict(new_structures, return_std=True)   # doctest: +SKIP

    References
    ----------
    B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and scalable predictive
    uncertainty estimation using deep ensembles", NeurIPS 2017.
    """

    def __init__(self, n_estimators: int = 5, *, bootstrap: bool = False,
                 n_jobs: int | None = None, random_state: Any = None,
                 domain: Any = None, **member_params: Any) -> None:
        self.n_estimators = n_estimators
        self.bootstrap = bootstrap
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.domain = domain
        for key, value in member_params.items():
            setattr(self, key, value)

    # -- parameters: the ensemble's own and its members' -----------------------------
    def _member_params(self) -> dict:
        """The member parameters given: every public attribute that is neither the
        ensemble's own parameter nor learned by fit (those end in ``_``)."""
        return {key: value for key, value in vars(self).items()
                if key not in _OWN_PARAMS and not key.startswith("_")
                and not key.endswith("_")}

    def get_params(self, deep: bool = True) -> dict:
        """The ensemble's parameters and the member parameters given to it."""
        params = {key: getattr(self, key) for key in _OWN_PARAMS}
        params.update(self._member_params())
        return params

    def set_params(self, **params: Any) -> CGCNNEnsembleRegressor:
        """Set ensemble or member parameters (any CGCNNRegressor parameter, such as
        ``module__n_conv``; it is checked when the members are built in ``fit``)."""
        for key, value in params.items():
            if key.endswith("_") or key.startswith("_"):
                raise ValueError(f"{key!r} is not a parameter of CGCNNEnsembleRegressor "
                                 "(names ending or starting in '_' are fitted or private)")
            setattr(self, key, value)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a GraphCollection, as CGCNNRegressor
        tags.target_tags.multi_output = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "estimators_")

    def _require_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("This CGCNNEnsembleRegressor instance is not fitted yet; "
                                 "call fit first")

    # -- fit / predict ----------------------------------------------------------------
    def fit(self, X: GraphCollection, y: Any, sample_weight: Any = None
            ) -> CGCNNEnsembleRegressor:
        """Fit ``n_estimators`` CGCNNRegressors on graphs X and targets y.

        ``sample_weight`` (one per crystal) is passed to every member (times the
        bootstrap counts with ``bootstrap=True``).
        """
        if isinstance(self.n_estimators, bool) or not isinstance(
                self.n_estimators, (int, np.integer)) or self.n_estimators < 1:
            raise ValueError(f"n_estimators must be an int >= 1, got {self.n_estimators!r}")
        if not isinstance(self.bootstrap, (bool, np.bool_)):
            raise ValueError(f"bootstrap must be True or False, got {self.bootstrap!r}")
        params = self._member_params()
        X = self._check_X(X)
        y = self._check_y(X, y)
        rng = check_random_state(self.random_state)
        seeds = rng.randint(0, 2 ** 31 - 1, size=self.n_estimators)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=float)
            if sample_weight.ndim == 1 and len(sample_weight) != len(X) \
                    and X.input_positions is not None and len(sample_weight) == X.n_inputs:
                # one weight per input structure, as y: those of the structures with a graph
                sample_weight = sample_weight[X.input_positions]
        weights = []
        for _ in range(self.n_estimators):
            w = sample_weight
            if self.bootstrap:
                counts = np.bincount(rng.randint(0, len(X), size=len(X)),
                                     minlength=len(X)).astype(float)
                w = counts if w is None else w * counts
            weights.append(w)
        logger.info("fitting %d CGCNN members (n_jobs=%s)", self.n_estimators, self.n_jobs)
        self.estimators_ = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_member)(params, int(seed), X, y, w)
            for seed, w in zip(seeds, weights))
        self.seeds_ = seeds
        first = self.estimators_[0]
        self.n_outputs_ = first.n_outputs_
        self.graph_params_ = dict(first.graph_params_)
        self._fit_domain(X)
        return self

    def predict_members(self, X: GraphCollection) -> np.ndarray:
        """Every member's predictions: shape (n_estimators, n) for 1-D y, else
        (n_estimators, n, n_targets); NaN rows as in ``CGCNNRegressor.predict``."""
        self._require_fitted()
        return np.stack([member.predict(X) for member in self.estimators_])

    def predict(self, X: GraphCollection, return_std: bool = False,
                return_domain: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
        """The members' mean prediction, and with ``return_std`` their standard deviation.

        With a ``domain``, crystals outside it raise an ``OutsideDomainWarning``, and
        ``return_domain=True`` appends each crystal's distance to the answer.

        Returns
        -------
        y_mean : ndarray of shape (n,) or (n, n_targets)
        y_std : ndarray of the same shape, only with ``return_std=True``
            The standard deviation over the members (divided by ``n_estimators``),
            0 for a single member; with members fitted with ``loss="gaussian_nll"``
            the total ``sqrt(epistemic_std ** 2 + aleatoric_std ** 2)`` of
            :meth:`predict_uncertainty`.
        distance : ndarray of shape (n,), only with ``return_domain=True``
            Mean embedding distance to the nearest training crystals.
        """
        if not return_std:
            out = self.predict_members(X).mean(axis=0)
        else:
            parts = self.predict_uncertainty(X)
            out = (parts.mean, parts.std)
        return self._predict_domain(X, out, return_domain)

    def _has_variance_head(self) -> bool:
        """Whether every member answers a variance beside its mean (False unfitted)."""
        members = getattr(self, "estimators_", [])
        return bool(members) and all(member._has_variance_head() for member in members)

    def predict_uncertainty(self, X: GraphCollection) -> Bunch:
        """The mean prediction and its standard deviation in two parts.

        With members of variance heads (``loss="gaussian_nll"``), the prediction is
        the mixture of their Gaussians ``N(mu_m, sigma_m^2)``: its mean is the mean of
        the ``mu_m``, its variance ``var_m(mu_m) + mean_m(sigma_m^2)``, the
        disagreement of the members (epistemic) plus the noise they predict
        (aleatoric).

        Returns
        -------
        result : sklearn.utils.Bunch
            ``mean``, ``std``, ``epistemic_std`` (the std of the members' means,
            ``ddof=0``) and ``aleatoric_std`` (the root of the members' mean
            variance), arrays of shape (n,) or (n, n_targets) in the target's units.
            Without variance heads ``aleatoric_std`` is None and ``std`` equals
            ``epistemic_std``.
        """
        self._require_fitted()
        if not self._has_variance_head():
            members = self.predict_members(X)
            epistemic = members.std(axis=0)
            return Bunch(mean=members.mean(axis=0), std=epistemic, epistemic_std=epistemic,
                         aleatoric_std=None)
        outputs = [member.predict(X, return_std=True) for member in self.estimators_]
        means = np.stack([mean for mean, _ in outputs])
        aleatoric_var = np.stack([std ** 2 for _, std in outputs]).mean(axis=0)
        epistemic = means.std(axis=0)
        return Bunch(mean=means.mean(axis=0),
                     std=np.sqrt(epistemic ** 2 + aleatoric_var),
                     epistemic_std=epistemic, aleatoric_std=np.sqrt(aleatoric_var))

    def predict_crystal_features(self, X: GraphCollection) -> np.ndarray:
        """Every member's pooled crystal features side by side, shape
        (n, n_estimators * F)."""
        self._require_fitted()
        return np.hstack([member.predict_crystal_features(X) for member in self.estimators_])

    def score(self, X: GraphCollection, y: Any, sample_weight: Any = None) -> float:
        """R² of the mean prediction (refused for structures a transformer skipped)."""
        self._refuse_skipped(X, "score")
        return super().score(X, y, sample_weight=sample_weight)
