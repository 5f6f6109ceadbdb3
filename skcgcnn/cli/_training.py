"""The estimator of ``skcgcnn train``: recipe, validation scores, checkpoints, divergence.

:func:`apply_recipe` fills the training options from ``--recipe`` (explicit options
win) and :func:`check_recipe_args` checks the recipe options; :func:`make_estimator`
builds the CGCNN regressor or classifier with skorch's ``EpochScoring`` of the
validation score, the best-weights checkpoint, the training state that ``--resume``
reads, the recipe parameters (``lr_schedule``, ``warmup_fraction``, ``loss``, with
``--nll-beta`` the criterion's ``beta``) and,
with ``--early-stopping``, skorch's ``EarlyStopping`` on that validation score;
:func:`check_losses` refuses a run whose
loss went NaN.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from .._defaults import MOMENTUM
from ._common import CLIError, check_device, verbose
from ._resume import BEST_FILE, STATE_FILE
from ._train_options import _MULTISTEP_MILESTONES, _option_values, train_defaults

logger = logging.getLogger(__name__)

# --recipe NAME -> the estimators' parameter set (classification, regression)
_RECIPES = {"default": ("DEFAULT_CLASSIFIER_RECIPE", "DEFAULT_RECIPE"),
            "original": ("ORIGINAL_CLASSIFIER_RECIPE", "ORIGINAL_RECIPE")}


def _usage(message: str) -> CLIError:
    return CLIError(message, status=2)


def recipe_values(name: str, task: str) -> dict[str, Any]:
    """The training options (``args`` names and values) of recipe ``name``."""
    from .. import estimators

    return _option_values(getattr(estimators, _RECIPES[name][task != "classification"]))


def apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the training options that were not given taken from ``--recipe``.

    The training options default to None; each one left so takes the recipe's value,
    and one given with a value other than the recipe's overrides it (``--recipe original
    --epochs 5``: the original recipe for 5 epochs), which is logged.  The options a
    recipe sets are :data:`~skcgcnn.cli._train_options.RECIPE_OPTIONS` and ``--lr-milestones``; ``--momentum`` is
    SGD's and is not taken from a recipe when another optimizer is given.
    """
    name = getattr(args, "recipe", None) or "default"
    merged = dict(vars(args))
    merged["recipe"] = name
    overridden = []
    values = recipe_values(name, args.task)
    for option, value in values.items():
        given = getattr(args, option, None)
        if option == "momentum" and args.optim is not None and args.optim != values["optim"]:
            continue  # SGD's momentum: not for the optimizer given instead
        if option == "lr_milestones" and args.lr_schedule not in (None, "multistep"):
            continue
        if given is None or (option == "early_stopping" and given is False) \
                or (option == "lr_milestones" and given == _MULTISTEP_MILESTONES):
            merged[option] = value
        elif given != value:
            overridden.append(f"--{option.replace('_', '-')} {given} (recipe: {value})")
    if overridden:
        logger.info("--recipe %s with %s", name, ", ".join(overridden))
    return argparse.Namespace(**merged)


def check_recipe_args(args: argparse.Namespace) -> None:
    """Usage errors (exit status 2) for the recipe options; warnings for options that
    the chosen schedule ignores."""
    defaults = train_defaults()
    if not 0 <= args.warmup_fraction < 1:
        raise _usage(f"--warmup-fraction {args.warmup_fraction}: must be in [0, 1)")
    if args.n_iter_no_change < 1:
        raise _usage(f"--n-iter-no-change {args.n_iter_no_change}: must be at least 1")
    if args.n_iter_no_change != defaults["n_iter_no_change"] and not args.early_stopping:
        raise _usage(f"--n-iter-no-change {args.n_iter_no_change} is the patience of early "
                     "stopping: add --early-stopping")
    if args.task == "classification" and args.loss != defaults["loss"]:
        raise _usage(f"--loss {args.loss} applies to regression only; classification "
                     "trains on the cross-entropy")
    beta = getattr(args, "nll_beta", None)  # absent from the options of older runs
    if beta is not None and args.loss != "gaussian_nll":
        raise _usage(f"--nll-beta {beta} weighs the Gaussian NLL: add --loss gaussian_nll")
    if beta is not None and not 0 <= beta <= 1:
        raise _usage(f"--nll-beta {beta}: must be in [0, 1] (0: the plain Gaussian NLL, "
                     "0.5: the usual choice)")
    if args.lr_schedule != "multistep" and args.lr_milestones != defaults["lr_milestones"]:
        logger.warning("--lr-milestones applies to --lr-schedule multistep only; ignored "
                       "with --lr-schedule %s", args.lr_schedule)
    if args.lr_schedule not in ("onecycle", "cosine") \
            and args.warmup_fraction != defaults["warmup_fraction"]:
        logger.warning("--warmup-fraction applies to --lr-schedule onecycle or cosine "
                       "only; ignored with --lr-schedule %s", args.lr_schedule)


def stopped_early(est: Any) -> bool:
    """Whether the ``early_stopping`` callback of the fitted ``est`` ended training."""
    cb = dict(getattr(est, "callbacks_", [])).get("early_stopping")
    return cb is not None and cb.misses_ >= cb.patience


# The validation scores are skorch EpochScoring callables rather than scikit-learn scorer
# names on purpose: the "roc_auc" scorer raises where a run with one validation class or
# diverged probabilities should log NaN and go on (check_losses then decides).  The
# regressor's, the validation MAE, is the library's (skcgcnn.estimators._scoring, which
# tune's trials record too); these two are the classifier's.
def valid_auc(net: Any, X: Any, y: Any) -> float:
    """Validation ROC-AUC of class 1 (encoded labels); NaN when y holds one class."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    graphs = getattr(X, "X", X)
    proba = net.predict_proba(graphs)
    y = np.asarray(y)
    if len(np.unique(y)) < 2 or not np.isfinite(proba).all():  # one class, or diverged
        return float("nan")
    return float(roc_auc_score(y, proba[:, 1]))


def valid_accuracy(net: Any, X: Any, y: Any) -> float:
    import numpy as np

    graphs = getattr(X, "X", X)
    return float(np.mean(net.predict_proba(graphs).argmax(axis=1) == np.asarray(y)))


def check_losses(history: Any, args: argparse.Namespace) -> None:
    """CLIError when a training or validation loss went NaN or infinite: such a model
    is not reported (its metrics would describe a broken network)."""
    for row in history:
        for key, what in (("train_loss", "training"), ("valid_loss", "validation")):
            value = row.get(key)
            if value is not None and not math.isfinite(value):
                raise CLIError(
                    f"training diverged: the {what} loss is {value} at epoch {row['epoch']} "
                    f"of {len(history)}; no model is written. Lower --lr (it is {args.lr:g}) "
                    "or try another --optim")


def make_estimator(args: argparse.Namespace, valid_ds: Any, score: tuple[str, Any, bool],
                    out_dir: Path) -> tuple[Any, Any]:
    """The estimator of ``skcgcnn train`` and its best-weights checkpoint.

    Both checkpoints go to ``out_dir`` as training goes, each file written atomically:
    the best weights so far (``best_params.pt``) and, every ``--checkpoint-every``
    epochs, the whole training state (``training_state.pt``), which ``--resume``
    restores (the best checkpoint first, so that a state never names a best epoch whose
    weights are not on disk)."""
    from skorch.callbacks import EarlyStopping, EpochScoring, ProgressBar
    from skorch.helper import predefined_split

    from ..estimators import CGCNNClassifier, CGCNNRegressor
    from ..estimators import AtomicCheckpoint, LoadTrainingState, TrainingCheckpoint

    name, scorer, lower = score
    checkpoint = AtomicCheckpoint(monitor=f"{name}_best", f_params=BEST_FILE,
                                  f_optimizer=None, f_criterion=None, f_history=None,
                                  dirname=str(out_dir))
    state = TrainingCheckpoint(dirname=str(out_dir), every=args.checkpoint_every,
                               filename=STATE_FILE)
    callbacks: list = [("best_checkpoint", checkpoint), ("training_state", state)]
    if name != "valid_acc":
        callbacks.insert(0, ("valid_score", EpochScoring(scorer, lower_is_better=lower,
                                                         name=name)))
    from ..estimators._distributed import is_writer

    if not args.quiet and is_writer():  # one bar for the processes of torchrun
        callbacks.append(("progress_bar", ProgressBar()))
    if args.resume is not None:
        callbacks.append(("resume", LoadTrainingState(state)))
    if args.early_stopping:
        # the command's own EarlyStopping, last: it watches the validation score that
        # picks the best epoch and stops n epochs after that epoch, once the score, the
        # best checkpoint and the training state of the epoch are written (the
        # estimator's early_stopping=True is a default callback, which skorch runs
        # before these, so they would miss the epoch it stops at)
        callbacks += [("early_stopping", EarlyStopping(
                          monitor=name, lower_is_better=lower, patience=args.n_iter_no_change,
                          threshold=0.0, threshold_mode="abs", load_best=False,
                          sink=logger.info))]  # on --resume, LoadTrainingState replays it
    optimizer = args.optim.lower()
    # "auto" is resolved here: skorch's cached validation scoring reads net.device as is
    device = check_device(args.device)
    params: dict[str, Any] = dict(
        max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=optimizer,
        optimizer__weight_decay=args.weight_decay,
        module__atom_fea_len=args.atom_fea_len, module__h_fea_len=args.h_fea_len,
        module__n_conv=args.n_conv, module__n_h=args.n_h, module__conv=args.conv,
        train_split=predefined_split(valid_ds), random_state=args.seed,
        device=device, verbose=verbose(args) if is_writer() else 0,
        callbacks=callbacks,
        lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule,
        warmup_fraction=args.warmup_fraction,
        precision=getattr(args, "precision", "float32"))  # runs before --precision: float32
    if args.lr_schedule == "multistep":
        params["callbacks__lr_scheduler__milestones"] = list(args.lr_milestones)
    if args.task != "classification":
        params["loss"] = args.loss
        if getattr(args, "nll_beta", None) is not None:
            params["criterion__beta"] = args.nll_beta
    if optimizer == "sgd":
        params["optimizer__momentum"] = (MOMENTUM if args.momentum is None
                                         else args.momentum)
    elif args.momentum is not None:
        logger.warning("--momentum applies to SGD only; ignored with --optim %s", args.optim)
    cls = CGCNNClassifier if args.task == "classification" else CGCNNRegressor
    return cls(**params), checkpoint

