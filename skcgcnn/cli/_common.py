"""What every ``skcgcnn`` subcommand shares: the error type, the option groups, the console.

The option groups (:func:`common_options`, :func:`graph_options`, :func:`data_options`)
are defined here once and added to each subcommand's parser; :func:`console` routes the
package's log lines and warnings to stderr as one-line ``skcgcnn: LEVEL: ...`` entries,
and :func:`one_line` turns an exception into the one-line reason that ``main`` prints.
Nothing heavy is imported here, so that ``skcgcnn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from .._defaults import DMIN, GRAPH_PARAMS, MAX_NUM_NBR, RADIUS, STEP, resolve_device

logger = logging.getLogger(__name__)

PROG = "skcgcnn"


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



def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, epoch table or log lines; only warnings, "
                             "errors and the final summary")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show debug log lines and the traceback of a failure")
    return common


def graph_options(parser: argparse.ArgumentParser, defaults_none: bool) -> None:
    """--radius, --max-num-nbr, --dmin, --step, --atom-features (the original data_options)."""
    def default(key: str) -> Any:
        return None if defaults_none else GRAPH_PARAMS[key]

    group = parser.add_argument_group("crystal graphs")
    group.add_argument("--radius", type=float, default=default("radius"), metavar="Å",
                       help=f"neighbour cut-off radius in Å (default: {RADIUS:g})")
    group.add_argument("--max-num-nbr", type=int, default=default("max_num_nbr"),
                       metavar="N", help=f"neighbours kept per atom (default: {MAX_NUM_NBR})")
    group.add_argument("--dmin", type=float, default=default("dmin"), metavar="Å",
                       help="smallest centre of the Gaussian distance expansion "
                            f"(default: {DMIN:g})")
    group.add_argument("--step", type=float, default=default("step"), metavar="Å",
                       help="step (and width) of the Gaussian distance expansion "
                            f"(default: {STEP:g})")
    group.add_argument("--atom-features", metavar="NAME|FILE",
                       help="atom-feature set: cgcnn, onehot, magpie, matscholar, megnet or "
                            "the path of an atom_init.json (default: ROOT_DIR/atom_init.json "
                            "when present, else cgcnn)")


def data_options(parser: argparse.ArgumentParser) -> None:
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


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    line = text.splitlines()[0].strip()
    # the library's advice names its keyword arguments; say it in command-line words
    line = line.replace("pass on_error='skip'", "pass --skip-errors")
    line = line.replace("on_error='skip'", "--skip-errors")
    return line


class OneLineWarnings:
    """Show warnings as ``skcgcnn: warning: ...`` lines, each distinct text once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, message: Any, category: type, filename: str, lineno: int,
                 file: Any = None, line: Any = None) -> None:
        text = one_line(message if isinstance(message, Warning) else Warning(message))
        if text in self.seen:
            return
        self.seen.add(text)
        logger.warning("%s: %s", category.__name__, text)


@contextmanager
def console(level: int) -> Iterator[None]:
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
            warnings.showwarning = OneLineWarnings()
            yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)
        package.propagate = old_propagate


def verbose(args: argparse.Namespace) -> int:
    return 0 if args.quiet else 1


def graph_params(args: argparse.Namespace) -> dict:
    return {k: (GRAPH_PARAMS[k] if getattr(args, k) is None else getattr(args, k))
            for k in GRAPH_PARAMS}


def check_device(device: str) -> str:
    """``device`` with "auto" resolved (:func:`skcgcnn._defaults.resolve_device`); a
    CLIError that names the option for "cuda" without a CUDA device."""
    try:
        return resolve_device(device)
    except ValueError as exc:
        raise CLIError(f"--device {device}: no CUDA device is available to torch; use "
                       "--device cpu or auto") from exc

