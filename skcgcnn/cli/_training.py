"""The estimator of ``skcgcnn train``: validation scores, checkpoints, divergence check.

:func:`make_estimator` builds the CGCNN regressor or classifier with skorch's
``EpochScoring`` of the validation score, the best-weights checkpoint and the training
state that ``--resume`` reads; :func:`check_losses` refuses a run whose loss went NaN.
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

logger = logging.getLogger(__name__)


# The validation scores are skorch EpochScoring callables rather than scikit-learn scorer
# names on purpose: "neg_mean_absolute_error" would log negative numbers under another
# name in history.json, and the "roc_auc" scorer raises where a run with one validation
# class or diverged probabilities should log NaN and go on (check_losses then decides).
def valid_mae(net: Any, X: Any, y: Any) -> float:
    """Validation MAE in the target's units (skorch EpochScoring; cached forward pass)."""
    import numpy as np

    graphs = getattr(X, "X", X)
    pred = np.asarray(net.predict(graphs), dtype=float).reshape(len(graphs), -1)
    return float(np.mean(np.abs(pred - np.asarray(y, dtype=float).reshape(pred.shape))))


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
    from skorch.callbacks import EpochScoring, ProgressBar
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
    if not args.quiet:
        callbacks.append(("progress_bar", ProgressBar()))
    if args.resume is not None:
        callbacks.append(("resume", LoadTrainingState(state)))
    optimizer = args.optim.lower()
    # "auto" is resolved here: skorch's cached validation scoring reads net.device as is
    device = check_device(args.device)
    params: dict[str, Any] = dict(
        max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=optimizer,
        optimizer__weight_decay=args.weight_decay,
        module__atom_fea_len=args.atom_fea_len, module__h_fea_len=args.h_fea_len,
        module__n_conv=args.n_conv, module__n_h=args.n_h, module__conv=args.conv,
        train_split=predefined_split(valid_ds), random_state=args.seed,
        device=device, verbose=verbose(args), callbacks=callbacks,
        callbacks__lr_scheduler__milestones=list(args.lr_milestones))
    if optimizer == "sgd":
        params["optimizer__momentum"] = (MOMENTUM if args.momentum is None
                                         else args.momentum)
    elif args.momentum is not None:
        logger.warning("--momentum applies to SGD only; ignored with --optim %s", args.optim)
    cls = CGCNNClassifier if args.task == "classification" else CGCNNRegressor
    return cls(**params), checkpoint

