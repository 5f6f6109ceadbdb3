"""``skcgcnn merge``: join the output files of ``skcgcnn predict --shard I/N`` into one.

The shards' files (header-less ``id,target,prediction[,...]`` rows) are read whole and
checked before anything is written:

- every file is complete: a last line without its newline is a shard that was stopped
  part way (``predict --shard I/N --resume`` finishes it);
- every row has the same number of columns (the same model's output);
- no id appears twice, in one file or in two;
- when the files are named ``...shard-I-of-N...`` (predict's default), they are all the
  shards of one N, and each file's ids are those of its shard
  (:func:`skcgcnn.streaming.shard_of`);
- with ``--inputs``, every input has a row and every row is an input: the missing ids
  are printed on standard output, one a line, and the exit status is 1 (unless
  ``--allow-missing``).

The merged table is written to ``-o FILE`` through a temporary file: in the order of the
inputs with ``--inputs`` (the order of a one-process ``skcgcnn predict`` of the same
inputs), else file by file in the order given.
"""
from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path
from typing import Any

from .._atomic import atomic_write
from ._common import DATA_DIR, CLIError, one_line

logger = logging.getLogger(__name__)

__all__ = ["add_merge_parser", "input_ids", "run_merge"]

_SHARD_NAME = re.compile(r"shard-(\d+)-of-(\d+)")
_SHOWN = 10  # ids named in one error line


def add_merge_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "merge", parents=[common],
        help="join the files of 'skcgcnn predict --shard I/N' into one table",
        description=(
            "Join the output files of 'skcgcnn predict --shard I/N' (header-less id,target,"
            "prediction rows) into one file, after checking that every file is complete, "
            "that no id appears twice and, for files named predictions.shard-I-of-N.csv, "
            "that all N shards are there and hold their own ids. With --inputs, every input "
            "must have a row: the missing ids are printed on standard output, one a line, "
            "and the exit status is 1; the rows then follow the order of the inputs."),
        epilog="example: skcgcnn merge predictions.shard-*-of-32.csv -o predictions.csv "
               "--inputs data/candidates",
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="the shards' output files (predictions.shard-I-of-N.csv)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the merged CSV file to write")
    p.add_argument("--inputs", nargs="+", default=None, metavar=f"{DATA_DIR}|CIF",
                   help="the INPUTS given to 'skcgcnn predict' (a data folder, or CIF files): "
                        "check that each has exactly one row, and write the rows in their "
                        "order")
    p.add_argument("--id-prop", default="id_prop.csv", metavar="FILE",
                   help=f"the id,target file inside {DATA_DIR} (default: id_prop.csv)")
    p.add_argument("--allow-missing", action="store_true",
                   help="with --inputs, write OUT and exit 0 even when some inputs have no "
                        "row (those skipped by predict --skip-errors); they are still listed")
    p.set_defaults(func=run_merge)


def _read_rows(path: Path) -> list[list[str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path} ({one_line(exc)}); give the files written by "
                       "'skcgcnn predict --shard I/N'") from exc
    if data and not data.endswith(b"\n"):
        raise CLIError(f"{path} ends in an unfinished line: the predict run that wrote it "
                       "was stopped part way; finish it with the same 'skcgcnn predict' "
                       "command and --resume, then merge again")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not UTF-8 text ({one_line(exc)}); give the CSV files "
                       "written by 'skcgcnn predict'") from exc
    return [row for row in csv.reader(text.splitlines()) if row]


def _shard_numbers(paths: list[Path]) -> list[tuple[int, int]] | None:
    """(I, N) of each file when all are named ...shard-I-of-N..., else None."""
    found = [_SHARD_NAME.search(p.name) for p in paths]
    if not all(found):
        return None
    return [(int(m.group(1)), int(m.group(2))) for m in found]


def _check_shard_set(paths: list[Path], numbers: list[tuple[int, int]]) -> None:
    counts = sorted({n for _, n in numbers})
    if len(counts) > 1:
        raise CLIError(f"the files are shards of {' and of '.join(map(str, counts))}: merge "
                       "the files of one run (one N of --shard I/N)")
    count = counts[0]
    given: dict[int, Path] = {}
    for path, (index, _) in zip(paths, numbers):
        if index >= count:
            raise CLIError(f"{path} names shard {index} of {count}, which does not exist "
                           f"(shards are 0 to {count - 1})")
        if index in given:
            raise CLIError(f"{given[index]} and {path} are both shard {index} of {count}; "
                           "give each shard's file once")
        given[index] = path
    absent = [i for i in range(count) if i not in given]
    if absent:
        shown = ", ".join(map(str, absent[:_SHOWN])) + (" ..." if len(absent) > _SHOWN
                                                        else "")
        raise CLIError(f"{len(absent)} of the {count} shards have no file: {shown}; run "
                       f"'skcgcnn predict ... --shard I/{count}' for them (or give their "
                       "files)")


def _check_own_ids(path: Path, index: int, count: int, ids: list[str]) -> None:
    from ..streaming import shard_of

    other = [i for i in ids if shard_of(i, count) != index]
    if other:
        raise CLIError(f"{path} is named shard {index} of {count} but holds {len(other)} "
                       f"ids of other shards (first: {other[0]}); was it renamed, or written "
                       "with another --shard?")


def input_ids(inputs: list[str], id_prop: str = "id_prop.csv") -> list[str]:
    """The ids that ``skcgcnn predict`` gives INPUTS, in its order, nothing parsed.

    A data folder (or an archive of CIFs beside ``id_prop``) gives the ids of its
    id_prop file in file order (each once), a folder without one the names of its
    ``*.cif`` files sorted, and CIF files their names without suffix, in the order given.
    """
    from ..datasets import id_prop_ids

    paths = [Path(p).expanduser() for p in inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CLIError(f"--inputs {missing[0]!r} does not exist; give the DATA_DIR or CIF "
                       "files given to 'skcgcnn predict'")
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].is_file()
                            and not paths[0].name.lower().endswith(".cif")):
        root = paths[0]
        prop = Path(id_prop)
        if not prop.is_absolute():
            prop = (root if root.is_dir() else root.parent) / prop
        ids = id_prop_ids(prop)
        if ids is not None:
            return list(dict.fromkeys(ids))
        if root.is_file():
            raise CLIError(f"--inputs {str(root)!r}: no {prop.name} beside the archive")
        cifs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
        if not cifs:
            raise CLIError(f"--inputs {str(root)!r} holds neither {prop.name} nor .cif files")
        return [p.stem for p in cifs]
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise CLIError(f"--inputs {folders[0]!r} is a folder; give one DATA_DIR or CIF files, "
                       "not both")
    return [p.stem for p in paths]


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (" ..." if len(ids) > _SHOWN else "")


def _write_atomically(path: Path, rows: list[list[str]]) -> None:
    with atomic_write(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def run_merge(args: argparse.Namespace) -> int:
    paths = [Path(p).expanduser() for p in args.files]
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise CLIError(f"-o {args.output!r} is a folder; give a file name")
    if any(p.resolve() == output.resolve() for p in paths if p.exists()):
        raise CLIError(f"-o {args.output!r} is one of the files to merge; write elsewhere")
    numbers = _shard_numbers(paths)
    if numbers is not None:
        _check_shard_set(paths, numbers)
    where: dict[str, Path] = {}
    by_id: dict[str, list[str]] = {}
    order: list[str] = []
    repeated: list[str] = []
    width = None
    for k, path in enumerate(paths):
        rows = _read_rows(path)
        if numbers is not None:
            _check_own_ids(path, *numbers[k], [row[0] for row in rows])
        for row in rows:
            if width is None:
                width, first = len(row), path
            elif len(row) != width:
                raise CLIError(f"{path}: the row of {row[0]!r} has {len(row)} columns, the "
                               f"rows of {first} {width}: these are not the outputs of one "
                               "model")
            ident = row[0]
            if ident in by_id:
                repeated.append(f"{ident} ({where[ident]}, {path})")
                continue
            where[ident], by_id[ident] = path, row
            order.append(ident)
        logger.info("%s: %d rows", path, len(rows))
    if repeated:
        raise CLIError(f"{len(repeated)} ids have more than one row: {_shown(repeated)}; "
                       "each input must be predicted once (were the shards run with other "
                       "inputs, or a file given twice?)")
    missing: list[str] = []
    if args.inputs is not None:
        expected = input_ids(args.inputs, args.id_prop)
        known = set(expected)
        extra = [i for i in order if i not in known]
        if extra:
            raise CLIError(f"{len(extra)} ids of the files are not among the --inputs: "
                           f"{_shown(extra)}; give the inputs the shards predicted")
        missing = [i for i in expected if i not in by_id]
        order = [i for i in expected if i in by_id]
        for ident in missing:
            sys.stdout.write(f"{ident}\n")
        if missing and not args.allow_missing:
            raise CLIError(f"{len(missing)} of the {len(expected)} inputs have no row: "
                           f"{_shown(missing)} (all listed on standard output); run their "
                           f"shards again with --resume, or pass --allow-missing to write "
                           f"{output} without them")
    _write_atomically(output, [by_id[i] for i in order])
    note = f" ({len(missing)} inputs without a row listed above)" if missing else ""
    print(f"merged {len(order)} rows of {len(paths)} files into {output}{note}",
          file=sys.stderr if missing else sys.stdout)
    return 0
