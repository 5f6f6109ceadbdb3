"""skorch callbacks of a trial: the validation MAE each epoch, and pruning on it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from skorch.callbacks import Callback

from .._optional import require


class ValidationMAE(Callback):
    """Record the validation mean absolute error, in the target's units, every epoch.

    It adds ``valid_mae`` to the net's history from the predictions skorch already made
    for ``valid_loss`` (no second pass over the validation data).  Needs a
    :class:`~skcgcnn.estimators.CGCNNRegressor` with a ``train_split``; for several
    targets it is the mean over all of them.

    Parameters
    ----------
    name : str, default="valid_mae"
        History key.
    """

    def __init__(self, name: str = "valid_mae"):
        self.name = name

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self._sum = 0.0
        self._count = 0

    def on_batch_end(self, net: Any, batch: Any = None, training: bool = False,
                     **kwargs: Any) -> None:
        if training or "y_pred" not in kwargs:
            return
        import torch

        with torch.no_grad():
            y_pred = kwargs["y_pred"].detach().cpu().double().numpy()
        y_pred = y_pred.reshape(len(y_pred), -1)
        y_pred = y_pred * net.target_scaler_.scale_ + net.target_scaler_.mean_
        y_true = np.asarray(batch[1].cpu() if hasattr(batch[1], "cpu") else batch[1],
                            dtype=np.float64).reshape(y_pred.shape)
        self._sum += float(np.abs(y_pred - y_true).sum())
        self._count += y_pred.size

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if getattr(self, "_count", 0):
            net.history.record(self.name, self._sum / self._count)


class PruningCallback(Callback):
    """Report a history value to an Optuna trial each epoch; stop the trial when pruned.

    At the end of epoch ``e`` (0-based) it calls ``trial.report(history[-1, monitor],
    step_offset + e)`` and raises :class:`optuna.TrialPruned` when
    ``trial.should_prune()``.  skorch does not catch that exception (it only catches
    ``KeyboardInterrupt`` around the training loop), so ``fit`` stops at once and
    Optuna records the trial as pruned.  A non-finite value (a diverged net) prunes
    the trial whatever the pruner says.

    Parameters
    ----------
    trial : optuna.trial.Trial
    monitor : str, default="valid_mae"
        History key, e.g. ``"valid_mae"`` (from :class:`ValidationMAE`) or ``"valid_loss"``.
    step_offset : int, default=0
        Added to the epoch; for k-fold trials fold ``k`` reports from
        ``k * max_epochs`` so that every trial reports the same steps.
    prune_last_epoch : bool, default=False
        Whether to ask the pruner after the net's last epoch (``max_epochs``), when
        stopping saves no training; by default the value is only reported there, and
        the trial completes.
    """

    def __init__(self, trial: Any, monitor: str = "valid_mae", step_offset: int = 0,
                 prune_last_epoch: bool = False):
        self.trial = trial
        self.monitor = monitor
        self.step_offset = step_offset
        self.prune_last_epoch = prune_last_epoch

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        optuna = require("optuna")
        if not net.history or self.monitor not in net.history[-1]:
            raise KeyError(
                f"PruningCallback: the history has no {self.monitor!r}; add ValidationMAE() "
                "to the callbacks (before this one) and give the net a train_split")
        value = float(net.history[-1, self.monitor])
        step = self.step_offset + len(net.history) - 1
        self.trial.report(value, step)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} is {value} at step {step}: diverged")
        if len(net.history) >= net.max_epochs and not self.prune_last_epoch:
            return
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor}={value:.4g})")
