"""CGCNNClassifier: CGCNN classification behind skorch's NeuralNetClassifier."""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import type_of_target
from skorch import NeuralNet, NeuralNetClassifier

from .._targets import check_finite_targets
from ..model import CGCNN
from ._base import DEFAULT_MOMENTUM, _CGCNNMixin
from ._docstrings import _COMMON_DOC
from ._checks import _graph_params_of
from ._data import collate_graphs

__all__ = ["CGCNNClassifier"]


def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


class CGCNNClassifier(_CGCNNMixin, NeuralNetClassifier):
    __doc__ = ("""CGCNN classification as a scikit-learn estimator (a skorch NeuralNetClassifier).

    The network ends in log-softmax with dropout before the hidden layers, as the
    original; the loss is the negative log-likelihood and ``predict_proba`` returns
    probabilities.  Labels may be any values (encoded with a ``LabelEncoder``); a
    continuous target (``type_of_target(y) == "continuous"``, e.g. formation energies)
    is refused: use :class:`CGCNNRegressor` or turn it into classes first.  The default
    recipe is :data:`~skcgcnn.estimators.DEFAULT_CLASSIFIER_RECIPE`; the original
    ``main.py`` one is ``CGCNNClassifier(**ORIGINAL_CLASSIFIER_RECIPE)``.
""" + _COMMON_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    module_ : CGCNN
    label_encoder_ : sklearn.preprocessing.LabelEncoder
    graph_params_ : dict
        The graph settings of ``fit``, as for :class:`CGCNNRegressor`.
    """)

    _classification = True

    def __init__(self, module=CGCNN, *, criterion=torch.nn.NLLLoss,
                 optimizer="adamw", lr=0.01, max_epochs=50, batch_size=128,
                 train_split=None, iterator_train__shuffle=True,
                 iterator_train__collate_fn=collate_graphs,
                 iterator_valid__collate_fn=collate_graphs,
                 optimizer__momentum=DEFAULT_MOMENTUM, predict_nonlinearity=_exp,
                 optimizer__weight_decay=0.01, lr_schedule="onecycle",
                 warmup_fraction=0.1, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, random_state=None,
                 device="cpu", batch_on_device="auto", precision="float32",
                 reduce_atoms=True, verbose=1,
                 **kwargs):
        super().__init__(module, criterion=criterion, optimizer=optimizer, lr=lr,
                         max_epochs=max_epochs, batch_size=batch_size,
                         train_split=train_split,
                         iterator_train__shuffle=iterator_train__shuffle,
                         iterator_train__collate_fn=iterator_train__collate_fn,
                         iterator_valid__collate_fn=iterator_valid__collate_fn,
                         optimizer__momentum=optimizer__momentum,
                         optimizer__weight_decay=optimizer__weight_decay,
                         predict_nonlinearity=predict_nonlinearity, device=device,
                         verbose=verbose, **kwargs)
        self.lr_schedule = lr_schedule
        self.warmup_fraction = warmup_fraction
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.batch_on_device = batch_on_device
        self.precision = precision
        self.reduce_atoms = reduce_atoms

    @property
    def classes_(self):
        if hasattr(self, "label_encoder_"):
            return self.label_encoder_.classes_
        raise AttributeError("CGCNNClassifier has no classes_ before fit")

    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit on graphs X and class labels y; ``sample_weight`` as for the regressor."""
        X = self._check_X(X)
        y = self._check_y(X, y)
        if y.ndim != 1:
            raise ValueError(f"CGCNNClassifier takes 1-D labels, got shape {y.shape}")
        check_finite_targets(y, X.ids)
        kind = type_of_target(y, input_name="y")
        if kind == "continuous":
            row = int(np.flatnonzero(y != np.round(y))[0])
            raise ValueError(
                f"CGCNNClassifier needs class labels but y is continuous (row {row}, id "
                f"{X.ids[row]!r}: {y[row].item()!r}; {len(np.unique(y))} distinct values); use "
                "CGCNNRegressor for a continuous target, or turn it into classes first "
                "(e.g. y < threshold)")
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"CGCNNClassifier needs binary or multiclass labels, but y is "
                             f"of type {kind!r} (sklearn.utils.multiclass.type_of_target)")
        X, y, weights = self._take_sample_weight(X, y, sample_weight)
        self.label_encoder_ = LabelEncoder().fit(y)
        if len(self.label_encoder_.classes_) < 2:
            raise ValueError(f"classification needs at least two classes; y only holds "
                             f"{self.label_encoder_.classes_.tolist()}")
        self.module_kwargs_ = self._data_kwargs(X, len(self.label_encoder_.classes_))
        self.graph_params_ = _graph_params_of(X)
        encoded = self.label_encoder_.transform(y).astype(np.int64)
        return self._fit_weighted(X, encoded, weights, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion applied to the module's output as it is.

        The CGCNN module returns log-probabilities (log-softmax, as the original),
        which is what ``NLLLoss`` takes.  skorch's ``NeuralNetClassifier.get_loss``
        expects probabilities and takes their log before ``NLLLoss``: done on
        log-probabilities that gives NaN losses and a model that learns backwards, so
        this goes straight to ``NeuralNet.get_loss``.  (``CrossEntropyLoss`` gives the
        same loss here, as log-softmax of log-probabilities changes nothing.)
        """
        return self._weighted_loss(partial(NeuralNet.get_loss, self), y_pred, y_true, X,
                                   training)

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes): the exp of the module's
        log-probabilities (``predict_nonlinearity``).

        When X comes from a StructureGraphTransformer that skipped structures
        (``on_error="skip"``), there is one row per structure of its input, NaN for
        the skipped ones.
        """
        self._require_fitted()
        X = self._check_predict_X(X)
        if len(X) == 0 and getattr(X, "input_positions", None) is not None:
            proba = np.zeros((0, len(self.classes_)), dtype=np.float32)
        else:
            with self._resolved_device():
                proba = super().predict_proba(X)
        return self._align(X, proba)

    def predict(self, X):
        """Class labels; as encoded integers when skorch scores a dataset during fit
        (its targets are the encoded labels too).

        Raises
        ------
        ValueError
            When X comes from a StructureGraphTransformer that skipped structures: a
            label cannot be NaN, so rather than return fewer rows than the input (which
            would shift every label after a skipped structure) this refuses; use
            ``predict_proba`` (NaN rows) or remove the bad structures.
        """
        self._refuse_skipped(X, "predict")
        encoded = self.predict_proba(X).argmax(axis=1)
        if isinstance(X, torch.utils.data.Dataset):
            return encoded
        return self.label_encoder_.inverse_transform(encoded)
