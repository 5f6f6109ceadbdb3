"""The training recipe as estimator parameters: schedules, early stopping, losses.

Each recipe parameter of :class:`~skcgcnn.CGCNNRegressor` / :class:`~skcgcnn.CGCNNClassifier`
becomes a skorch callback or criterion when the estimator is initialised, so that
``GridSearchCV`` and the Optuna space tune them as any other parameter:

* ``lr_schedule`` -> the ``lr_scheduler`` callback: ``"multistep"`` (the original's
  MultiStepLR, milestones [100], gamma 0.1, stepped per epoch), ``"onecycle"`` (torch's
  ``OneCycleLR``, per batch), ``"cosine"`` (linear warm-up then cosine decay, per batch) or
  None (a constant learning rate, or the user's own ``LRScheduler``);
* ``early_stopping``, ``validation_fraction``, ``n_iter_no_change`` -> an internal
  validation split (skorch's ``ValidSplit``) and skorch's ``EarlyStopping(load_best=True)``
  named ``early_stopping``;
* ``loss`` (regressor) -> the criterion on standardised targets; ``"gaussian_nll"``
  also gives the network a variance output per target (:class:`GaussianNLLHead`).

:data:`DEFAULT_RECIPE` / :data:`DEFAULT_CLASSIFIER_RECIPE` are the estimators'
defaults (AdamW, lr 0.01, weight decay 0.01, batch 128, 50 epochs, one-cycle schedule;
the regressor's loss is L1 on standardised targets), chosen by measurement
(``benchmarks/bench_recipe.py``, docs/benchmark.md); :data:`ORIGINAL_RECIPE` /
:data:`ORIGINAL_CLASSIFIER_RECIPE` hold the original ``main.py`` recipe.
"""
from __future__ import annotations

import logging
import math
import sys
import warnings
from typing import Any

import torch
from skorch.callbacks import EarlyStopping, LRScheduler, PrintLog

from .._defaults import DEFAULT_CLASSIFIER_RECIPE, DEFAULT_RECIPE

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_RECIPE", "DEFAULT_CLASSIFIER_RECIPE", "ORIGINAL_RECIPE",
           "ORIGINAL_CLASSIFIER_RECIPE", "LR_SCHEDULES", "LOSSES", "PerBatchLRScheduler",
           "WarmupCosine", "GaussianNLLHead", "VARIANCE_FLOOR", "mean_and_variance",
           "EpochTable", "ShortFitWarning", "MIN_STEPS", "warmup_steps"]

#: Values of ``lr_schedule`` (None: no built-in schedule).
LR_SCHEDULES = ("multistep", "onecycle", "cosine")
#: The smallest variance of a mean-variance head, in standardised units (a standard
#: deviation of 0.001 target standard deviations): keeps ``1 / var`` in the loss finite.
VARIANCE_FLOOR = 1e-6


def mean_and_variance(output: torch.Tensor, n_targets: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a mean-variance head's output (B, 2 * n_targets) into the means (B, n_targets)
    and the variances ``softplus(raw) + VARIANCE_FLOOR`` (B, n_targets).

    Softplus, as Lakshminarayanan et al. (2017) do, rather than ``exp`` of a log-variance:
    it grows linearly, not exponentially, in the raw output, so one large step of the
    optimiser (lr 0.01 at the peak of the one-cycle schedule) cannot send the variance
    and the gradient of ``log var`` to extremes; the floor keeps ``(y - mu)^2 / var``
    finite when the network pushes the raw output far below 0.
    """
    if output.shape[-1] != 2 * n_targets:
        raise ValueError(f"a mean-variance head has 2 * {n_targets} outputs, this one has "
                         f"{output.shape[-1]}")
    mean, raw = output[..., :n_targets], output[..., n_targets:]
    return mean, torch.nn.functional.softplus(raw) + VARIANCE_FLOOR


class GaussianNLLHead(torch.nn.GaussianNLLLoss):
    """torch's ``GaussianNLLLoss`` on the output of a mean-variance head.

    ``forward(output (B, 2k), target (B, k))``: the first k columns of the output are
    the means, the last k the raw variances (see :func:`mean_and_variance`); the loss
    per value is ``0.5 * (log var + (mean - target)^2 / var)`` (plus ``0.5 log 2 pi``
    with ``full=True``), with ``var`` clamped at ``eps`` as torch does.  ``full``,
    ``eps`` and ``reduction`` are torch's (``criterion__full=True`` on the regressor).

    ``beta`` (``criterion__beta``, default 0: the plain NLL) weighs each value's loss by
    ``var ** beta``, taken as a constant (no gradient): the beta-NLL of Seitzer et al.
    (ICLR 2022).  The plain NLL's gradient for the mean is ``(mean - y) / var``, so the
    crystals it finds hard (large var) teach the mean little; beta = 0.5 evens that out,
    and beta = 1 gives the mean the gradient of the squared error.
    """

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean",
                 beta: float = 0.0) -> None:
        super().__init__(full=full, eps=eps, reduction=reduction)
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"criterion__beta={beta!r}: the beta-NLL weight must be in "
                             "[0, 1] (0: the plain Gaussian NLL, 0.5: the usual choice)")
        self.beta = float(beta)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, var = mean_and_variance(output, target.shape[-1])
        if self.beta == 0.0:
            return super().forward(mean, target, var)
        per_value = torch.nn.functional.gaussian_nll_loss(
            mean, target, var, full=self.full, eps=self.eps, reduction="none")
        per_value = per_value * var.detach().clamp(min=self.eps) ** self.beta
        if self.reduction == "mean":
            return per_value.mean()
        return per_value.sum() if self.reduction == "sum" else per_value


#: Values of ``loss`` of the regressor (scikit-learn's names) and their torch criteria.
#: ``"gaussian_nll"`` makes the network answer a mean and a variance per target.
LOSSES = {"squared_error": torch.nn.MSELoss, "absolute_error": torch.nn.L1Loss,
          "huber": torch.nn.HuberLoss, "gaussian_nll": GaussianNLLHead}

#: The original CGCNN ``main.py`` recipe as classifier parameters:
#: ``CGCNNClassifier(**ORIGINAL_CLASSIFIER_RECIPE)``.
ORIGINAL_CLASSIFIER_RECIPE = {
    "optimizer": torch.optim.SGD, "lr": 0.01, "optimizer__momentum": 0.9,
    "optimizer__weight_decay": 0.0, "batch_size": 256, "max_epochs": 30,
    "lr_schedule": "multistep", "early_stopping": False,
}
#: The original CGCNN ``main.py`` recipe as regressor parameters (SGD lr 0.01, momentum
#: 0.9, no weight decay, batch 256, MultiStepLR [100] x0.1, MSE, 30 epochs):
#: ``CGCNNRegressor(**ORIGINAL_RECIPE)`` or ``reg.set_params(**ORIGINAL_RECIPE)``.
ORIGINAL_RECIPE = {**ORIGINAL_CLASSIFIER_RECIPE, "loss": "squared_error"}


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up steps of a schedule over ``total_steps``: ``warmup_fraction`` of them,
    rounded down, and at least one whenever ``warmup_fraction > 0`` and there are at
    least two steps (one to warm up, one to decay); 0 for ``warmup_fraction=0``."""
    if warmup_fraction <= 0 or total_steps < 2:
        return 0
    return min(max(int(warmup_fraction * total_steps), 1), total_steps - 1)


class WarmupCosine:
    """Learning-rate factor of step ``t``: linear warm-up over ``warmup_steps``, then a
    cosine decay to 0 at ``total_steps`` (a picklable ``LambdaLR`` function).

    ``factor(t) = (t + 1) / (warmup_steps + 1)`` for ``t < warmup_steps``, else
    ``0.5 * (1 + cos(pi * (t - warmup_steps) / (total_steps - warmup_steps)))``.
    """

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class PerBatchLRScheduler(LRScheduler):
    """skorch's ``LRScheduler`` for schedules over the whole fit, stepped every batch.

    A one-cycle or warm-up + cosine schedule needs the number of optimiser steps of the
    fit: ``ceil(len(training set) / batch_size) * max_epochs``.  The training set is
    known only when the first epoch begins (after the validation split), so the torch
    scheduler is built then; on a resumed or continued fit it starts at the step the
    history has reached.  Past the last step the learning rate stays at its final value.
    The rate of every batch is recorded in the history's batches as ``event_lr``.

    Parameters
    ----------
    schedule : {"onecycle", "cosine"}
        ``"onecycle"``: torch's ``OneCycleLR`` (peak ``lr``, ``pct_start`` =
        ``warmup_fraction``, momentum / beta1 cycled as torch does).
        ``"cosine"``: :class:`WarmupCosine` through ``LambdaLR``.
    warmup_fraction : float, default=0.1
        Share of the steps spent warming up.
    """

    def __init__(self, schedule: str = "onecycle", warmup_fraction: float = 0.1,
                 event_name: str = "event_lr") -> None:
        super().__init__(policy=None, event_name=event_name, step_every="batch")
        self.schedule = schedule
        self.warmup_fraction = warmup_fraction

    def initialize(self) -> "PerBatchLRScheduler":
        self.policy_ = None
        self.lr_scheduler_ = None
        self.batch_idx_ = 0
        self.total_steps_ = None
        return self

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.batch_idx_ = 0
        if net.history:
            self.batch_idx_ = sum(net.history[:, "train_batch_count"])
        self.lr_scheduler_ = None  # built when the first epoch begins

    def on_epoch_begin(self, net: Any, dataset_train: Any = None, **kwargs: Any) -> None:
        if self.lr_scheduler_ is not None:
            return
        it = net.get_params_for("iterator_train")
        batch_size = it.get("batch_size", net.batch_size)
        n = len(dataset_train)
        per_epoch = n // batch_size if it.get("drop_last") else math.ceil(n / batch_size)
        self.total_steps_ = max(per_epoch * net.max_epochs, 1)
        warmup = warmup_steps(self.total_steps_, self.warmup_fraction)
        last = min(self.batch_idx_, self.total_steps_) - 1
        if self.schedule == "onecycle":
            self.lr_scheduler_ = torch.optim.lr_scheduler.OneCycleLR(
                net.optimizer_, max_lr=net.lr, total_steps=self.total_steps_,
                pct_start=self._onecycle_pct_start(warmup), last_epoch=last)
        else:
            self.lr_scheduler_ = torch.optim.lr_scheduler.LambdaLR(
                net.optimizer_, WarmupCosine(self.total_steps_, warmup), last_epoch=last)
        logger.debug("%s schedule over %d steps (%d per epoch, %d warm-up)", self.schedule,
                     self.total_steps_, per_epoch, warmup)

    def _onecycle_pct_start(self, warmup: int) -> float:
        """``pct_start`` for torch's ``OneCycleLR``, whose warm-up ends at step
        ``pct_start * total_steps - 1``: ``warmup_fraction`` when that leaves at least
        one step of warm-up, else exactly one step (torch divides by the warm-up's
        length, and fails on a warm-up of zero steps, e.g. 10 steps at 0.1); with fewer
        than three steps there is no room for both phases, and the rate decays from its
        peak (warm-up 0)."""
        total = self.total_steps_
        if self.warmup_fraction <= 0 or total < 3:
            return 0.0
        if self.warmup_fraction * total - 1 >= 1:
            return self.warmup_fraction
        return min(2.0 / total, (total - 1.0) / total)  # warm-up ends at step 1

    def _step(self, net: Any, lr_scheduler: Any, score: Any = None) -> None:
        if lr_scheduler.last_epoch < self.total_steps_:  # then hold the final rate
            lr_scheduler.step()


def check_recipe(net: Any) -> None:
    """ValueError naming the bad recipe parameter of ``net`` and what is allowed."""
    name = type(net).__name__
    if net.lr_schedule is not None and net.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{name}(lr_schedule={net.lr_schedule!r}): use one of "
                         f"{list(LR_SCHEDULES)} or None")
    fraction = net.warmup_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name}(warmup_fraction={fraction!r}): give a share of the "
                         "training steps, 0 <= warmup_fraction < 1")
    if not isinstance(net.early_stopping, bool):
        raise ValueError(f"{name}(early_stopping={net.early_stopping!r}): give True or False")
    fraction = net.validation_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < fraction < 1.0:
        raise ValueError(f"{name}(validation_fraction={fraction!r}): give a share of the "
                         "rows, 0 < validation_fraction < 1")
    patience = net.n_iter_no_change
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"{name}(n_iter_no_change={patience!r}): give a whole number of "
                         "epochs, at least 1")


def recipe_callbacks(net: Any) -> list[tuple[str, Any]]:
    """The callbacks of ``net``'s recipe parameters (checked first)."""
    check_recipe(net)
    callbacks = []
    if net.lr_schedule == "multistep":
        callbacks.append(("lr_scheduler", LRScheduler(
            policy=torch.optim.lr_scheduler.MultiStepLR, milestones=[100], gamma=0.1)))
    elif net.lr_schedule is not None:
        callbacks.append(("lr_scheduler", PerBatchLRScheduler(
            net.lr_schedule, warmup_fraction=net.warmup_fraction)))
    if net.early_stopping:
        callbacks.append(("early_stopping", EarlyStopping(
            monitor="valid_loss", patience=net.n_iter_no_change, load_best=True,
            sink=logger.info)))
    return callbacks


def validation_split(net: Any, seed: int | None) -> Any:
    """The split ``fit`` uses: ``train_split`` when given, else with ``early_stopping``
    skorch's ``ValidSplit(validation_fraction)`` (stratified for a classifier)."""
    if net.train_split is not None or not net.early_stopping:
        return net.train_split
    from skorch.dataset import ValidSplit

    return ValidSplit(net.validation_fraction, stratified=net._classification,
                      random_state=seed)


def check_callbacks(net: Any, has_validation: bool) -> None:
    """Refuse callbacks that cannot work together: an ``EarlyStopping`` on a validation
    score without a validation set, a user ``LRScheduler`` beside the built-in one."""
    name = type(net).__name__
    for cb_name, cb in getattr(net, "callbacks_", []):
        monitor = getattr(cb, "monitor", None)
        if isinstance(cb, EarlyStopping) and isinstance(monitor, str) \
                and monitor.startswith("valid") and not has_validation:
            raise ValueError(
                f"callback {cb_name!r} (EarlyStopping) watches {monitor!r}, but {name} has "
                "no validation set (train_split=None): pass early_stopping=True (with "
                "validation_fraction= and n_iter_no_change=) instead of the callback, or "
                "give train_split=skorch.dataset.ValidSplit(0.1)")
        if isinstance(cb, LRScheduler) and cb_name != "lr_scheduler" \
                and net.lr_schedule is not None:
            raise ValueError(
                f"callback {cb_name!r} is an LRScheduler, and {name} already schedules "
                f"the learning rate (lr_schedule={net.lr_schedule!r}): both would change "
                "it. Pass lr_schedule=None to use yours alone, or drop it")


#: A fit with fewer optimiser steps than this warns (:class:`ShortFitWarning`).
MIN_STEPS = 50


class ShortFitWarning(UserWarning):
    """A fit too short to learn much: its scores mean little."""


def warn_if_short(net: Any, dataset_train: Any) -> None:
    """Warn (:class:`ShortFitWarning`) when ``net`` is about to train fewer than
    :data:`MIN_STEPS` optimiser steps in all: ``max_epochs`` times the batches of an
    epoch of ``dataset_train``."""
    if dataset_train is None:
        return
    it = net.get_params_for("iterator_train")
    batch_size = it.get("batch_size", net.batch_size)
    n = len(dataset_train)
    per_epoch = n // batch_size if it.get("drop_last") else math.ceil(n / batch_size)
    steps = per_epoch * net.max_epochs
    if steps < MIN_STEPS:
        warnings.warn(
            f"{type(net).__name__} trains {steps} optimiser step(s) in all ({net.max_epochs} "
            f"epoch(s) of {per_epoch} batch(es) of up to {batch_size} of {n} crystals): too "
            f"few to learn much, so its predictions and scores mean little. Raise "
            f"max_epochs or lower batch_size to train at least {MIN_STEPS} steps",
            ShortFitWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside skcgcnn, skorch and scikit-learn
    (the user's ``fit`` call), counted from the caller of this function's caller."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
            "skcgcnn", "skorch", "sklearn"):
        frame, level = frame.f_back, level + 1
    return level


_END_COLOUR = "\x1b[0m"  # skorch.utils.Ansi.ENDC


class EpochTable(PrintLog):
    """skorch's ``PrintLog`` (the table of each epoch's losses, scores and duration)
    on standard error, as progress should be, with its colours only when standard error
    is a terminal; nothing with ``verbose=0``.

    Parameters are skorch's, but ``sink`` defaults to writing to ``sys.stderr`` (the
    stream at the time of writing, so that pytest's or a notebook's capture sees it).
    """

    def __init__(self, keys_ignored=None, sink=None, tablefmt="simple", floatfmt=".4f",
                 stralign="right"):
        super().__init__(keys_ignored=keys_ignored, sink=sink, tablefmt=tablefmt,
                         floatfmt=floatfmt, stralign=stralign)

    def _write(self, text: str) -> None:
        stream = sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def _coloured(self) -> bool:
        stream = sys.stderr if self.sink is None else None
        return bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def format_row(self, row, key, color):
        if self._coloured():
            return super().format_row(row, key, color)
        text = super().format_row(row, key, "")
        return text.replace(_END_COLOUR, "") if isinstance(text, str) else text

    def _sink(self, text: str, verbose: int) -> None:
        if verbose:
            (self.sink or self._write)(text)
