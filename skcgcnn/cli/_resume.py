"""The run folder of ``skcgcnn train``: its options, split and training state, for --resume.

A new run writes its options (``train_options.json``) and split (``split.csv``) into
``--output-dir`` before it trains; ``--resume DIR`` reads them back
(:func:`resume_args`), checks that the data still give the same split
(:func:`check_resumed_split`) and continues from the training state.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from ._common import CLIError, one_line

logger = logging.getLogger(__name__)

# -- the run folder: options, split and training state, for --resume ------------------
_OPTIONS_FILE = "train_options.json"
_OPTIONS_FORMAT = "skcgcnn-train-options"
STATE_FILE = "training_state.pt"
BEST_FILE = "best_params.pt"
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


def resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of the run in ``--resume DIR`` (its ``train_options.json``), with
    those of :data:`_RESUME_FREE` as given now; any other option given is refused."""
    from . import build_parser  # the package imports this module: imported when run

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
        raise CLIError(f"{file} is not readable ({one_line(exc)}); the run cannot be "
                       "resumed") from exc
    merged = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    for key in _RESUME_FREE:
        if key in vars(args) and (key != "device" or args.device != defaults["device"]):
            merged[key] = getattr(args, key)
    merged.update(output_dir=str(run_dir), resume=str(run_dir), func=args.func,
                  command=args.command)
    return argparse.Namespace(**merged)


def epochs_done(run_dir: Path) -> int:
    """Epochs in the training state of the run in ``run_dir`` (for --resume)."""
    from ..estimators import TrainingStateError, read_training_state

    path = run_dir / STATE_FILE
    if not path.is_file():
        raise CLIError(f"--resume {str(run_dir)!r}: the folder holds no {STATE_FILE}: the "
                       "run stopped before its first checkpoint; start it again without "
                       "--resume")
    try:
        return int(read_training_state(path)["epoch"])
    except TrainingStateError as exc:
        raise CLIError(str(exc)) from exc


def start_run_dir(out_dir: Path, args: argparse.Namespace) -> None:
    """Make ``out_dir`` and write the options of a new run (what --resume reads); the
    training state and results of an earlier run there are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / STATE_FILE).exists():
        logger.warning("%s holds the training state of an earlier run; this new run "
                       "replaces it (to continue that run instead: skcgcnn train --resume "
                       "%s)", out_dir, out_dir)
    for name in (STATE_FILE, BEST_FILE, "metrics.json"):
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


def split_table(ids: Any, parts: dict[str, Any]) -> list[list[str]]:
    return [[str(ident), part] for part, rows in parts.items() for ident in ids[rows]]


def write_split(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "split"])
    writer.writerows(rows)
    _atomic_write_text(path, buffer.getvalue())


def check_resumed_split(path: Path, rows: list[list[str]], source: str) -> None:
    """The split of the resumed run must be the one it started with."""
    try:
        with open(path, newline="") as handle:
            saved = [row for row in csv.reader(handle) if row][1:]
    except OSError as exc:
        raise CLIError(f"cannot read {path} ({one_line(exc)}); the run cannot be "
                       "resumed") from exc
    if saved != rows:
        raise CLIError(f"the crystals of {source} are not those the run started with (its "
                       f"train/val/test split differs from {path}); the data changed: "
                       "start a new run")

