"""The skorch hooks of a CGCNN estimator that resume a fit from a checkpoint.

skorch's ``LoadInitState`` (and :class:`~skcgcnn.estimators.LoadTrainingState`, in
``_callbacks``) restore a checkpoint when training begins, in their place among the
callbacks: after the learning-rate scheduler and the scoring callbacks have read the
(still empty) history.  :class:`_ResumeHooks` runs them first instead, and makes ``fit``
train the epochs that are left.
"""
from __future__ import annotations

import logging

from skorch.callbacks import LoadInitState

logger = logging.getLogger(__name__)


class _ResumeHooks:
    """The skorch hooks of a CGCNN estimator that resume a fit: at ``on_train_begin``
    the ``LoadInitState`` callbacks (skorch's, :class:`LoadTrainingState`) run first,
    so that the learning-rate scheduler and the scoring callbacks, which come before
    the user's callbacks, find the restored history; ``fit`` then trains the epochs
    that are left."""

    def notify(self, method_name, **cb_kwargs):
        if method_name == "on_train_begin":
            before = self.history
            for _, cb in self.callbacks_:
                if isinstance(cb, LoadInitState):
                    cb.on_train_begin(self, **cb_kwargs)
            self._restored_epochs = len(self.history) if self.history is not before \
                else None
        return super().notify(method_name, **cb_kwargs)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's ``fit_loop``; in ``fit``, after a checkpoint's history of k epochs
        was restored when training began, it trains the ``max_epochs - k`` epochs left
        (``partial_fit`` keeps skorch's meaning: ``max_epochs`` more)."""
        restored = self.__dict__.pop("_restored_epochs", None)
        if epochs is None and restored is not None and self.__dict__.get("_in_fit"):
            epochs = max(self.max_epochs - restored, 0)
            if epochs == 0:
                logger.info("the restored history holds %d epochs, max_epochs is %d: "
                            "nothing left to train", restored, self.max_epochs)
            else:
                logger.info("resumed after epoch %d: training epochs %d-%d", restored,
                            restored + 1, self.max_epochs)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)
