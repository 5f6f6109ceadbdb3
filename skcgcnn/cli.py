"""The ``skcgcnn`` command line: train, predict, featurize (and benchmark, tune).

``skcgcnn train`` does the job of the original CGCNN ``main.py`` and ``skcgcnn predict``
that of its ``predict.py``; ``skcgcnn featurize`` builds the crystal graphs of a dataset
once and caches them in a file that ``train --graphs`` reads.  Subcommands defined in
other modules (``benchmark`` in :mod:`skcgcnn.benchmark`, ``tune`` in ``skcgcnn.tuning``)
are imported only when they are run, so ``skcgcnn --help`` starts in a fraction of a
second; torch and pymatgen are imported inside the handlers for the same reason.

Every failure the user can fix (a missing folder, an unreadable model file, bad
options, bad structures) ends with a one-line reason on stderr and a non-zero exit
status: 2 for wrong options, 1 for everything else.  ``--debug`` adds the traceback.
See ``docs/cli.md`` for the options and their counterparts in ``main.py``/``predict.py``.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import pickle
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

PROG = "skcgcnn"

#: Format tag of the graph files written by ``skcgcnn featurize`` (skcgcnn.graph_io.FORMAT).
GRAPHS_FORMAT = "skcgcnn-graphs"

#: Subcommands defined in other modules: name -> (module, add-parser function, run
#: function, one-line help).  A module that is not there is left out of the command line.
EXTERNAL_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "benchmark": ("skcgcnn.benchmark", "add_benchmark_parser", "run_benchmark_command",
                  "compare CGCNN with descriptor baselines on the same cross-validation "
                  "folds"),
    "tune": ("skcgcnn.tuning", "add_tune_parser", "run_tune_command",
             "search CGCNN hyper-parameters with Optuna"),
}

_LABELS = {"mae": "MAE", "rmse": "RMSE", "r2": "R²", "accuracy": "accuracy",
           "precision": "precision", "recall": "recall", "f1": "F1", "roc_auc": "ROC-AUC",
           "valid_mae": "MAE", "valid_auc": "ROC-AUC", "valid_acc": "accuracy"}

# the original main.py defaults
_GRAPH_DEFAULTS = {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}
_DEFAULT_VAL_RATIO = 0.1
_DEFAULT_TEST_RATIO = 0.1
_DEFAULT_MOMENTUM = 0.9

__all__ = ["main", "build_parser", "CLIError", "EXTERNAL_COMMANDS", "GRAPHS_FORMAT"]


class CLIError(Exception):
    """A failure the user can fix; its message is printed as one line.

    Parameters
    ----------
    message : str
        What is wrong and what to do.
    status : int, default=1
        Exit status (2 for wrong options, as argparse).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------
def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, epoch table or log lines; only warnings, "
                             "errors and the final summary")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show debug log lines and the traceback of a failure")
    return common


def _graph_options(parser: argparse.ArgumentParser, defaults_none: bool) -> None:
    """--radius, --max-num-nbr, --dmin, --step, --atom-features (the original data_options)."""
    def default(key: str) -> Any:
        return None if defaults_none else _GRAPH_DEFAULTS[key]

    group = parser.add_argument_group("crystal graphs")
    group.add_argument("--radius", type=float, default=default("radius"), metavar="Å",
                       help="neighbour cut-off radius in Å (default: 8)")
    group.add_argument("--max-num-nbr", type=int, default=default("max_num_nbr"),
                       metavar="N", help="neighbours kept per atom (default: 12)")
    group.add_argument("--dmin", type=float, default=default("dmin"), metavar="Å",
                       help="smallest centre of the Gaussian distance expansion (default: 0)")
    group.add_argument("--step", type=float, default=default("step"), metavar="Å",
                       help="step (and width) of the Gaussian distance expansion "
                            "(default: 0.2)")
    group.add_argument("--atom-features", metavar="NAME|FILE",
                       help="atom-feature set: cgcnn, onehot, magpie, matscholar, megnet or "
                            "the path of an atom_init.json (default: ROOT_DIR/atom_init.json "
                            "when present, else cgcnn)")


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--id-prop", default="id_prop.csv", metavar="FILE",
                       help="the id,target file inside ROOT_DIR (default: id_prop.csv)")
    group.add_argument("--target", metavar="NAME",
                       help="target column when the id_prop file has several (default: the "
                            "first)")
    group.add_argument("--n-jobs", type=int, default=None, metavar="N",
                       help="processes for CIF parsing and graph building (default: 1; "
                            "-1: all cores)")
    group.add_argument("--skip-errors", action="store_true",
                       help="drop structures that cannot be read or turned into graphs "
                            "(they are logged) instead of stopping")
    group.add_argument("--no-cache", action="store_true",
                       help="do not use the parsed-structure cache ($SKCGCNN_CACHE or "
                            "~/.cache/skcgcnn)")


def _add_train_parser(sub: Any, common: argparse.ArgumentParser) -> None:
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
    p.add_argument("root_dir", nargs="?", metavar="ROOT_DIR",
                   help="CGCNN data folder (or a .tar.gz of CIFs beside id_prop.csv); not "
                        "needed with --graphs")
    p.add_argument("--graphs", metavar="FILE",
                   help="train on graphs written by 'skcgcnn featurize' instead of ROOT_DIR")
    p.add_argument("--trusted", action="store_true",
                   help="with --graphs: also read an old graph file, which is a pickle and "
                        "can run code when loaded, so only for files you made yourself")
    p.add_argument("--task", choices=("regression", "classification"), default="regression",
                   help="(default: regression)")
    p.add_argument("--output-dir", default=".", metavar="DIR",
                   help="where the model, results and plots go (default: the current "
                        "directory, as main.py)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the weight initialisation and the shuffling "
                        "(default: 0)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="torch device; auto takes the GPU when there is one (default: auto)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run whose --output-dir is DIR (killed or stopped) "
                        "from its last checkpoint, with its options and data, up to its "
                        "final epoch; only -q, --debug, --device, --n-jobs and --no-cache "
                        "may be given with it")

    opt = p.add_argument_group("training")
    opt.add_argument("--epochs", type=int, default=30, metavar="N",
                     help="training epochs (default: 30)")
    opt.add_argument("-b", "--batch-size", type=int, default=256, metavar="N",
                     help="crystals per mini-batch (default: 256)")
    opt.add_argument("--lr", "--learning-rate", type=float, default=0.01, dest="lr",
                     help="initial learning rate (default: 0.01)")
    opt.add_argument("--lr-milestones", type=int, nargs="+", default=[100], metavar="EPOCH",
                     help="epochs at which the learning rate is multiplied by 0.1 "
                          "(default: 100)")
    opt.add_argument("--optim", choices=("SGD", "Adam", "AdamW"), default="SGD",
                     type=lambda s: {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(
                         s.lower(), s),
                     help="optimizer (default: SGD)")
    opt.add_argument("--momentum", type=float, default=None,
                     help="SGD momentum (default: 0.9)")
    opt.add_argument("--weight-decay", "--wd", type=float, default=0.0, dest="weight_decay",
                     help="weight decay (default: 0)")
    opt.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                     help="write the training state (for --resume) into --output-dir after "
                          "every N epochs (default: 1)")

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
    for name, default in (("train", None), ("val", _DEFAULT_VAL_RATIO),
                          ("test", _DEFAULT_TEST_RATIO)):
        group = split.add_mutually_exclusive_group()
        shown = "the rest" if default is None else str(default)
        group.add_argument(f"--{name}-ratio", type=float, default=None, metavar="R",
                           help=f"fraction of the data for the {name} set (default: {shown})")
        group.add_argument(f"--{name}-size", type=int, default=None, metavar="N",
                           help=f"number of crystals in the {name} set")

    _graph_options(p, defaults_none=True)
    _data_options(p)
    p.set_defaults(func=_run_train)


def _add_predict_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict", parents=[common],
        help="predict with a trained model or an original .pth.tar (the original predict.py)",
        description=(
            "Predict the property of crystals with a model written by 'skcgcnn train' (or "
            "skcgcnn.estimators.save_model) or an original CGCNN .pth.tar checkpoint. The "
            "output is CSV without header: id, target (empty when unknown), prediction; for "
            "classification the prediction is the probability of class 1, as predict.py. "
            "When ROOT_DIR has an id_prop.csv its targets are written too and the MAE "
            "(classification: accuracy and ROC-AUC) is printed."),
        epilog="example: skcgcnn predict pre-trained/formation-energy-per-atom.pth.tar "
               "data/sample-regression --output test_results.csv",
    )
    p.add_argument("model", metavar="MODEL",
                   help="model.pt from 'skcgcnn train' or an original CGCNN .pth.tar")
    p.add_argument("inputs", nargs="+", metavar="ROOT_DIR|CIF",
                   help="a CGCNN data folder (id_prop.csv optional: without it, every *.cif "
                        "in it), or CIF files")
    p.add_argument("-o", "--output", default="-", metavar="FILE",
                   help="CSV file to write (default: standard output)")
    p.add_argument("--trusted", action="store_true",
                   help="allow checkpoints that hold pickled Python objects (the original "
                        "classification checkpoints); they can run code when loaded, so "
                        "only for files you trust")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="torch device (default: cpu)")
    p.add_argument("-b", "--batch-size", type=int, default=None, metavar="N",
                   help="crystals per batch (default: the model's)")
    _data_options(p)
    p.set_defaults(func=_run_predict)


def _add_featurize_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "featurize", parents=[common],
        help="build the crystal graphs of a dataset once and save them for 'train --graphs'",
        description=(
            "Read a CGCNN data folder, build the crystal graphs of all its structures and "
            "save them with their ids and targets in an .npz file (arrays and JSON, no "
            "pickle), which 'skcgcnn train --graphs FILE' reads instead of building the "
            "graphs again."),
        epilog="example: skcgcnn featurize data/mp-36737 --output graphs.npz --n-jobs -1",
    )
    p.add_argument("root_dir", metavar="ROOT_DIR",
                   help="CGCNN data folder (or a .tar.gz of CIFs beside id_prop.csv)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="graph file to write (.npz)")
    _graph_options(p, defaults_none=False)
    _data_options(p)
    p.set_defaults(func=_run_featurize)


def _external_available(name: str) -> bool:
    module = EXTERNAL_COMMANDS[name][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The ``skcgcnn`` argument parser.

    Parameters
    ----------
    load : str, optional
        Name of an external subcommand (see :data:`EXTERNAL_COMMANDS`) whose module is
        imported so that its real parser is added.  The other external subcommands are
        listed in the help without importing their modules (they cannot be parsed).
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Crystal Graph Convolutional Neural Networks (CGCNN) with scikit-learn: "
                    "train, predict and featurize from the command line.",
        epilog=f"'{PROG} COMMAND --help' shows the options of a command; docs/cli.md maps "
               "them to the original main.py and predict.py.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show debug log lines and the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()
    _add_train_parser(sub, common)
    _add_predict_parser(sub, common)
    _add_featurize_parser(sub, common)
    for name, (module, add_name, run_name, help_text) in EXTERNAL_COMMANDS.items():
        if name == load:
            mod = importlib.import_module(module)
            external = getattr(mod, add_name)(sub)
            external.set_defaults(func=getattr(mod, run_name))
        elif _external_available(name):
            # listed only; main() builds the real parser when this command is run
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


# ----------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------
def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    line = text.splitlines()[0].strip()
    # the library's advice names its keyword arguments; say it in command-line words
    line = line.replace("pass on_error='skip'", "pass --skip-errors")
    line = line.replace("on_error='skip'", "--skip-errors")
    return line


class _OneLineWarnings:
    """Show warnings as ``skcgcnn: warning: ...`` lines, each distinct text once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, message: Any, category: type, filename: str, lineno: int,
                 file: Any = None, line: Any = None) -> None:
        text = _one_line(message if isinstance(message, Warning) else Warning(message))
        if text in self.seen:
            return
        self.seen.add(text)
        logger.warning("%s: %s", category.__name__, text)


@contextmanager
def _console(level: int) -> Iterator[None]:
    """Log lines of the skcgcnn loggers to stderr and warnings as one-line log entries."""
    package = logging.getLogger("skcgcnn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    old_level, old_propagate = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _OneLineWarnings()
            yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)
        package.propagate = old_propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skcgcnn`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when the command failed, 2 for wrong options, 130 when
        interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    debug = "--debug" in argv
    try:
        load = command if command in EXTERNAL_COMMANDS and _external_available(command) \
            else None
        parser = build_parser(load)
    except ImportError as exc:  # an external command's optional dependency is missing
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{PROG} {command}: error: {_one_line(exc)}\n")
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False))
    quiet = bool(getattr(args, "quiet", False))
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    prefix = f"{PROG} {args.command}"
    with _console(level):
        try:
            status = args.func(args)
            return 0 if status is None else int(status)
        except KeyboardInterrupt:
            sys.stderr.write(f"{prefix}: interrupted\n")
            return 130
        except CLIError as exc:
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: {_one_line(exc)}\n")
            return exc.status
        except (OSError, ValueError, ImportError, pickle.UnpicklingError) as exc:
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: {_one_line(exc)}\n")
            return 1
        except Exception as exc:  # a bug: say so in one line, the traceback with --debug
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: unexpected {type(exc).__name__}: "
                             f"{_one_line(exc)} (run with --debug for the traceback)\n")
            return 1


# ----------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------
def _verbose(args: argparse.Namespace) -> int:
    return 0 if args.quiet else 1


def _existing_root(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise CLIError(f"ROOT_DIR {path!r} does not exist; give a CGCNN data folder "
                       "(id_prop.csv and <id>.cif files)")
    return root


def _atom_features_spec(given: str | None, root: Path | None) -> Any:
    """The --atom-features value, else ROOT_DIR/atom_init.json (as main.py), else cgcnn."""
    if given is not None:
        looks_like_path = given.endswith(".json") or os.sep in given
        if looks_like_path and not Path(given).is_file():
            raise CLIError(f"--atom-features {given!r}: no such file; give a named set "
                           "(cgcnn, onehot, magpie, matscholar, megnet) or an atom_init.json")
        return given
    if root is not None and root.is_dir() and (root / "atom_init.json").is_file():
        logger.info("atom features from %s", root / "atom_init.json")
        return str(root / "atom_init.json")
    return "cgcnn"


def _load_folder(root: Path, args: argparse.Namespace) -> Any:
    """``load_cgcnn_folder`` with the command's options; targets may be missing (NaN)."""
    from .datasets import load_cgcnn_folder

    return load_cgcnn_folder(
        root, id_prop=args.id_prop, missing_target="nan", n_jobs=args.n_jobs,
        on_error="skip" if args.skip_errors else "raise",
        cache=not args.no_cache, verbose=_verbose(args))


def _log_skipped(errors: Sequence[tuple], what: str) -> list[tuple[str, str]]:
    """Log every skipped entry (the count and all ids in one warning, each reason at INFO)
    and return them as ``(id, reason)`` rows; ``errors`` end in ``(id, reason)``."""
    rows = [(str(e[-2]), _one_line(ValueError(e[-1]))) for e in errors]
    if rows:
        logger.warning("%d %s skipped: %s (first: %s)", len(rows), what,
                       ", ".join(ident for ident, _ in rows), rows[0][1])
        for ident, reason in rows:
            logger.info("skipped %s: %s", ident, reason)
    return rows


def _write_skipped(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    """``id,reason`` of every skipped structure (a header only when none was skipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "reason"])
        writer.writerows(rows)


def _object_array(values: Sequence[Any]) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _structure_series(ids: Sequence[Any], structures: Sequence[Any]) -> Any:
    import pandas as pd

    return pd.Series(_object_array(structures), index=pd.Index(list(ids), dtype=object))


def _build_graphs(root: Path, args: argparse.Namespace, graph_params: dict,
                  skipped: list | None = None) -> tuple[Any, Any, Any, list[str]]:
    """Load ROOT_DIR and build its graphs: (transformer, graphs, targets 2-D, names).

    With ``--skip-errors``, the ``(id, reason)`` of every structure left out are logged
    and appended to ``skipped``.
    """
    skipped = [] if skipped is None else skipped
    import numpy as np

    from .transformers import StructureGraphTransformer

    spec = _atom_features_spec(args.atom_features, root)
    t0 = time.perf_counter()
    df = _load_folder(root, args)
    skipped += _log_skipped(df.attrs.get("errors", []), "entries of the data folder")
    names = [c for c in df.columns if c != "structure"]
    if len(df) == 0:
        raise CLIError(f"no usable structures in {root}")
    logger.info("%d structures read from %s in %.1f s", len(df), root,
                time.perf_counter() - t0)
    transformer = StructureGraphTransformer(
        atom_features=spec, n_jobs=args.n_jobs, verbose=_verbose(args),
        on_error="skip" if args.skip_errors else "raise", **graph_params)
    t0 = time.perf_counter()
    graphs = transformer.fit_transform(df["structure"])
    skipped += _log_skipped(transformer.errors_, "structures without a graph")
    logger.info("%d crystal graphs (%d atoms) built in %.1f s", len(graphs),
                len(graphs.numbers), time.perf_counter() - t0)
    targets = df[names].to_numpy(dtype=float)[transformer.kept_indices_] if names else \
        np.zeros((len(graphs), 0))
    return transformer, graphs, targets, names


def _read_graph_file(path: str, trusted: bool = False) -> Any:
    """The GraphBundle of --graphs FILE (old pickle files only with --trusted)."""
    from .graph_io import GraphFileError, UntrustedGraphFileError, load_graphs

    file = Path(path).expanduser()
    if not file.is_file():
        raise CLIError(f"--graphs {path!r}: no such file; write one with 'skcgcnn featurize'")
    try:
        return load_graphs(file, trusted=trusted)
    except UntrustedGraphFileError as exc:
        raise CLIError(f"--graphs {path!r} is a pickle (an old graph file, or not one at "
                       "all), which can run code when loaded; write the graphs again with "
                       "'skcgcnn featurize', or pass --trusted if you made the file "
                       "yourself") from exc
    except GraphFileError as exc:
        raise CLIError(f"--graphs {path!r} is not a graph file written by 'skcgcnn "
                       f"featurize': {_one_line(exc)}") from exc


def _choose_target(names: Sequence[str], wanted: str | None, where: str) -> int:
    if not names:
        raise CLIError(f"{where} has no target column; id_prop.csv rows are id,target")
    if wanted is None:
        if len(names) > 1:
            logger.info("target %r (of %s); choose another with --target", names[0],
                        ", ".join(names))
        return 0
    if wanted not in names:
        raise CLIError(f"--target {wanted!r} is not a target of {where}; choose one of "
                       f"{', '.join(names)}")
    return list(names).index(wanted)


def _fmt(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def _write_results(path: Path | None, ids: Sequence[Any], targets: Any, preds: Any) -> None:
    """id, target, prediction[, prediction ...] rows without header, as the original."""
    import numpy as np

    preds = np.asarray(preds, dtype=float).reshape(len(ids), -1)
    handle = sys.stdout if path is None else open(path, "w", newline="")
    try:
        writer = csv.writer(handle, lineterminator="\n")
        for ident, target, row in zip(ids, targets, preds):
            writer.writerow([ident, _fmt(target)] + [_fmt(v) for v in row])
    finally:
        if path is not None:
            handle.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _regression_metrics(y: Any, pred: Any) -> dict[str, float | None]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return {"mae": float(mean_absolute_error(y, pred)),
            "rmse": float(root_mean_squared_error(y, pred)),
            "r2": float(r2_score(y, pred)) if len(y) >= 2 else None}


def _classification_metrics(y: Any, labels: Any, proba: Any, classes: Any
                            ) -> dict[str, float | None]:
    """Accuracy; for two classes also precision, recall, F1 and ROC-AUC of classes[1]."""
    import numpy as np
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y)
    out: dict[str, float | None] = {"accuracy": float(accuracy_score(y, labels))}
    if len(classes) == 2:
        positive = classes[1]
        precision, recall, f1, _ = precision_recall_fscore_support(
            y == positive, np.asarray(labels) == positive, average="binary", zero_division=0)
        out.update(precision=float(precision), recall=float(recall), f1=float(f1))
        both = len(np.unique(y == positive)) == 2
        out["roc_auc"] = float(roc_auc_score(y == positive, proba[:, 1])) if both else None
    return out


# ----------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------
def _graph_params(args: argparse.Namespace) -> dict:
    return {k: (_GRAPH_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k))
            for k in _GRAPH_DEFAULTS}


def _check_train_args(args: argparse.Namespace) -> None:
    def usage(message: str) -> CLIError:
        return CLIError(message, status=2)

    if args.root_dir is None and args.graphs is None:
        raise usage("give ROOT_DIR (a CGCNN data folder) or --graphs FILE")
    if args.root_dir is not None and args.graphs is not None:
        raise usage("give either ROOT_DIR or --graphs FILE, not both")
    if args.trusted and args.graphs is None:
        raise usage("--trusted applies to --graphs FILE only")
    if args.graphs is not None:
        given = [f"--{k.replace('_', '-')}" for k in _GRAPH_DEFAULTS
                 if getattr(args, k) is not None]
        if given:
            raise usage(f"{', '.join(given)} cannot be used with --graphs: the graphs are "
                        "already built (run 'skcgcnn featurize' again to change them)")
    for name, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--checkpoint-every", args.checkpoint_every, 1),
                             ("--atom-fea-len", args.atom_fea_len, 1),
                             ("--h-fea-len", args.h_fea_len, 1), ("--n-conv", args.n_conv, 1),
                             ("--n-h", args.n_h, 1)):
        if value < low:
            raise usage(f"{name} {value}: must be at least {low}")
    if not args.lr > 0:
        raise usage(f"--lr {args.lr}: must be positive")
    if args.weight_decay < 0:
        raise usage(f"--weight-decay {args.weight_decay}: must not be negative")
    if args.momentum is not None and not 0 <= args.momentum < 1:
        raise usage(f"--momentum {args.momentum}: must be in [0, 1)")
    for name in ("train", "val", "test"):
        ratio = getattr(args, f"{name}_ratio")
        size = getattr(args, f"{name}_size")
        if ratio is not None and not 0 <= ratio <= 1:
            raise usage(f"--{name}-ratio {ratio}: must be between 0 and 1")
        if size is not None and size < 0:
            raise usage(f"--{name}-size {size}: must not be negative")
    params = _graph_params(args)
    if not params["radius"] > 0 or params["max_num_nbr"] < 1 or not params["step"] > 0:
        raise usage("--radius and --step must be positive and --max-num-nbr at least 1")


def split_sizes(n: int, args: argparse.Namespace) -> tuple[int, int, int]:
    """Sizes of the train, validation and test sets of ``n`` crystals.

    A ratio gives ``floor(ratio * n)`` crystals as the original ``main.py``; without
    ``--train-ratio``/``--train-size`` the training set is every crystal left.
    """
    def size(name: str, default_ratio: float | None) -> int | None:
        count = getattr(args, f"{name}_size")
        ratio = getattr(args, f"{name}_ratio")
        if count is not None:
            return count
        if ratio is None:
            ratio = default_ratio
        return None if ratio is None else int(math.floor(ratio * n + 1e-9))

    n_val = size("val", _DEFAULT_VAL_RATIO)
    n_test = size("test", _DEFAULT_TEST_RATIO)
    n_train = size("train", None)
    if n_train is None:
        n_train = n - n_val - n_test
    if n_train + n_val + n_test > n:
        raise CLIError(f"train/val/test sets of {n_train} + {n_val} + {n_test} crystals do "
                       f"not fit in the {n} crystals of the data; lower the ratios or sizes",
                       status=2)
    for name, count, need in (("train", n_train, 2), ("val", n_val, 1), ("test", n_test, 1)):
        if count < need:
            raise CLIError(
                f"the {name} set would hold {count} of {n} crystals; it needs at least "
                f"{need}: raise --{name}-ratio or give --{name}-size", status=2)
    return n_train, n_val, n_test


def _split(y: Any, sizes: tuple[int, int, int], seed: int, stratify: bool
           ) -> tuple[Any, Any, Any]:
    """Train, validation and test positions (sklearn's train_test_split, seeded)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    n_train, n_val, n_test = sizes
    idx = np.arange(len(y))

    def attempt(strat: bool) -> tuple[Any, Any, Any]:
        rest, test = train_test_split(idx, train_size=n_train + n_val, test_size=n_test,
                                      random_state=seed, stratify=y if strat else None)
        train, val = train_test_split(rest, train_size=n_train, test_size=n_val,
                                      random_state=seed, stratify=y[rest] if strat else None)
        return train, val, test

    if stratify:
        try:
            return attempt(True)
        except ValueError as exc:
            logger.warning("cannot stratify the split by class (%s); splitting at random",
                           _one_line(exc))
    return attempt(False)


def _valid_mae(net: Any, X: Any, y: Any) -> float:
    """Validation MAE in the target's units (skorch EpochScoring; cached forward pass)."""
    import numpy as np

    graphs = getattr(X, "X", X)
    pred = np.asarray(net.predict(graphs), dtype=float).reshape(len(graphs), -1)
    return float(np.mean(np.abs(pred - np.asarray(y, dtype=float).reshape(pred.shape))))


def _valid_auc(net: Any, X: Any, y: Any) -> float:
    """Validation ROC-AUC of class 1 (encoded labels); NaN when y holds one class."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    graphs = getattr(X, "X", X)
    proba = net.predict_proba(graphs)
    y = np.asarray(y)
    if len(np.unique(y)) < 2 or not np.isfinite(proba).all():  # one class, or diverged
        return float("nan")
    return float(roc_auc_score(y, proba[:, 1]))


def _valid_accuracy(net: Any, X: Any, y: Any) -> float:
    import numpy as np

    graphs = getattr(X, "X", X)
    return float(np.mean(net.predict_proba(graphs).argmax(axis=1) == np.asarray(y)))


def _check_losses(history: Any, args: argparse.Namespace) -> None:
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


def _make_estimator(args: argparse.Namespace, valid_ds: Any, score: tuple[str, Any, bool],
                    out_dir: Path) -> tuple[Any, Any]:
    """The estimator of ``skcgcnn train`` and its best-weights checkpoint.

    Both checkpoints go to ``out_dir`` as training goes, each file written atomically:
    the best weights so far (``best_params.pt``) and, every ``--checkpoint-every``
    epochs, the whole training state (``training_state.pt``), which ``--resume``
    restores (the best checkpoint first, so that a state never names a best epoch whose
    weights are not on disk)."""
    from skorch.callbacks import EpochScoring, ProgressBar
    from skorch.helper import predefined_split

    from .estimators import CGCNNClassifier, CGCNNRegressor
    from .training_state import AtomicCheckpoint, LoadTrainingState, TrainingCheckpoint

    name, scorer, lower = score
    checkpoint = AtomicCheckpoint(monitor=f"{name}_best", f_params=_BEST_FILE,
                                  f_optimizer=None, f_criterion=None, f_history=None,
                                  dirname=str(out_dir))
    state = TrainingCheckpoint(dirname=str(out_dir), every=args.checkpoint_every,
                               filename=_STATE_FILE)
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
    device = _check_device(args.device)
    params: dict[str, Any] = dict(
        max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=optimizer,
        optimizer__weight_decay=args.weight_decay,
        module__atom_fea_len=args.atom_fea_len, module__h_fea_len=args.h_fea_len,
        module__n_conv=args.n_conv, module__n_h=args.n_h, module__conv=args.conv,
        train_split=predefined_split(valid_ds), random_state=args.seed,
        device=device, verbose=_verbose(args), callbacks=callbacks,
        callbacks__lr_scheduler__milestones=list(args.lr_milestones))
    if optimizer == "sgd":
        params["optimizer__momentum"] = (_DEFAULT_MOMENTUM if args.momentum is None
                                         else args.momentum)
    elif args.momentum is not None:
        logger.warning("--momentum applies to SGD only; ignored with --optim %s", args.optim)
    cls = CGCNNClassifier if args.task == "classification" else CGCNNRegressor
    return cls(**params), checkpoint


def _check_device(device: str) -> str:
    """``device`` with "auto" resolved; a CLIError for "cuda" without a CUDA device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available to torch; use --device "
                       "cpu or auto")
    return device


def _plot_learning_curve(history: Any, score_name: str, best_epoch: int | None,
                         path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = history[:, "epoch"]
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_score = fig.subplots(1, 2)
    losses = {"train": history[:, "train_loss"], "validation": history[:, "valid_loss"]}
    for name, values in losses.items():
        ax_loss.plot(epochs, values, marker=".", label=name)
    kind = "NLL" if score_name != "valid_mae" else "MSE of standardised targets"
    ax_loss.set(xlabel="epoch", ylabel=f"loss ({kind})", title="loss")
    if all(v > 0 for values in losses.values() for v in values):
        ax_loss.set_yscale("log")
    ax_loss.legend()
    scores = [row.get(score_name, float("nan")) for row in history]
    label = f"validation {_LABELS[score_name]}"
    ax_score.plot(epochs, scores, marker=".", color="C2")
    best = "" if best_epoch is None else \
        f" (best {scores[best_epoch - 1]:.4g}, epoch {best_epoch})"
    ax_score.set(xlabel="epoch", ylabel=label, title=label + best)
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)


def _plot_parity(y: Any, pred: Any, metrics: dict, path: Path, target: str) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(y, pred, s=12, alpha=0.7, edgecolors="none")
    both = np.concatenate([np.asarray(y, float), np.asarray(pred, float)])
    low, high = float(np.min(both)), float(np.max(both))
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.4", linewidth=1)
    ax.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), aspect="equal",
           xlabel=f"{target} (true)", ylabel=f"{target} (predicted)",
           title=f"test set ({len(y)} crystals)")
    r2 = metrics.get("r2")
    text = f"MAE {metrics['mae']:.4g}\nRMSE {metrics['rmse']:.4g}" + (
        f"\nR² {r2:.3f}" if r2 is not None else "")
    ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top")
    fig.savefig(path, dpi=120)


def _plot_roc(y_positive: Any, score: Any, auc: float | None, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    fpr, tpr, _ = roc_curve(y_positive, score)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}" if auc is not None else None)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"test set ROC ({len(score)} crystals)", aspect="equal")
    if auc is not None:
        ax.legend(loc="lower right")
    fig.savefig(path, dpi=120)


# -- the run folder: options, split and training state, for --resume ------------------
_OPTIONS_FILE = "train_options.json"
_OPTIONS_FORMAT = "skcgcnn-train-options"
_STATE_FILE = "training_state.pt"
_BEST_FILE = "best_params.pt"
# options that do not change what is trained: the only ones --resume takes
# --trusted is an opt-in to run code from a pickled graph file: never saved, so a
# resumed run reads such a file only when it is given again
_RESUME_FREE = ("quiet", "debug", "device", "n_jobs", "no_cache", "trusted")
_NOT_SAVED = ("func", "command", "resume", "quiet", "debug", "trusted")


def _option_name(dest: str) -> str:
    return "ROOT_DIR" if dest == "root_dir" else "--" + dest.replace("_", "-")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of the run in ``--resume DIR`` (its ``train_options.json``), with
    those of :data:`_RESUME_FREE` as given now; any other option given is refused."""
    run_dir = Path(args.resume).expanduser()
    file = run_dir / _OPTIONS_FILE
    if not run_dir.is_dir():
        raise CLIError(f"--resume {args.resume!r}: no such folder; give the --output-dir "
                       "of the run to continue")
    if not file.is_file():
        raise CLIError(f"--resume {args.resume!r}: the folder holds no {_OPTIONS_FILE}, so "
                       "it is not the --output-dir of a 'skcgcnn train' run that can be "
                       "resumed")
    defaults = vars(build_parser().parse_args(["train", "--resume", str(args.resume)]))
    given = [key for key, value in vars(args).items()
             if key in defaults and key not in _RESUME_FREE + _NOT_SAVED
             and value != defaults[key]]
    if given:
        raise CLIError(f"{', '.join(_option_name(key) for key in given)} cannot be given "
                       f"with --resume: the run continues with the options it was started "
                       f"with (in {file}); start a new run to change them", status=2)
    try:
        saved = json.loads(file.read_text())
        if saved.get("format") != _OPTIONS_FORMAT:
            raise ValueError(f"no {_OPTIONS_FORMAT!r} format tag")
        options = dict(saved["options"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CLIError(f"{file} is not readable ({_one_line(exc)}); the run cannot be "
                       "resumed") from exc
    merged = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    for key in _RESUME_FREE:
        if key in vars(args) and (key != "device" or args.device != defaults["device"]):
            merged[key] = getattr(args, key)
    merged.update(output_dir=str(run_dir), resume=str(run_dir), func=args.func,
                  command=args.command)
    return argparse.Namespace(**merged)


def _epochs_done(run_dir: Path) -> int:
    """Epochs in the training state of the run in ``run_dir`` (for --resume)."""
    from .training_state import TrainingStateError, read_training_state

    path = run_dir / _STATE_FILE
    if not path.is_file():
        raise CLIError(f"--resume {str(run_dir)!r}: the folder holds no {_STATE_FILE}: the "
                       "run stopped before its first checkpoint; start it again without "
                       "--resume")
    try:
        return int(read_training_state(path)["epoch"])
    except TrainingStateError as exc:
        raise CLIError(str(exc)) from exc


def _start_run_dir(out_dir: Path, args: argparse.Namespace) -> None:
    """Make ``out_dir`` and write the options of a new run (what --resume reads); the
    training state and results of an earlier run there are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / _STATE_FILE).exists():
        logger.warning("%s holds the training state of an earlier run; this new run "
                       "replaces it (to continue that run instead: skcgcnn train --resume "
                       "%s)", out_dir, out_dir)
    for name in (_STATE_FILE, _BEST_FILE, "metrics.json"):
        (out_dir / name).unlink(missing_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in _NOT_SAVED}
    for key in ("root_dir", "graphs"):
        if options.get(key) is not None:
            options[key] = str(Path(options[key]).expanduser().resolve())
    features = options.get("atom_features")
    if features is not None and Path(features).expanduser().is_file():
        options["atom_features"] = str(Path(features).expanduser().resolve())
    _atomic_write_text(out_dir / _OPTIONS_FILE, json.dumps(
        {"format": _OPTIONS_FORMAT, "version": 1, "options": options}, indent=2) + "\n")


def _split_rows(ids: Any, parts: dict[str, Any]) -> list[list[str]]:
    return [[str(ident), part] for part, rows in parts.items() for ident in ids[rows]]


def _write_split(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "split"])
    writer.writerows(rows)
    _atomic_write_text(path, buffer.getvalue())


def _check_resumed_split(path: Path, rows: list[list[str]], source: str) -> None:
    """The split of the resumed run must be the one it started with."""
    try:
        with open(path, newline="") as handle:
            saved = [row for row in csv.reader(handle) if row][1:]
    except OSError as exc:
        raise CLIError(f"cannot read {path} ({_one_line(exc)}); the run cannot be "
                       "resumed") from exc
    if saved != rows:
        raise CLIError(f"the crystals of {source} are not those the run started with (its "
                       f"train/val/test split differs from {path}); the data changed: "
                       "start a new run")


def _run_train(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.pipeline import Pipeline

    from .estimators import GraphDataset, save_model
    from .transformers import StructureGraphTransformer

    done = None  # epochs of the run being resumed
    if args.resume is not None:
        args = _resume_args(args)
        done = _epochs_done(Path(args.resume))
        if done >= args.epochs and (Path(args.resume) / "metrics.json").is_file():
            print(f"the run in {args.resume} already finished: {done} of {args.epochs} "
                  "epochs trained and its results written; nothing to resume")
            return 0
    _check_train_args(args)
    _check_device(args.device)  # before the data are read
    started = time.perf_counter()
    classification = args.task == "classification"
    out_dir = Path(args.output_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--output-dir {args.output_dir!r} is a file, not a folder")

    # -- data ------------------------------------------------------------------------
    if args.graphs is not None:
        bundle = _read_graph_file(args.graphs, trusted=args.trusted)
        graphs, targets, names = bundle.graphs, bundle.targets, bundle.target_names
        source = f"{args.graphs} (graphs of {bundle.info.get('source', '?')})"
        if args.atom_features is not None:
            graphs = graphs.with_atom_features(_atom_features_spec(args.atom_features, None))
        transformer = StructureGraphTransformer(
            atom_features=graphs.atom_features, **graphs.graph_params).fit()
        logger.info("%d crystal graphs from %s", len(graphs), args.graphs)
    else:
        root = _existing_root(args.root_dir)
        source = str(root)
        skipped: list[tuple[str, str]] = []
        transformer, graphs, targets, names = _build_graphs(root, args, _graph_params(args),
                                                            skipped)
        if args.skip_errors:  # written now, so that it is there even if training stops
            _write_skipped(out_dir / "skipped.csv", skipped)
    column = _choose_target(names, args.target, source)
    target = names[column]
    y = np.asarray(targets, dtype=float)[:, column]
    known = np.isfinite(y)
    if not known.all():
        logger.warning("%d crystals without a %r value are left out", int((~known).sum()),
                       target)
        graphs, y = graphs[np.flatnonzero(known)], y[known]
    if classification and not np.array_equal(y, np.round(y)):
        odd = y[y != np.round(y)][0]
        raise CLIError(f"--task classification needs class labels (0, 1, ...) but {target!r} "
                       f"holds values such as {odd!r}; is --task right?")
    ids = np.asarray(graphs.ids, dtype=object)
    sizes = split_sizes(len(y), args)
    train, val, test = _split(y, sizes, args.seed, stratify=classification)

    # -- estimator -------------------------------------------------------------------
    if classification:
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder().fit(y[train])
        unseen = sorted(set(np.unique(y[val])) - set(encoder.classes_))
        if len(encoder.classes_) < 2:
            raise CLIError(f"the training set holds only class {encoder.classes_.tolist()}; "
                           "classification needs two classes (is --task right?)")
        if unseen:
            raise CLIError(f"validation classes {unseen} do not occur in the training set; "
                           "use a larger training set")
        valid_ds = GraphDataset(graphs[val], encoder.transform(y[val]).astype(np.int64))
        score = (("valid_auc", _valid_auc, False) if len(encoder.classes_) == 2
                 else ("valid_acc", _valid_accuracy, False))
    else:
        valid_ds = GraphDataset(graphs[val], y[val].astype(np.float32))
        score = ("valid_mae", _valid_mae, True)
    logger.info("%s on %r: %d train, %d validation, %d test crystals (seed %d)",
                args.task, target, len(train), len(val), len(test), args.seed)

    # -- training, with checkpoints in the output folder ---------------------------------
    split_rows = _split_rows(ids, {"train": train, "val": val, "test": test})
    if done is None:
        _start_run_dir(out_dir, args)
        _write_split(out_dir / "split.csv", split_rows)
    else:
        _check_resumed_split(out_dir / "split.csv", split_rows, source)
    est, checkpoint = _make_estimator(args, valid_ds, score, out_dir)
    t0 = time.perf_counter()
    est.fit(graphs[train], y[train])
    fit_seconds = time.perf_counter() - t0
    history = est.history
    _check_losses(history, args)
    if len(history) < args.epochs:
        logger.warning("training stopped after epoch %d of %d; the results are those of "
                       "that model (continue the run with: skcgcnn train --resume %s)",
                       len(history), args.epochs, out_dir)
    improved = [row["epoch"] for row in history if row.get("event_cp")]
    best_epoch = improved[-1] if improved else None
    if best_epoch is not None:
        est.load_params(checkpoint=checkpoint)
    else:
        logger.warning("the validation %s was never defined; keeping the weights of the "
                       "last epoch", score[0])
    best_score = (None if best_epoch is None
                  else float(history[best_epoch - 1, score[0]]))

    # -- test set ----------------------------------------------------------------------
    test_graphs, y_test = graphs[test], y[test]
    if classification:
        proba = est.predict_proba(test_graphs)
        labels = est.classes_[proba.argmax(axis=1)]
        classes = est.classes_
        shown = proba[:, 1] if len(classes) == 2 else labels
        test_metrics = _classification_metrics(y_test, labels, proba, classes)
    else:
        shown = np.asarray(est.predict(test_graphs), dtype=float)
        bad = ~np.isfinite(shown)
        if bad.any():
            raise CLIError(f"training diverged: {int(bad.sum())} of {len(shown)} test "
                           "predictions are not finite; lower --lr")
        test_metrics = _regression_metrics(y_test, shown)

    # -- outputs -----------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    model = Pipeline([("graph", transformer), ("cgcnn", est)])
    save_model(model, out_dir / "model.pt")
    written.append("model.pt")
    _write_results(out_dir / "test_results.csv", ids[test], y_test, shown)
    written.append("test_results.csv")
    written.append("split.csv")  # at the start
    if args.graphs is None and args.skip_errors:
        written.append("skipped.csv")
    history.to_file(str(out_dir / "history.json"))
    written.append("history.json")
    metrics = {
        "task": args.task, "target": target, "source": source,
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs": args.epochs, "epochs_trained": len(history), "resumed_after_epoch": done,
        "best_epoch": best_epoch,
        "valid": {score[0].removeprefix("valid_"): best_score},
        "test": test_metrics,
        "seed": args.seed, "fit_seconds": round(fit_seconds, 3),
        "graph_params": {**transformer.get_params(deep=False),
                         "atom_features": getattr(graphs.atom_features, "name", None)},
        "network": {"atom_fea_len": args.atom_fea_len, "h_fea_len": args.h_fea_len,
                    "n_conv": args.n_conv, "n_h": args.n_h, "conv": args.conv},
        "optimizer": {"name": args.optim, "lr": args.lr,
                      "momentum": (est.get_params().get("optimizer__momentum")
                                   if args.optim == "SGD" else None),
                      "weight_decay": args.weight_decay, "batch_size": args.batch_size,
                      "lr_milestones": list(args.lr_milestones)},
    }
    if classification:
        metrics["classes"] = est.classes_.tolist()
    metrics["graph_params"] = {k: v for k, v in metrics["graph_params"].items()
                               if k in ("radius", "max_num_nbr", "dmin", "step",
                                        "atom_features")}
    with open(out_dir / "metrics.json", "w") as handle:
        json.dump(_jsonable(metrics), handle, indent=2)
        handle.write("\n")
    written.append("metrics.json")
    _plot_learning_curve(history, score[0], best_epoch, out_dir / "learning_curve.png",
                         f"CGCNN {args.task}: {target}")
    written.append("learning_curve.png")
    if not classification:
        _plot_parity(y_test, shown, test_metrics, out_dir / "parity.png", target)
        written.append("parity.png")
    elif len(est.classes_) == 2 and test_metrics.get("roc_auc") is not None:
        _plot_roc(y_test == est.classes_[1], shown, test_metrics["roc_auc"],
                  out_dir / "roc_curve.png")
        written.append("roc_curve.png")

    # -- summary -------------------------------------------------------------------------
    best = ("no best epoch" if best_epoch is None
            else f"best epoch {best_epoch} (validation {_LABELS[score[0]]} {best_score:.4g})")
    if done is None:
        epochs = f"{len(history)} epochs"
    elif len(history) > done:
        epochs = f"epochs {done + 1}-{len(history)} (resumed after epoch {done})"
    else:
        epochs = f"no epoch left to train ({done} trained before)"
    print(f"trained on {len(train)} crystals ({len(val)} validation, {len(test)} test), "
          f"{epochs} in {fit_seconds:.1f} s; {best}")
    print("test " + ", ".join(f"{_LABELS[k]} {v:.4g}" for k, v in test_metrics.items()
                              if v is not None))
    print(f"wrote {', '.join(written)} to {out_dir} "
          f"({time.perf_counter() - started:.1f} s in all)")
    return 0


# ----------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------
def _check_model_file(path: str) -> Path:
    """A path that looks like a torch file: a zip archive or torch's legacy format."""
    from .estimators import is_torch_file

    file = Path(path).expanduser()
    if not file.exists():
        raise CLIError(f"MODEL {path!r} does not exist; give a model.pt from 'skcgcnn "
                       "train' or an original CGCNN .pth.tar")
    if not file.is_file():
        raise CLIError(f"MODEL {path!r} is not a file")
    if not is_torch_file(file):
        raise CLIError(f"MODEL {path!r} is not a model file: give a model.pt from "
                       "'skcgcnn train' or an original CGCNN .pth.tar")
    return file


def _load_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(transformer, estimator, task) from MODEL."""
    from sklearn.pipeline import Pipeline

    from .estimators import CGCNNClassifier, CheckpointError, load_model
    from .transformers import StructureGraphTransformer

    file = _check_model_file(args.model)
    device = _check_device(args.device)
    try:
        model = load_model(file, trusted=args.trusted, device=device)
    except CheckpointError as exc:
        message = _one_line(exc).replace("; for skcgcnn models use load_model", "")
        if "trusted=True" in message:
            message = (f"MODEL {args.model!r} holds pickled Python objects besides tensors "
                       "(the original CGCNN classification checkpoints do), which can run "
                       "code when loaded; pass --trusted if you trust the file")
        raise CLIError(message) from exc
    except pickle.UnpicklingError as exc:
        raise CLIError(f"MODEL {args.model!r} is not a model file ({_one_line(exc)})") from exc
    if isinstance(model, Pipeline):
        transformer, est = model.steps[0][1], model.steps[-1][1]
    else:
        est = model
        kw = {"max_num_nbr": 12, **est.module_kwargs_, **getattr(est, "graph_params_", {})}
        logger.warning("MODEL holds an estimator without its transformer; building graphs "
                       "with radius %s, %s neighbours and the cgcnn atom features",
                       kw["radius"], kw["max_num_nbr"])
        transformer = StructureGraphTransformer(radius=kw["radius"],
                                                max_num_nbr=kw["max_num_nbr"], dmin=kw["dmin"],
                                                step=kw["step"]).fit()
    task = "classification" if isinstance(est, CGCNNClassifier) else "regression"
    return transformer, est, task


def _warn_other_atom_features(root: Path, transformer: Any) -> None:
    """Warn when ROOT_DIR/atom_init.json differs from the model's atom features."""
    import numpy as np

    from .atom_features import get_atom_features

    path = root / "atom_init.json"
    if not path.is_file():
        return
    try:
        theirs, ours = get_atom_features(str(path)), transformer.atom_features_
        same = (theirs.table.shape == ours.table.shape
                and np.array_equal(theirs.available, ours.available)
                and np.allclose(theirs.table[theirs.available], ours.table[ours.available]))
    except Exception as exc:  # an odd atom_init.json is not the model's business
        logger.debug("cannot compare %s: %s", path, exc)
        return
    if not same:
        logger.warning("%s differs from the atom features stored with the model; the "
                       "model's are used", path)


def _predict_inputs(args: argparse.Namespace, transformer: Any
                    ) -> tuple[list, list, Any, str | None]:
    """(ids, structures or CIF paths, targets or None, target name)."""
    paths = [Path(p).expanduser() for p in args.inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CLIError(f"{missing[0]!r} does not exist; give a CGCNN data folder or CIF files")
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].name.lower().endswith(
            (".tar.gz", ".tgz", ".tar"))):
        root = paths[0]
        if root.is_dir():
            _warn_other_atom_features(root, transformer)
        has_id_prop = (root / args.id_prop).is_file() if root.is_dir() else True
        if has_id_prop:
            df = _load_folder(root, args)
            _log_skipped(df.attrs.get("errors", []), "entries of the data folder")
            names = [c for c in df.columns if c != "structure"]
            column = _choose_target(names, args.target, str(root)) if names else None
            targets = None if column is None else df[names[column]].to_numpy(dtype=float)
            return (list(df.index), list(df["structure"]), targets,
                    None if column is None else names[column])
        cifs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
        if not cifs:
            raise CLIError(f"{root} holds neither {args.id_prop} nor .cif files")
        logger.info("no %s in %s: predicting its %d CIF files", args.id_prop, root, len(cifs))
        paths = cifs
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise CLIError(f"{folders[0]!r} is a folder; give one ROOT_DIR or CIF files, not both")
    return [p.stem for p in paths], [str(p) for p in paths], None, None


def _run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    started = time.perf_counter()
    output = None if args.output == "-" else Path(args.output).expanduser()
    if output is not None and output.is_dir():
        raise CLIError(f"--output {args.output!r} is a folder; give a file name")
    transformer, est, task = _load_model(args)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise CLIError(f"--batch-size {args.batch_size}: must be at least 1", status=2)
        est.set_params(batch_size=args.batch_size)
    ids, structures, targets, target_name = _predict_inputs(args, transformer)
    transformer.set_params(n_jobs=args.n_jobs, verbose=_verbose(args),
                           on_error="skip" if args.skip_errors else "raise")
    graphs = transformer.transform(_structure_series(ids, structures))
    _log_skipped(transformer.errors_, "structures without a graph")
    if len(graphs) == 0:
        raise CLIError("no structure could be turned into a graph")
    kept = transformer.kept_indices_
    ids = [ids[i] for i in kept]
    y = np.full(len(ids), np.nan) if targets is None else np.asarray(targets, float)[kept]
    # with --skip-errors the predictions have a (NaN) row per input: keep those of `ids`
    if task == "classification":
        proba = est.predict_proba(graphs)[kept]
        classes = est.classes_
        labels = classes[proba.argmax(axis=1)]
        shown = proba[:, 1] if len(classes) == 2 else labels
    else:
        shown = np.asarray(est.predict(graphs), dtype=float)[kept]
    _write_results(output, ids, y, shown)

    summary = [f"predicted {len(ids)} crystals in {time.perf_counter() - started:.1f} s"
               + ("" if output is None else f"; wrote {output}")]
    known = np.isfinite(y)
    if known.any():
        what = f"on the {int(known.sum())} crystals with a {target_name!r} value"
        if task == "classification":
            m = _classification_metrics(y[known], labels[known], proba[known], classes)
            summary.append(f"accuracy {m['accuracy']:.4f}"
                           + (f", ROC-AUC {m['roc_auc']:.4f}" if m.get("roc_auc") is not None
                              else "") + f" {what}")
        elif np.ndim(shown) == 1:
            m = _regression_metrics(y[known], shown[known])
            summary.append(f"MAE {m['mae']:.4g} {what}")
    stream = sys.stderr if output is None else sys.stdout
    for line in summary:
        print(line, file=stream)
    return 0


# ----------------------------------------------------------------------------------
# featurize
# ----------------------------------------------------------------------------------
def _run_featurize(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    params = _graph_params(args)
    if not params["radius"] > 0 or params["max_num_nbr"] < 1 or not params["step"] > 0:
        raise CLIError("--radius and --step must be positive and --max-num-nbr at least 1",
                       status=2)
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise CLIError(f"--output {args.output!r} is a folder; give a file name")
    if not output.parent.is_dir():
        raise CLIError(f"--output {args.output!r}: folder {str(output.parent)!r} does not "
                       "exist")
    root = _existing_root(args.root_dir)
    transformer, graphs, targets, names = _build_graphs(root, args, params)
    errors = [[int(pos), _jsonable(ident), str(message)]
              for pos, ident, message in transformer.errors_]
    graphs.save(output, targets, names, info={"source": str(root), "errors": errors})
    print(f"{len(graphs)} crystal graphs ({len(graphs.numbers)} atoms, "
          f"{graphs.nbytes / 1e6:.1f} MB of arrays) of {root} written to {output} in "
          f"{time.perf_counter() - started:.1f} s")
    return 0
