"""UncertaintyFeatures: what a fitted model knows about its own error, as features.

A deep ensemble's spread and the applicability domain's distance each rank a model's
errors only loosely (docs/uncertainty.md).  They miss different crystals: the spread
is large where the members disagree, the distance where a crystal is unlike the
training data.  This transformer puts them side by side (as logs), so that a plain
regressor fitted on held-out rows learns how they combine into the expected error.
MAPIE's :class:`~mapie.conformity_scores.ResidualNormalisedScore` does exactly that:
its ``residual_estimator`` is fitted on a share of the calibration rows to the log of
the absolute residuals, and the exponential of its prediction normalises the
conformity scores, so the intervals widen where the features say the error is large.
With ``make_pipeline(UncertaintyFeatures(model), LinearRegression())`` as that
estimator, the predicted error is ``C * std ** a * distance ** b``.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._domain import OutsideDomainWarning
from ._ensemble import CGCNNEnsembleRegressor
from ._regressor import CGCNNRegressor
from ._split import split_pipeline

__all__ = ["UncertaintyFeatures", "FEATURES"]

#: The features :class:`UncertaintyFeatures` can give.
FEATURES = ("std", "epistemic_std", "aleatoric_std", "distance")
#: Values are floored here before their log (a member spread of exactly 0).
EPS = 1e-12


class UncertaintyFeatures(TransformerMixin, BaseEstimator):
    """A fitted regressor's own uncertainty signals, as features of each crystal.

    ``transform`` answers one column per entry of ``features``, by default the natural
    logs of the ensemble's standard deviation and of the applicability-domain
    distance.  The model is frozen: ``fit`` checks that it is fitted and can answer
    every feature and trains nothing, and ``clone`` keeps the same fitted model (as
    :class:`CGCNNEmbedder` does), so MAPIE's ``ResidualNormalisedScore`` and
    ``GridSearchCV`` can clone it.

    Parameters
    ----------
    model : CGCNNEnsembleRegressor, CGCNNRegressor or Pipeline
        A fitted regressor, or a fitted Pipeline ending in one (X is then what the
        Pipeline takes, such as structures; otherwise the GraphCollection of
        :class:`~skcgcnn.transformers.StructureGraphTransformer`).  One target.
    features : tuple of str, default=("std", "distance")
        Any of :data:`FEATURES`.  ``"std"``: the ensemble's standard deviation (the
        total one for members with variance heads), or a single regressor's
        predicted std (``loss="gaussian_nll"``); ``"epistemic_std"`` /
        ``"aleatoric_std"``: its two parts (an ensemble; the aleatoric part needs
        variance heads); ``"distance"``: the applicability domain's distance (a model
        fitted with ``domain="knn"``).
    log : bool, default=True
        The natural log of each value (floored at 1e-12), so that a linear model of
        the log error is a power law in them.

    Attributes
    ----------
    n_features_out_ : int
        ``len(features)``.

    Examples
    --------
    >>> from mapie.conformity_scores import ResidualNormalisedScore
    >>> from mapie.regression import SplitConformalRegressor
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> pipe = make_pipeline(StructureGraphTransformer(),
    ...                      CGCNNEnsembleRegressor(domain="knn"))
    >>> pipe.fit(structures, y)                                  # doctest: +SKIP
    >>> error_model = make_pipeline(UncertaintyFeatures(pipe), LinearRegression())
    >>> score = ResidualNormalisedScore(residual_estimator=error_model, split_size=0.5,
    ...                                 random_state=0)
    >>> intervals = SplitConformalRegressor(pipe, confidence_level=0.9, prefit=True,
    ...                                     conformity_score=score)
    >>> intervals.conformalize(cal_structures, y_cal)           # doctest: +SKIP
    >>> y_pred, y_interval = intervals.predict_interval(new_structures)  # doctest: +SKIP
    """

    def __init__(self, model: Any = None, features: tuple[str, ...] = ("std", "distance"),
                 log: bool = True) -> None:
        self.model = model
        self.features = features
        self.log = log

    def __sklearn_clone__(self) -> UncertaintyFeatures:
        """A new transformer over the same fitted model (a copy would be unfitted)."""
        return type(self)(model=self.model, features=self.features, log=self.log)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # graphs or structures
        tags.requires_fit = True
        return tags

    def _checked(self) -> tuple[Any, Any, tuple[str, ...]]:
        """``(graph steps or None, regressor, features)``, each feature checked."""
        head, est = split_pipeline(self.model)
        if not isinstance(est, (CGCNNEnsembleRegressor, CGCNNRegressor)):
            raise TypeError(f"UncertaintyFeatures needs a fitted CGCNNEnsembleRegressor or "
                            f"CGCNNRegressor (or a Pipeline ending in one), not "
                            f"{type(self.model).__name__}")
        if not est.__sklearn_is_fitted__():
            raise NotFittedError(f"UncertaintyFeatures needs a fitted model; this "
                                 f"{type(est).__name__} is not fitted: fit it first (the "
                                 "transformer does not train it)")
        features = self._features()
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not features:
            raise ValueError(f"features={self.features!r}: use one or more of {FEATURES}")
        ensemble = isinstance(est, CGCNNEnsembleRegressor)
        heads = est._has_variance_head()
        name = type(est).__name__
        for feature in features:
            if feature == "distance" and getattr(est, "domain_", None) is None:
                raise ValueError(f"features includes 'distance' but this {name} has no "
                                 "applicability domain: fit it with domain='knn'")
            if feature == "std" and not (ensemble or heads):
                raise ValueError("features includes 'std' but a single CGCNNRegressor has "
                                 "one only with a variance head: fit it with "
                                 "loss='gaussian_nll', or use a CGCNNEnsembleRegressor")
            if feature == "epistemic_std" and not ensemble:
                raise ValueError("features includes 'epistemic_std', the spread of an "
                                 f"ensemble's members; this is a {name}: use a "
                                 "CGCNNEnsembleRegressor")
            if feature == "aleatoric_std" and not heads:
                raise ValueError("features includes 'aleatoric_std', the noise variance "
                                 "heads predict; fit the members with "
                                 "loss='gaussian_nll'")
        return head, est, features

    def fit(self, X: Any = None, y: Any = None) -> UncertaintyFeatures:
        """Check the model and the features (the model is not trained)."""
        self._checked()
        self.n_features_out_ = len(self.get_feature_names_out())
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Features of shape ``(n, n_features_out_)``; NaN rows for the structures a
        StructureGraphTransformer(on_error="skip") left out."""
        check_is_fitted(self, "n_features_out_")
        head, est, features = self._checked()
        graphs = X if head is None else head.transform(X)
        columns: dict[str, np.ndarray] = {}
        if any(f != "distance" for f in features):
            if isinstance(est, CGCNNEnsembleRegressor):
                parts = est.predict_uncertainty(graphs)
                columns = {"std": parts.std, "epistemic_std": parts.epistemic_std,
                           "aleatoric_std": parts.aleatoric_std}
            else:
                columns["std"] = est.predict(graphs, return_std=True)[1]
        if "distance" in features:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OutsideDomainWarning)
                # the regressor's own path: the same distances predict(return_domain=True)
                # answers, aligned to the skipped structures
                columns["distance"] = est._predict_domain(graphs, None, True)[1]
        out = []
        for feature in features:
            value = np.asarray(columns[feature], dtype=float)
            if value.ndim > 1:
                if value.shape[1] != 1:
                    raise ValueError(f"UncertaintyFeatures takes a model of one target; this "
                                     f"one has {value.shape[1]}")
                value = value[:, 0]
            out.append(np.log(np.maximum(value, EPS)) if self.log else value)
        return np.column_stack(out)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The features, with ``log_`` before each when ``log``."""
        prefix = "log_" if self.log else ""
        return np.array([prefix + f for f in self._features()], dtype=object)

    def _features(self) -> tuple[str, ...]:
        """``features`` as a tuple (a single name is taken as one feature)."""
        return (self.features,) if isinstance(self.features, str) else tuple(self.features)
