"""ApplicabilityDomain: how far a crystal lies from the training data, in embedding space.

The score of a crystal is the mean distance from its crystal embedding (see
:class:`~skcgcnn.CGCNNEmbedder`) to the embeddings of its ``n_neighbors`` nearest
training crystals; the threshold is the ``quantile`` of the training rows' own scores,
each taken without the row itself.  Method names and signs follow scikit-learn's
novelty detectors (``LocalOutlierFactor(novelty=True)``, ``IsolationForest``).

The regressors build one during ``fit`` with ``domain="knn"`` (``_DomainHooks``):
``predict(X, return_domain=True)`` then also answers each crystal's distance, and
``predict`` warns (:class:`OutsideDomainWarning`) about crystals outside.

The domain works on features: an array, or what a fitted transformer (such as
:class:`~skcgcnn.CGCNNEmbedder`) makes of X.  It knows no network class, so that the
estimators can import it.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["ApplicabilityDomain", "OutsideDomainWarning"]


class OutsideDomainWarning(UserWarning):
    """``predict`` met crystals outside the model's applicability domain: their
    embeddings lie farther from the training crystals than the calibrated threshold, so
    their predictions are extrapolations and less trustworthy than the test error says."""


class ApplicabilityDomain(OutlierMixin, BaseEstimator):
    """An applicability domain: the k-nearest-neighbour distance to the training crystals.

    ``fit(X)`` embeds the training crystals (through ``estimator``, when given),
    standardises the embeddings (``scale=True``) and indexes them with scikit-learn's
    ``NearestNeighbors``.  The *distance* of a crystal is the mean Euclidean distance to
    its ``n_neighbors`` nearest training crystals.  Each training row's own distance is
    taken without itself (``NearestNeighbors.kneighbors()`` with no query), and
    ``threshold_`` is their ``quantile``: the ``ceil(quantile * n)``-th smallest, so that
    exactly ``ceil(quantile * n)`` of the n training rows lie at or below it (when no
    two tie at it).  A crystal is inside the domain when its distance is at or below
    ``threshold_``.

    Signs and names follow scikit-learn's novelty detectors
    (``LocalOutlierFactor(novelty=True)``): ``score_samples`` is the *negated*
    distance (higher is more typical), ``decision_function`` is
    ``score_samples - offset_`` with ``offset_ = -threshold_`` (>= 0 inside), and
    ``predict`` answers +1 inside and -1 outside.  ``distance(X)`` gives the distance
    itself.  As for LOF, scoring the training rows again counts each row as its own
    neighbour (distance 0): their leave-self-out distances are ``train_distances_``.

    Parameters
    ----------
    estimator : transformer or None, default=None
        What maps X to features: a transformer, cloned and fitted on the training X
        (``estimator_``), whose ``transform`` gives the embeddings, such as
        ``CGCNNEmbedder(network)`` (X: graphs) or a Pipeline ending in one (X:
        structures, ``make_pipeline(StructureGraphTransformer(), CGCNNEmbedder(network))``).
        A CGCNNEmbedder trains nothing and its clone keeps the fitted network.  None: X
        is already a 2-D array of embeddings (or any numeric features).
    n_neighbors : int, default=5
        Training crystals averaged over.
    quantile : float in (0, 1], default=0.95
        The fraction of training rows that falls inside the domain.
    scale : bool, default=True
        Standardise each embedding column on the training rows first (scikit-learn's
        ``StandardScaler``), so that no single column dominates the distance.

    Attributes
    ----------
    estimator_ : transformer
        Only with ``estimator``: its clone, fitted on the training X.
    threshold_ : float
        The largest distance inside the domain.
    offset_ : float
        ``-threshold_`` (scikit-learn's convention: ``decision_function =
        score_samples - offset_``).
    train_distances_ : ndarray of shape (n_train,)
        Each training row's distance to its nearest *other* training rows.
    n_features_in_ : int
        Length of an embedding.
    scaler_ : StandardScaler or None
    neighbors_ : NearestNeighbors
        Fitted on the (scaled) training embeddings.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import ApplicabilityDomain, CGCNNEmbedder, StructureGraphTransformer
    >>> embed = make_pipeline(StructureGraphTransformer(), CGCNNEmbedder(fitted_network))
    >>> domain = ApplicabilityDomain(embed).fit(train_structures)  # doctest: +SKIP
    >>> domain.distance(new_structures)                  # doctest: +SKIP
    >>> domain.predict(new_structures)  # +1 inside, -1 outside   # doctest: +SKIP
    """

    def __init__(self, estimator: Any = None, *, n_neighbors: int = 5,
                 quantile: float = 0.95, scale: bool = True) -> None:
        self.estimator = estimator
        self.n_neighbors = n_neighbors
        self.quantile = quantile
        self.scale = scale

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.estimator is not None:
            tags.input_tags.two_d_array = False  # graphs or structures
        return tags

    # -- embeddings ---------------------------------------------------------------------
    def _embed(self, X: Any, fitting: bool) -> np.ndarray:
        """The (unscaled) embeddings of X; NaN rows only from skipped structures."""
        if self.estimator is None:
            return validate_data(self, X, reset=fitting, dtype=np.float64)
        if fitting:
            if not hasattr(self.estimator, "transform"):
                raise TypeError(
                    f"ApplicabilityDomain(estimator=...) takes a transformer whose "
                    f"transform gives the features; {type(self.estimator).__name__} has "
                    "no transform. For a fitted network, pass CGCNNEmbedder(network), or "
                    "for structures make_pipeline(StructureGraphTransformer(), "
                    "CGCNNEmbedder(network))")
            self.estimator_ = clone(self.estimator).fit(X)
        features = np.asarray(self.estimator_.transform(X), dtype=np.float64)
        if fitting:
            self.n_features_in_ = features.shape[1]
        return features

    # -- fit ----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> ApplicabilityDomain:
        """Index the training crystals' embeddings and calibrate ``threshold_``."""
        from sklearn.neighbors import NearestNeighbors  # slow to import: only here

        k, q = self.n_neighbors, self.quantile
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"ApplicabilityDomain(n_neighbors={k!r}): use an int >= 1")
        if isinstance(q, (bool, np.bool_)) or not isinstance(q, numbers.Real) \
                or not 0 < q <= 1:
            raise ValueError(f"ApplicabilityDomain(quantile={q!r}): use a number in (0, 1], "
                             "the fraction of training rows inside the domain (e.g. 0.95)")
        features = self._embed(X, fitting=True)
        finite = np.isfinite(features).all(axis=1)
        features = features[finite]  # structures a transformer skipped have no embedding
        if len(features) <= k:
            raise ValueError(
                f"ApplicabilityDomain(n_neighbors={k}) needs more than {k} training "
                f"crystals, got n_samples = {len(features)} (each is scored against the "
                "others): pass more rows or a smaller n_neighbors")
        self.scaler_ = StandardScaler().fit(features) if self.scale else None
        if self.scaler_ is not None:
            features = self.scaler_.transform(features)
        self.neighbors_ = NearestNeighbors(n_neighbors=k).fit(features)
        distances, _ = self.neighbors_.kneighbors()  # no query: each row without itself
        self.train_distances_ = distances.mean(axis=1)
        ordered = np.sort(self.train_distances_)
        rank = int(np.ceil(q * len(ordered) - 1e-9))  # ceil(q n), kept exact for q n integer
        self.threshold_ = float(ordered[max(rank, 1) - 1])
        self.offset_ = -self.threshold_
        return self

    # -- scores -------------------------------------------------------------------------
    def distance_from_features(self, features: np.ndarray) -> np.ndarray:
        """The distance of already-computed embeddings (NaN for NaN rows)."""
        check_is_fitted(self, "threshold_")
        features = np.asarray(features, dtype=np.float64)
        out = np.full(len(features), np.nan)
        finite = np.isfinite(features).all(axis=1)
        if finite.any():
            rows = features[finite]
            if self.scaler_ is not None:
                rows = self.scaler_.transform(rows)
            distances, _ = self.neighbors_.kneighbors(rows)
            out[finite] = distances.mean(axis=1)
        return out

    def distance(self, X: Any) -> np.ndarray:
        """Mean distance to the ``n_neighbors`` nearest training crystals, shape (n,);
        NaN for structures a StructureGraphTransformer(on_error="skip") left out."""
        check_is_fitted(self, "threshold_")
        return self.distance_from_features(self._embed(X, fitting=False))

    def score_samples(self, X: Any) -> np.ndarray:
        """The negated distance: the higher, the more typical of the training data."""
        return -self.distance(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_`` = ``threshold_ - distance``: >= 0 inside."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for crystals inside the domain, -1 outside (and for skipped structures)."""
        decision = self.decision_function(X)
        return np.where(decision >= 0, 1, -1)


def resolve_domain(domain: Any) -> ApplicabilityDomain | None:
    """The unfitted feature-space domain an estimator's ``domain`` parameter asks for."""
    if domain is None:
        return None
    if isinstance(domain, str) and domain == "knn":
        return ApplicabilityDomain()
    if isinstance(domain, ApplicabilityDomain):
        if domain.estimator is not None:
            raise ValueError("domain=ApplicabilityDomain(estimator=...) is embedded through "
                             "the network being fitted; leave its estimator None")
        return clone(domain)
    raise ValueError(f"domain={domain!r}: use None, 'knn' or an "
                     "ApplicabilityDomain(n_neighbors=..., quantile=...)")


class _DomainHooks:
    """What ``domain=`` adds to a regressor: ``domain_`` fitted after ``fit`` on the
    training rows' embeddings, and its distances and warning at ``predict``."""

    def _fit_domain(self, X: Any) -> None:
        domain = resolve_domain(getattr(self, "domain", None))
        if domain is None:
            self.__dict__.pop("domain_", None)
            return
        self.domain_ = domain.fit(self.predict_crystal_features(X))

    def _predict_domain(self, X: Any, out: Any, return_domain: bool) -> Any:
        """``out``, warned about (and with ``return_domain`` the aligned distances)."""
        domain = getattr(self, "domain_", None)
        if domain is None:
            if return_domain:
                raise ValueError(f"{type(self).__name__}.predict(return_domain=True) needs a "
                                 "domain fitted with the network: fit with domain='knn' "
                                 "(or an ApplicabilityDomain)")
            return out
        distance = domain.distance_from_features(self.predict_crystal_features(X))
        outside = np.flatnonzero(distance > domain.threshold_)
        if outside.size:
            ids = [X.ids[i] for i in outside[:5]]
            more = ", ..." if outside.size > 5 else ""
            warnings.warn(
                f"{outside.size} of {len(distance)} crystals lie outside the applicability "
                f"domain (ids {ids}{more}): their mean embedding distance to the "
                f"{domain.n_neighbors} nearest training crystals is above "
                f"{domain.threshold_:.4g}, which {domain.quantile:.0%} of the training "
                "crystals are within. Their predictions are extrapolations, likely less "
                "accurate than the test error suggests; predict(X, return_domain=True) "
                "gives every crystal's distance", OutsideDomainWarning, stacklevel=3)
        if not return_domain:
            return out
        distance = self._align(X, distance)
        return (*out, distance) if isinstance(out, tuple) else (out, distance)



# -- in model files (save_model / load_model): tensors and plain values only ----------
def domain_payload(domain: ApplicabilityDomain) -> dict:
    """A fitted feature-space domain as tensors and plain values."""
    import torch

    scaler = domain.scaler_
    return {"params": {"n_neighbors": int(domain.n_neighbors),
                       "quantile": float(domain.quantile), "scale": bool(domain.scale)},
            "features": torch.from_numpy(np.ascontiguousarray(domain.neighbors_._fit_X)),
            "train_distances": torch.from_numpy(domain.train_distances_),
            "threshold": float(domain.threshold_),
            "scaler_mean": None if scaler is None else torch.from_numpy(scaler.mean_),
            "scaler_scale": None if scaler is None else torch.from_numpy(scaler.scale_)}


def domain_from_payload(payload: dict) -> ApplicabilityDomain:
    """The domain :func:`domain_payload` saved, with the same threshold and distances."""
    from sklearn.neighbors import NearestNeighbors

    domain = ApplicabilityDomain(**payload["params"])
    features = payload["features"].numpy()
    domain.n_features_in_ = features.shape[1]
    domain.scaler_ = None
    if payload["scaler_mean"] is not None:
        scaler = StandardScaler()
        scaler.mean_ = payload["scaler_mean"].numpy()
        scaler.scale_ = payload["scaler_scale"].numpy()
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        scaler.n_samples_seen_ = len(features)
        domain.scaler_ = scaler
    domain.neighbors_ = NearestNeighbors(n_neighbors=domain.n_neighbors).fit(features)
    domain.train_distances_ = payload["train_distances"].numpy()
    domain.threshold_ = float(payload["threshold"])
    domain.offset_ = -domain.threshold_
    return domain


def restore_domain(est: Any, payload: dict) -> None:
    """Put a saved ``domain_`` (if any) back on a loaded estimator."""
    if payload.get("domain") is None:
        return
    est.domain_ = domain_from_payload(payload["domain"])
    if getattr(est, "domain", None) is None:  # an ApplicabilityDomain parameter: not plain
        est.domain = ApplicabilityDomain(**payload["domain"]["params"])
