"""The ``skcgcnn`` command line: train, predict, featurize (and benchmark, tune).

``skcgcnn train`` does the job of the original CGCNN ``main.py`` and ``skcgcnn predict``
that of its ``predict.py``; ``skcgcnn featurize`` builds the crystal graphs of a dataset
once and caches them in a file that ``train --graphs`` reads.  The subcommands of
:data:`EXTERNAL_COMMANDS` (``benchmark``, ``tune``) are imported only when they are run,
so ``skcgcnn --help`` starts in a fraction of a second; torch and pymatgen are imported
inside the handlers for the same reason.

Every failure the user can fix (a missing folder, an unreadable model file, bad
options, bad structures) ends with a one-line reason on stderr and a non-zero exit
status: 2 for wrong options, 1 for everything else.  ``--debug`` adds the traceback.
See ``docs/cli.md`` for the options and their counterparts in ``main.py``/``predict.py``.

One module per subcommand (:mod:`.train`, :mod:`.predict`, :mod:`.featurize`,
:mod:`.benchmark`, :mod:`.tune`); the options and console they share are in
:mod:`._common`, reading data and writing results in :mod:`._data` (the ``--limit``
subsets of ``benchmark`` and ``tune`` are :mod:`skcgcnn.datasets`'); ``train``'s estimator is built in
:mod:`._training`, its run folder and ``--resume`` in :mod:`._resume`, its outputs
written in :mod:`._results`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import pickle
import sys
import traceback
from collections.abc import Sequence

from .. import set_cpu_performance_defaults
from ._common import (PROG, CLIError, common_options, console, one_line,
                      original_option_hints)
from .featurize import add_featurize_parser
from .merge import add_merge_parser
from .predict import add_predict_parser
from .train import add_train_parser, split_sizes

#: Format tag of the graph files written by ``skcgcnn featurize`` (``skcgcnn.graph._io.FORMAT``,
#: written out so that importing the command line imports no pymatgen; a test compares them).
GRAPHS_FORMAT = "skcgcnn-graphs"

#: Subcommands imported only when run: name -> (module, add-parser function, run
#: function, one-line help).  A module that is not there is left out of the command line.
EXTERNAL_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "benchmark": ("skcgcnn.cli.benchmark", "add_benchmark_parser", "run_benchmark_command",
                  "compare CGCNN with descriptor baselines on the same cross-validation "
                  "folds"),
    "tune": ("skcgcnn.cli.tune", "add_tune_parser", "run_tune_command",
             "search CGCNN hyper-parameters with Optuna"),
    "export": ("skcgcnn.cli.export", "add_export_parser", "run_export",
               "write a trained model as an ONNX file, for onnxruntime without torch"),
}

__all__ = ["main", "build_parser", "CLIError", "EXTERNAL_COMMANDS", "GRAPHS_FORMAT", "PROG",
           "split_sizes"]


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
    from .. import __version__

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
    common = common_options()
    add_train_parser(sub, common)
    add_predict_parser(sub, common)
    add_merge_parser(sub, common)
    add_featurize_parser(sub, common)
    for name, (module, add_name, run_name, help_text) in EXTERNAL_COMMANDS.items():
        if name == load:
            mod = importlib.import_module(module)
            external = getattr(mod, add_name)(sub)
            external.set_defaults(func=getattr(mod, run_name))
        elif _external_available(name):
            # listed only; main() builds the real parser when this command is run
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but an option that the subcommand does not know is
    reported with the subcommand's usage (``usage: skcgcnn train ...``), not the
    top-level one that argparse shows for unrecognised arguments; and an option of the
    original main.py or predict.py (``--disable-cuda``, ``-j``, ...) is refused first,
    in one line that names the option to use instead (exit status 2)."""
    sub = next(a for a in parser._actions  # noqa: SLF001 (argparse has no accessor)
               if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    command = _command_of(argv)
    if command in sub.choices:
        # before parsing: the value of an unknown '-j 4' would be taken for a positional
        # argument, or a missing one reported instead
        subparser = sub.choices[command]
        rest = argv[argv.index(command) + 1:]
        hints = original_option_hints(command, rest,
                                      subparser._option_string_actions)  # noqa: SLF001
        if hints:
            subparser.exit(2, f"{subparser.prog}: error: {'; '.join(hints)}\n")
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _broken_pipe() -> int:
    """The reader of standard output went away (``skcgcnn predict ... | head``): stop
    quietly, as the Python documentation recommends (``signal`` module, "Note on
    SIGPIPE"): point stdout at devnull so that the flush at exit cannot fail again, and
    return 141 (128 + SIGPIPE), the status of a program that a shell pipe stopped."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        pass
    finally:
        os.close(devnull)
    return 141


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _refuse_other_commands_under_torchrun(command: str) -> None:
    """Only ``train`` shares its work between torchrun's processes; any other command
    would run whole in every process, each writing the same files."""
    try:
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        several = False
    if several and command != "train":
        raise CLIError(f"only '{PROG} train' runs under torchrun; '{PROG} {command}' would "
                       f"run whole in each of the {os.environ['WORLD_SIZE']} processes, "
                       "writing the same files: run it as a single process, without "
                       "torchrun")


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
        interrupted, 141 when the reader of standard output closed it early.

    Notes
    -----
    It first applies :func:`skcgcnn.set_cpu_performance_defaults` to the process.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command line runs in a process of its own: it takes skcgcnn's CPU speed settings
    # (before torch is imported; see skcgcnn.set_cpu_performance_defaults).
    set_cpu_performance_defaults()
    command = _command_of(argv)
    debug = "--debug" in argv
    try:
        load = command if command in EXTERNAL_COMMANDS and _external_available(command) \
            else None
        parser = build_parser(load)
    except ImportError as exc:  # an external command's optional dependency is missing
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{PROG} {command}: error: {one_line(exc)}\n")
        return 1
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False))
    quiet = bool(getattr(args, "quiet", False))
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    prefix = f"{PROG} {args.command}"
    with console(level):
        try:
            _refuse_other_commands_under_torchrun(args.command)
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return 0 if status is None else int(status)
        except BrokenPipeError:
            return _broken_pipe()
        except KeyboardInterrupt:
            sys.stderr.write(f"{prefix}: interrupted\n")
            return 130
        except CLIError as exc:
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: {one_line(exc)}\n")
            return exc.status
        except (OSError, ValueError, ImportError, pickle.UnpicklingError) as exc:
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: {one_line(exc)}\n")
            return 1
        except Exception as exc:  # a bug: say so in one line, the traceback with --debug
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"{prefix}: error: unexpected {type(exc).__name__}: "
                             f"{one_line(exc)} (run with --debug for the traceback)\n")
            return 1

