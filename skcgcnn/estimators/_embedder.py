"""CGCNNEmbedder: a fitted CGCNN as a transformer from crystals to learned embeddings."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from sklearn.pipeline import Pipeline

from ._classifier import CGCNNClassifier
from ._ensemble import CGCNNEnsembleRegressor
from ._regressor import CGCNNRegressor

__all__ = ["CGCNNEmbedder"]

_NETWORKS = (CGCNNRegressor, CGCNNClassifier, CGCNNEnsembleRegressor)


class CGCNNEmbedder(TransformerMixin, BaseEstimator):
    """The crystal embeddings of a fitted CGCNN, as a scikit-learn transformer.

    ``transform`` maps each crystal to the pooled vector of its atoms' learned
    features (the output of the last convolution, pooled over the crystal: the input
    of the network's ``conv_to_fc`` layer), so that a network trained on one target
    gives features for another model::

        make_pipeline(StructureGraphTransformer(), CGCNNEmbedder(fitted), Ridge())

    The network is frozen: ``fit`` checks that it is fitted and trains nothing, and
    ``clone`` (as in ``GridSearchCV`` or ``cross_val_score``) keeps the same fitted
    network instead of an unfitted copy.

    Parameters
    ----------
    estimator : CGCNNRegressor, CGCNNClassifier, CGCNNEnsembleRegressor or Pipeline
        A fitted network.  X is then the GraphCollection of
        :class:`~skcgcnn.transformers.StructureGraphTransformer`; for a fitted
        Pipeline ending in one (such as :func:`~skcgcnn.load_model` returns), X is what
        the Pipeline takes (structures) and its transformer makes the graphs.  An
        ensemble gives its members' embeddings side by side.

    Attributes
    ----------
    n_features_out_ : int
        Length of an embedding (``atom_fea_len``, times the members of an ensemble).

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import CGCNNEmbedder, StructureGraphTransformer
    >>> band_gap = make_pipeline(StructureGraphTransformer(),
    ...                          CGCNNEmbedder(formation_energy_model), Ridge())
    >>> band_gap.fit(structures, gaps)                       # doctest: +SKIP
    """

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def __sklearn_clone__(self) -> CGCNNEmbedder:
        """A new embedder over the same fitted network (a copy would be unfitted)."""
        return type(self)(estimator=self.estimator)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # graphs or structures
        tags.requires_fit = True
        return tags

    def _network(self) -> tuple[Any, Any]:
        """``(graph steps or None, network)`` of ``estimator``, checked."""
        est, head = self.estimator, None
        if isinstance(est, Pipeline):
            head, est = est[:-1], est[-1]
        if not isinstance(est, _NETWORKS):
            raise TypeError(f"CGCNNEmbedder needs a fitted CGCNNRegressor, CGCNNClassifier "
                            f"or CGCNNEnsembleRegressor (or a Pipeline ending in one), not "
                            f"{type(self.estimator).__name__}")
        if not est.__sklearn_is_fitted__():
            raise NotFittedError(f"CGCNNEmbedder needs a fitted network; this "
                                 f"{type(est).__name__} is not fitted: fit it first (the "
                                 "embedder does not train it)")
        return head, est

    def fit(self, X: Any = None, y: Any = None) -> CGCNNEmbedder:
        """Check the network (it is not trained) and record the embedding length."""
        _, est = self._network()
        members = est.estimators_ if isinstance(est, CGCNNEnsembleRegressor) else [est]
        self.n_features_out_ = sum(int(m.module_.embedding.out_features) for m in members)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of shape ``(n, n_features_out_)``; NaN rows for the structures a
        StructureGraphTransformer(on_error="skip") left out."""
        check_is_fitted(self, "n_features_out_")
        head, est = self._network()
        graphs = X if head is None else head.transform(X)
        members = est.estimators_ if isinstance(est, CGCNNEnsembleRegressor) else [est]
        features = est.predict_crystal_features(graphs)
        return members[0]._align(graphs, features)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``cgcnn_embedding0``, ``cgcnn_embedding1``, ..."""
        check_is_fitted(self, "n_features_out_")
        return np.array([f"cgcnn_embedding{i}" for i in range(self.n_features_out_)],
                        dtype=object)
