"""The options of ``skcgcnn train`` and their defaults.

:func:`add_train_options` adds the ``train`` subparser; :func:`train_defaults` parses
nothing with it, which gives the option defaults that ``--resume`` and ``--recipe``
compare against.  It imports only argparse-level modules, so ``skcgcnn.cli``,
``cli.train`` and the modules they use (``_resume``, ``_training``) import it without
importing one another in a circle.
"""
from __future__ import annotations

import argparse
from typing import Any

from .._defaults import MOMENTUM, PRECISIONS, REGRESSION_LOSSES, TEST_RATIO, VAL_RATIO
from ._common import (DATA_DIR, common_options, data_options, device_option, graph_options,
                      label_options, random_state_option)

__all__ = ["RECIPE_OPTIONS", "add_train_options", "recipe_help", "train_defaults"]

# the estimator parameter of each training option a recipe sets; the learning-rate
# milestones are the "multistep" schedule's own ([100], recipe_callbacks in
# skcgcnn.estimators._recipe), which no recipe dict holds
RECIPE_OPTIONS = {"max_epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                  "optimizer": "optim", "optimizer__momentum": "momentum",
                  "optimizer__weight_decay": "weight_decay", "lr_schedule": "lr_schedule",
                  "early_stopping": "early_stopping", "loss": "loss"}
_MULTISTEP_MILESTONES = [100]
_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

# The split's defaults come from _defaults (as model_selection's do), not from
# model_selection, which would load scikit-learn into every 'skcgcnn --help'.
_SHOWN_DEFAULT = {"train": "the rest", "val": f"{VAL_RATIO:g}", "test": f"{TEST_RATIO:g}"}


def _option_values(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's parameters as ``skcgcnn train`` option values.

    Raises
    ------
    KeyError
        When the recipe holds a parameter that no ``skcgcnn train`` option sets (the
        CLI would silently drop it).
    """
    values: dict[str, Any] = {}
    for param, value in recipe.items():
        option = RECIPE_OPTIONS[param]
        if param == "optimizer":
            name = value if isinstance(value, str) else value.__name__
            value = _OPTIMIZER_NAMES.get(name.lower(), name)
        elif param == "lr_schedule":
            value = "none" if value is None else value
        values[option] = value
    if values.get("lr_schedule") == "multistep":
        values["lr_milestones"] = list(_MULTISTEP_MILESTONES)
    return values


def recipe_help() -> dict[str, Any]:
    """The default recipe's option values, for the help texts (without importing torch:
    :data:`skcgcnn._defaults.DEFAULT_RECIPE`)."""
    from .._defaults import DEFAULT_RECIPE

    return _option_values(DEFAULT_RECIPE)


def train_defaults(*given: str) -> dict[str, Any]:
    """``vars`` of ``skcgcnn train GIVEN...`` parsed (without ``func``): the defaults of
    every option not in ``given`` (default: ``--graphs -``, so that no data folder is
    needed)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--debug", action="store_true")  # as skcgcnn.cli.build_parser's
    sub = parser.add_subparsers(dest="command")
    add_train_options(sub, common_options())
    return vars(parser.parse_args(["train", *(given or ("--graphs", "-"))]))


def add_train_options(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` subparser with its options and their defaults to ``sub`` and
    return it (:func:`skcgcnn.cli.train.add_train_parser` sets the function it runs)."""
    p = sub.add_parser(
        "train", parents=[common],
        help="train a CGCNN on a CGCNN data folder (the original main.py)",
        description=(
            "Train a CGCNN regressor or classifier on a CGCNN data folder (id_prop.csv and "
            "<id>.cif files, or a cifs.tar.gz) or on graphs cached by 'skcgcnn featurize'. "
            "The data are split into train/validation/test sets; the weights of the epoch "
            "with the best validation MAE (classification: ROC-AUC) are kept. Writes "
            "model.pt, test_results.csv (id,target,prediction without header, as main.py), "
            "metrics.json, split.csv, history.json, learning_curve.png and parity.png "
            "(classification: roc_curve.png) into --output-dir. While it trains, the "
            "training state (training_state.pt) and the best weights so far "
            "(best_params.pt) are kept there after every epoch: a killed run continues "
            "with --resume DIR."),
        epilog="example: skcgcnn train data/sample-regression --train-ratio 0.6 "
               "--val-ratio 0.2 --test-ratio 0.2 --epochs 30 --output-dir run1",
    )
    p.add_argument("root_dir", nargs="?", metavar=DATA_DIR,
                   help="CGCNN data folder (or a .tar.gz of CIFs beside id_prop.csv); not "
                        "needed with --graphs")
    p.add_argument("--graphs", metavar="FILE",
                   help=f"train on graphs written by 'skcgcnn featurize' instead of {DATA_DIR}")
    p.add_argument("--trusted", action="store_true",
                   help="with --graphs: also read an old graph file, which is a pickle and "
                        "can run code when loaded, so only for files you made yourself")
    p.add_argument("--task", choices=("regression", "classification"), default="regression",
                   help="(default: regression)")
    p.add_argument("--output-dir", default=".", metavar="DIR",
                   help="where the model, results and plots go (default: the current "
                        "directory, as main.py)")
    # the namespace keeps the name "seed": run.json records and --resume read it
    random_state_option(p, "the split, the weight initialisation and the shuffling",
                        dest="seed")
    device_option(p)
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="bfloat16: the forward passes under torch.autocast (matrix products "
                        "in bf16, weights in float32; see docs/gpu.md) (default: float32)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run whose --output-dir is DIR (killed or stopped) "
                        "from its last checkpoint, with its options and data, up to its "
                        "final epoch; only -q, --debug, --device, --n-jobs and --no-cache "
                        "may be given with it")

    opt = p.add_argument_group("training")
    # The training options default to None: --recipe (default: "default", the
    # estimators' default recipe) fills those not given (apply_recipe).
    recipe = recipe_help()
    opt.add_argument("--epochs", type=int, default=None, metavar="N",
                     help=f"training epochs (default: {recipe['epochs']})")
    opt.add_argument("-b", "--batch-size", type=int, default=None, metavar="N",
                     help=f"crystals per mini-batch (default: {recipe['batch_size']})")
    opt.add_argument("--lr", "--learning-rate", type=float, default=None, dest="lr",
                     help=f"learning rate, the peak of onecycle and cosine (default: "
                          f"{recipe['lr']:g})")
    opt.add_argument("--lr-milestones", type=int, nargs="+", default=[100], metavar="EPOCH",
                     help="epochs at which the learning rate is multiplied by 0.1 "
                          "(default: 100)")
    opt.add_argument("--optim", choices=("SGD", "Adam", "AdamW"), default=None,
                     type=lambda s: {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(
                         s.lower(), s),
                     help=f"optimizer (default: {recipe['optim']})")
    opt.add_argument("--momentum", type=float, default=None,
                     help=f"SGD momentum (default: {MOMENTUM})")
    opt.add_argument("--weight-decay", "--wd", type=float, default=None, dest="weight_decay",
                     help=f"weight decay (default: {recipe['weight_decay']:g})")
    opt.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                     help="write the training state (for --resume) into --output-dir after "
                          "every N epochs (default: 1)")
    # the recipe (issue 14): the estimators' parameters of the same names
    opt.add_argument("--recipe", choices=("default", "original"), default="default",
                     help="the training recipe that the training options not given take "
                          "their values from: 'default' is the estimators' default "
                          "(skcgcnn.estimators.DEFAULT_RECIPE), 'original' is main.py's "
                          "(skcgcnn.estimators.ORIGINAL_RECIPE: SGD, lr 0.01, momentum 0.9, "
                          "batch 256, 30 epochs, LR x0.1 at epoch 100, MSE) (default: "
                          "default)")
    opt.add_argument("--lr-schedule", choices=("multistep", "onecycle", "cosine", "none"),
                     default=None,
                     help="learning-rate schedule: multistep (x0.1 at --lr-milestones, per "
                          "epoch, as main.py), onecycle or cosine (warm-up then decay, per "
                          "batch, over all epochs; --lr is the peak), none (constant) "
                          f"(default: {recipe['lr_schedule']})")
    opt.add_argument("--warmup-fraction", type=float, default=0.1, metavar="F",
                     help="share of the training steps spent warming up, with onecycle or "
                          "cosine (default: 0.1)")
    opt.add_argument("--loss", choices=REGRESSION_LOSSES, default=None,
                     help="regression loss on the standardised targets; gaussian_nll "
                          "gives the network a variance output too, and the test "
                          "predictions' std is written beside them (default: "
                          f"{recipe['loss']}; main.py's is squared_error)")
    opt.add_argument("--nll-beta", type=float, default=None, metavar="B",
                     help="with --loss gaussian_nll: the beta-NLL weight in [0, 1] "
                          "(criterion__beta; 0.5 is the usual choice) (default: 0, the "
                          "plain Gaussian NLL)")
    opt.add_argument("--early-stopping", action="store_true",
                     help="stop when the validation MAE (classification: ROC-AUC) has "
                          "not improved for --n-iter-no-change epochs; the weights kept "
                          "are those of its best epoch")
    opt.add_argument("--n-iter-no-change", type=int, default=10, metavar="N",
                     help="patience of --early-stopping, in epochs (default: 10)")

    net = p.add_argument_group("network")
    net.add_argument("--atom-fea-len", type=int, default=64, metavar="N",
                     help="hidden atom features in the convolutional layers (default: 64)")
    net.add_argument("--h-fea-len", type=int, default=128, metavar="N",
                     help="hidden features after pooling (default: 128)")
    net.add_argument("--n-conv", type=int, default=3, metavar="N",
                     help="convolutional layers (default: 3)")
    net.add_argument("--n-h", type=int, default=1, metavar="N",
                     help="hidden layers after pooling (default: 1)")
    net.add_argument("--conv", choices=("gated", "simple"), default="gated",
                     help="convolution: the paper's gated one or the simple one "
                          "(default: gated)")

    split = p.add_argument_group(
        "split", "Each of train/val/test is given as a ratio or a size (not both). Without "
                 "--train-ratio/--train-size the training set is everything else.")
    for name, shown in _SHOWN_DEFAULT.items():
        group = split.add_mutually_exclusive_group()
        group.add_argument(f"--{name}-ratio", type=float, default=None, metavar="R",
                           help=f"fraction of the data for the {name} set (default: {shown})")
        group.add_argument(f"--{name}-size", type=int, default=None, metavar="N",
                           help=f"number of crystals in the {name} set")
    split.add_argument("--split", metavar="FILE",
                       help="use the split in FILE (id,split rows with a header, split "
                            "train, val or test: the split.csv of an earlier run) instead of "
                            "drawing one; not with the ratio and size options")

    graph_options(p, defaults_none=True)
    data_options(p)
    label_options(p)
    return p
