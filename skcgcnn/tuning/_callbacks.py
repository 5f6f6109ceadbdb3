"""skorch callbacks of a trial: the validation MAE each epoch, and pruning on it.

:class:`ValidationMAE` is the estimators' (``skcgcnn.estimators._scoring``), the one
validation MAE that ``skcgcnn train`` records too; it is re-exported here, where trials
use it.
"""
from __future__ import annotations

import math
from typing import Any

from skorch.callbacks import Callback

from .._optional import require
from ..estimators._scoring import ValidationMAE

try:
    from optuna_integration.skorch import SkorchPruningCallback as _SkorchPruningCallback
except ImportError:  # no tune extra: the package still imports (as optuna-integration
    _SkorchPruningCallback = Callback  # itself does without skorch); PruningCallback asks


class PruningCallback(_SkorchPruningCallback):
    """Report a history value to an Optuna trial each epoch; stop the trial when pruned.

    At the end of epoch ``e`` (0-based) it calls ``trial.report(history[-1, monitor],
    step_offset + e)`` and raises :class:`optuna.TrialPruned` when
    ``trial.should_prune()``.  skorch does not catch that exception (it only catches
    ``KeyboardInterrupt`` around the training loop), so ``fit`` stops at once and
    Optuna records the trial as pruned.  A non-finite value (a diverged net) prunes
    the trial whatever the pruner says.

    It is optuna-integration's :class:`~optuna_integration.SkorchPruningCallback` with
    three deliberate differences, so it overrides ``on_epoch_end``: the step offset
    (k-fold trials report ``fold * max_epochs + epoch``; the parent reports the epoch
    of each fit, so every fold after the first would report steps already reported,
    which Optuna ignores), divergence (a NaN or infinite value prunes at once; the
    parent leaves it to the pruner, which trains a diverged trial on through its
    warm-up steps and start-up trials) and the last epoch (reported,
    not pruned on, unless ``prune_last_epoch``: stopping there saves no training, and
    before the last fold it would throw away a finished fold).

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
        if _SkorchPruningCallback is Callback:
            require("optuna_integration")  # raises, naming the extra to install
        super().__init__(trial, monitor)
        self.step_offset = step_offset
        self.prune_last_epoch = prune_last_epoch

    # The parent keeps the trial and the monitor as _trial and _monitor; skorch's
    # get_params (and so clone) lists the instance's public attributes.  Keep them
    # public, as before, and point the parent's names at them.
    @property
    def _trial(self) -> Any:
        return self.trial

    @_trial.setter
    def _trial(self, trial: Any) -> None:
        self.trial = trial

    @property
    def _monitor(self) -> str:
        return self.monitor

    @_monitor.setter
    def _monitor(self, monitor: str) -> None:
        self.monitor = monitor

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
