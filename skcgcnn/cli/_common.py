"""What every ``skcgcnn`` subcommand shares: the error type, the option groups, the console.

The options (:func:`common_options`, :func:`graph_options`, :func:`data_options`,
:func:`label_options`, :func:`random_state_option`, :func:`device_option`) are defined
here once and added to each subcommand's parser; :func:`console` routes the package's
log lines and warnings to stderr as one-line ``skcgcnn: LEVEL: ...`` entries,
and :func:`one_line` turns an exception into the one-line reason that ``main`` prints.
Nothing heavy is imported here, so that ``skcgcnn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from contextlib import contextmanager
from collections.abc import Container, Sequence
from typing import Any, Iterator

from .._defaults import DEVICES, DMIN, GRAPH_PARAMS, MAX_NUM_NBR, RADIUS, STEP, resolve_device

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



#: The metavar of the data folder in every subcommand (train, predict, featurize,
#: benchmark, tune): it names what the argument is, where the original main.py's
#: "root_dir" names where it sits.
DATA_DIR = "DATA_DIR"


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: -q/--quiet and --debug."""
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
                            f"the path of an atom_init.json (default: {DATA_DIR}/atom_init.json "
                            "when present, else cgcnn)")


def data_options(parser: argparse.ArgumentParser, skip_errors: bool = True) -> None:
    """The data options of every command that reads a data folder: --id-prop, --target,
    --n-jobs, --skip-errors (left out where ``skip_errors`` is False), --no-cache."""
    group = parser.add_argument_group("data")
    group.add_argument("--id-prop", default="id_prop.csv", metavar="FILE",
                       help=f"the id,target file inside {DATA_DIR} (default: id_prop.csv)")
    group.add_argument("--target", metavar="NAME",
                       help="target column when the data have several (default: the first)")
    group.add_argument("--n-jobs", type=int, default=None, metavar="N",
                       help="processes for CIF parsing, graph building and descriptor "
                            "baselines (default: 1; -1: all cores)")
    if skip_errors:
        group.add_argument("--skip-errors", action="store_true",
                           help="drop structures that cannot be read or turned into "
                                "graphs (they are logged) instead of stopping at the first "
                                "one")
    group.add_argument("--no-cache", action="store_true",
                       help="do not use the parsed-structure cache ($SKCGCNN_CACHE or "
                            "~/.cache/skcgcnn)")


def label_options(parser: argparse.ArgumentParser) -> None:
    """--target-label: the target's name (and unit) in tables, plots and metrics."""
    group = parser.add_argument_group("labels")
    group.add_argument("--target-label", metavar="TEXT",
                       help="name and unit of the target in tables, plots and metrics.json, "
                            "e.g. 'E_form (eV/atom)' (default: the target column's name, or "
                            "the dataset's own label)")


def random_state_option(parser: argparse.ArgumentParser, what: str,
                        dest: str = "random_state") -> None:
    """--random-state (scikit-learn's word) with --seed, the original's, as an alias."""
    parser.add_argument("--random-state", "--seed", type=int, default=0, dest=dest,
                        metavar="N", help=f"seed of {what} (default: 0)")


def device_option(parser: argparse.ArgumentParser) -> None:
    """--device, default auto (the GPU when torch sees one)."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="torch device; auto takes the GPU when there is one "
                             "(default: auto)")


#: The library's advice names its keyword arguments; the command line says its flags.
#: (regular expression, replacement), applied in order to the line ``main`` prints.
KEYWORD_TO_FLAG: tuple[tuple[str, str], ...] = (
    (r"(?<!\()on_error='skip'", "--skip-errors"),
    (r"pass id_prop=<path to id_prop\.csv>", "pass --id-prop <path to id_prop.csv>"),
    (r"pass id_prop= ", "pass --id-prop FILE "),
    (r"pass trusted=True", "pass --trusted"),
    (r"increase radius\b", "increase --radius"),
    (r"within radius=", "within --radius "),
    (r"use device='cpu'", "use --device cpu"),
    (r"device='cuda'", "--device cuda"),
)


#: Options of the original CGCNN main.py and predict.py that skcgcnn spells otherwise or
#: does without: (spellings, the option to use instead or None, what to do by subcommand,
#: "*" for the others).
ORIGINAL_OPTIONS: tuple[tuple[tuple[str, ...], str | None, dict[str, str]], ...] = (
    (("--disable-cuda",), "--device", {"*": "use --device cpu"}),
    (("-j", "--workers"), "--n-jobs",
     {"*": "use --n-jobs N (processes that parse CIFs and build graphs)"}),
    (("-p", "--print-freq"), None, {
        "train": "leave it out: the epoch table is printed after every epoch (-q hides it)",
        "predict": "leave it out: progress is logged after every --chunk-size crystals "
                   "(-q hides it)",
        "*": "leave it out (-q hides the progress output)"}),
    (("--start-epoch",), "--resume", {
        "train": "use --resume DIR (the --output-dir of the interrupted run): it goes on "
                 "after the last epoch the run saved",
        "*": "leave it out"}),
)


def _spelled(token: str, flag: str) -> bool:
    """Whether ``token`` is ``flag``, ``flag=VALUE`` or (a short flag) ``-j4``."""
    return token == flag or token.startswith(flag + "=") or (
        len(flag) == 2 and token.startswith(flag) and token[2:].isdigit())


def original_option_hints(command: str, argv: Sequence[str],
                          known: Container[str]) -> list[str]:
    """What to use instead of each option of the original CGCNN scripts in ``argv``
    (``-j 4``, ``-j4``, ``--workers=4``) that the subcommand does not know (``known``:
    its option strings), e.g. "--disable-cuda (an option of the original main.py):
    use --device cpu"."""
    script = {"train": "main.py", "predict": "predict.py"}.get(command, "main.py/predict.py")
    hints = []
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-") or token.split("=")[0] in known:
            continue
        for spellings, instead, advice in ORIGINAL_OPTIONS:
            flag = next((f for f in spellings if _spelled(token, f)), None)
            if flag is None:
                continue
            origin = "main.py" if flag == "--start-epoch" else script
            what = advice.get(command, advice["*"])
            if instead is not None and instead not in known and command not in advice:
                what = f"leave it out ({PROG} {command} has no {instead})"
            hints.append(f"{flag} (an option of the original {origin}): {what}")
    return hints


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, in command-line words (:data:`KEYWORD_TO_FLAG`)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    line = text.splitlines()[0].strip()
    if "on_error='skip'" in text and "on_error='skip'" not in line:
        # a DatasetError gives its advice on its last line, after the listing
        line += "; pass on_error='skip' to leave them out"
    for pattern, flag in KEYWORD_TO_FLAG:
        line = re.sub(pattern, flag, line)
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

