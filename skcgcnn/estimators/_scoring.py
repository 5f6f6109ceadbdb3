"""The validation MAE of a regressor each epoch: one scorer, for ``skcgcnn train`` and
:mod:`skcgcnn.tuning` alike.

:func:`validation_mae` is the skorch scoring callable and :class:`ValidationMAE` the
:class:`~skorch.callbacks.EpochScoring` of it, on the predictions skorch already made
for ``valid_loss``.  A callable rather than a scikit-learn scorer name on purpose:
``"neg_mean_absolute_error"`` would log negative numbers, under another name, in the
history.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from skorch.callbacks import EpochScoring


def validation_mae(net: Any, X: Any, y: Any) -> float:
    """Mean absolute error of ``net.predict(X)`` against ``y``, in the target's units.

    A skorch scoring callable ``(net, X, y)``: with cached predictions (``EpochScoring``'s
    ``use_caching=True``) X is the validation dataset and ``net.predict`` answers from
    the cache.  The number is scikit-learn's ``mean_absolute_error`` (the mean over the
    crystals, then over the targets: for several, the mean over all of them), computed
    as it computes it, but where scikit-learn raises on a diverged net's NaN or
    infinite predictions this records NaN or infinity and training goes on:
    ``skcgcnn train`` then refuses the run on its losses, and
    :class:`~skcgcnn.tuning.PruningCallback` prunes the trial.
    """
    pred = np.asarray(net.predict(X), dtype=np.float64)
    pred = pred.reshape(len(pred), -1)
    y = np.asarray(y, dtype=np.float64).reshape(pred.shape)
    return float(np.mean(np.mean(np.abs(pred - y), axis=0)))


class ValidationMAE(EpochScoring):
    """Record the validation mean absolute error, in the target's units, every epoch.

    skorch's :class:`~skorch.callbacks.EpochScoring` of :func:`validation_mae`
    (scikit-learn's ``mean_absolute_error``) with ``use_caching=True``: it adds
    ``valid_mae`` (and ``valid_mae_best``) to the net's history from the predictions
    skorch already made for ``valid_loss`` (no second pass over the validation data).
    The regressor standardises the targets internally; the scorer calls
    :meth:`CGCNNRegressor.predict <skcgcnn.estimators.CGCNNRegressor.predict>`, which
    undoes that, so the MAE is in the target's units, not in standard deviations.  Needs
    a :class:`~skcgcnn.estimators.CGCNNRegressor` with a ``train_split`` and a concrete
    ``device`` (skorch moves the cached predictions to ``net.device`` as it is, so
    resolve ``"auto"`` first); for several targets it is the mean over all of them.

    Parameters
    ----------
    name : str, default="valid_mae"
        History key.
    """

    # only the name is a parameter: the scorer is what this callback is
    def __init__(self, name: str = "valid_mae"):
        super().__init__(validation_mae, lower_is_better=True, on_train=False,
                         name=name, use_caching=True)
