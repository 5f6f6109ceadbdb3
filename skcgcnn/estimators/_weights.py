"""``fit(X, y, sample_weight=...)``: each crystal's loss weighed, for every CGCNN estimator.

The weights are checked and normalised once (:meth:`_SampleWeights._take_sample_weight`:
rows of weight 0 left out, the others divided by their mean, None when all are equal),
travel with the training data (:class:`~skcgcnn.estimators.GraphDataset`, one per atom in
a batch), and weigh each crystal's loss in the batch's mean
(:meth:`_SampleWeights._batch_loss`); they never reach the module.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..graph import GraphCollection

logger = logging.getLogger(__name__)


class _SampleWeights:
    """The sample weights of a CGCNN estimator's ``fit``."""

    def _take_sample_weight(self, X: GraphCollection, y: np.ndarray, sample_weight: Any):
        """``(X, y, weights)`` for a weighted fit: rows of weight 0 left out (they would
        still move the batch-norm statistics), the other weights divided by their mean;
        ``weights`` is None when they are all equal (the unweighted fit, exactly)."""
        if sample_weight is None:
            return X, y, None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, one weight per crystal; got shape "
                             f"{w.shape}")
        if len(w) != len(X) and X.input_positions is not None and len(w) == X.n_inputs:
            w = w[X.input_positions]  # one per input structure, as y: keep those with a graph
        if len(w) != len(X):
            raise ValueError(f"sample_weight has {len(w)} values but X has {len(X)} "
                             "crystals; give one weight per crystal")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"sample_weight must be finite and >= 0; rows {rows} are not "
                             f"({w[rows].tolist()})")
        keep = w > 0
        if not keep.any():
            raise ValueError("every sample_weight is 0: there is nothing to fit")
        if not keep.all():
            logger.info("leaving out the %d row(s) of sample_weight 0", int((~keep).sum()))
            rows = np.flatnonzero(keep)
            X, y, w = X[rows], y[rows], w[rows]
        if np.ptp(w) == 0:
            return X, y, None
        return X, y, (w / w.mean()).astype(np.float32)

    def _fit_weighted(self, X, y, weights, **fit_params):
        """``_fit_with_seed``, with ``weights`` (or None) given to the training data."""
        if "sample_weight" in fit_params:
            raise TypeError("sample_weight was given twice")
        from ._card import ids_digest

        # for the model card: which crystals the model was fitted on
        self.n_train_ = len(X)
        self.training_ids_digest_ = ids_digest(X.ids)
        self.__dict__["_sample_weight"] = (X, weights) if weights is not None else None
        try:
            return self._fit_with_seed(X, y, **fit_params)
        finally:
            self.__dict__.pop("_sample_weight", None)

    def _weights_of(self, dataset: Any) -> np.ndarray | None:
        """The weights of the training data ``dataset`` (the X of this ``fit``), or None."""
        weighted = self.__dict__.get("_sample_weight")  # (X, weights) during fit
        return weighted[1] if weighted is not None and weighted[0] is dataset else None

    def infer(self, x, **fit_params):
        if isinstance(x, dict) and "sample_weight" in x:  # for the loss, not the module
            x = {key: value for key, value in x.items() if key != "sample_weight"}
        return super().infer(x, **fit_params)

    def _batch_loss(self, loss, y_pred, y_true, X, training):
        """``loss(y_pred, y_true, X=X, training=training)``; when the batch carries sample
        weights (normalised to mean 1 over the fit's rows), the mean over the batch of
        each crystal's loss times its weight."""
        weights = X.get("sample_weight") if isinstance(X, dict) else None
        with self._resolved_device():
            if weights is None:
                return loss(y_pred, y_true, X=X, training=training)
            criterion = self.criterion_
            if not hasattr(criterion, "reduction"):
                raise ValueError(f"sample_weight needs a criterion with a 'reduction' "
                                 f"argument (as torch's losses); {type(criterion).__name__} "
                                 "has none")
            reduction, criterion.reduction = criterion.reduction, "none"
            try:
                per_value = loss(y_pred, y_true, X=X, training=training)
            finally:
                criterion.reduction = reduction
        per_crystal = per_value.reshape(y_pred.shape[0], -1).mean(dim=1)
        # the batch carries the weight of each atom's crystal: one per crystal back
        weights = weights.to(per_crystal.device, per_crystal.dtype)
        crystal_idx = X["crystal_idx"].to(per_crystal.device)
        weights = torch.zeros_like(per_crystal).scatter(0, crystal_idx, weights)
        return (per_crystal * weights).mean()
