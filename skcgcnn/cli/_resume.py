"""The run folder of ``skcgcnn train``: its options, split and training state, for --resume.

A new run writes its options (``train_options.json``) and split (``split.csv``) into
``--output-dir`` before it trains; ``--resume DIR`` reads them back
(:func:`resume_args`), checks that the data still give the same split
(:func:`check_resumed_split`) and continues from the training state.
:func:`read_split` reads the split of ``--split FILE`` (the format of ``split.csv``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from .._atomic import atomic_write
from ._common import CLIError, one_line
from ._train_options import train_defaults

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
    return "DATA_DIR" if dest == "root_dir" else "--" + dest.replace("_", "-")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of the run in ``--resume DIR`` (its ``train_options.json``), with
    those of :data:`_RESUME_FREE` as given now; any other option given is refused."""
    run_dir = Path(args.resume).expanduser()
    file = run_dir / _OPTIONS_FILE
    if run_dir.is_file():  # the original main.py's --resume takes its checkpoint file
        raise CLIError(f"--resume {args.resume!r} is a file; --resume takes the folder of "
                       "the run to continue (the --output-dir it was started with), not a "
                       "checkpoint file as the original main.py's --resume does (an "
                       "original checkpoint.pth.tar cannot be trained on, but 'skcgcnn "
                       "predict' reads it)", status=2)
    if not run_dir.is_dir():
        raise CLIError(f"--resume {args.resume!r}: no such folder; give the --output-dir "
                       "of the run to continue")
    if not file.is_file():
        raise CLIError(f"--resume {args.resume!r}: the folder holds no {_OPTIONS_FILE}, so "
                       "it is not the --output-dir of a 'skcgcnn train' run that can be "
                       "resumed")
    defaults = train_defaults("--resume", str(args.resume))
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
    for key in ("root_dir", "graphs", "split"):
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



_SPLIT_PARTS = ("train", "val", "test")
# the fewest crystals each set of a run needs (as model_selection.split_sizes)
_SPLIT_NEED = {"train": 2, "val": 1, "test": 1}


def read_split(path: str, ids: Any) -> dict[str, Any]:
    """Positions in ``ids`` of the train, val and test sets of ``--split FILE``.

    FILE holds ``id,split`` rows under that header (the ``split.csv`` a run writes);
    each set keeps the order of its rows, so the split.csv of a run gives that run's
    sets again.  Crystals of the data that FILE does not name are left out of the run
    (a warning gives their count), as a run whose sets add up to less than the data
    leaves them out of its split.csv.

    Raises
    ------
    CLIError
        Naming the file and the row: a missing or unreadable file, a wrong header, a
        row that is not ``id,split``, a split other than train/val/test, an id twice,
        an id not in the data, or a set with fewer crystals than a run needs (train
        2, val and test 1).
    """
    import numpy as np

    file = Path(path).expanduser()
    where = f"--split {path!r}"
    try:
        with open(file, newline="") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1)
                    if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"{where}: cannot read it ({one_line(exc)}); give the split.csv of "
                       "a run, rows id,split") from exc
    if not rows or [cell.strip() for cell in rows[0][1]] != ["id", "split"]:
        raise CLIError(f"{where}: the first row must be the header id,split (as in the "
                       "split.csv that 'skcgcnn train' writes)")
    position = {str(ident): i for i, ident in enumerate(ids)}
    parts: dict[str, list[int]] = {part: [] for part in _SPLIT_PARTS}
    seen: dict[str, int] = {}
    for number, row in rows[1:]:
        if len(row) != 2:
            raise CLIError(f"{where}, row {number}: {','.join(row)!r} is not id,split")
        ident, part = row[0].strip(), row[1].strip()
        if part not in parts:
            raise CLIError(f"{where}, row {number}: split {part!r} of {ident!r} is not one "
                           "of train, val, test")
        if ident in seen:
            raise CLIError(f"{where}, row {number}: id {ident!r} is already in row "
                           f"{seen[ident]}; each crystal belongs to one set")
        if ident not in position:
            raise CLIError(f"{where}, row {number}: id {ident!r} is not a crystal of the "
                           "data (or it has no target value, or it was skipped); use the "
                           "split of this data set")
        seen[ident] = number
        parts[part].append(position[ident])
    for part, need in _SPLIT_NEED.items():
        if len(parts[part]) < need:
            raise CLIError(f"{where}: the {part} set holds {len(parts[part])} crystals; it "
                           f"needs at least {need}")
    left_out = len(position) - len(seen)
    if left_out:
        logger.warning("%d of the %d crystals are not in %s and are left out", left_out,
                       len(position), file)
    return {part: np.asarray(rows_, dtype=np.intp) for part, rows_ in parts.items()}
