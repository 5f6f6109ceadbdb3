"""Data in and out of the ``skcgcnn`` subcommands: data folders, graph files, results.

Reading a CGCNN data folder (:func:`load_folder`) and building its graphs
(:func:`build_graphs`), reading a graph file of ``skcgcnn featurize``
(:func:`read_graph_file`), choosing the target column, and writing the header-less
``id,target,prediction`` rows of the original ``main.py``/``predict.py``
(:func:`write_results`).  Every problem the user can fix is a :class:`CLIError`.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import CLIError, one_line, verbose

logger = logging.getLogger(__name__)


def existing_root(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise CLIError(f"DATA_DIR {path!r} does not exist; give a CGCNN data folder "
                       "(id_prop.csv and <id>.cif files)")
    return root


def atom_features_spec(given: str | None, root: Path | None) -> Any:
    """The --atom-features value, else DATA_DIR/atom_init.json (as main.py), else cgcnn."""
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


def load_folder(root: Path, args: argparse.Namespace) -> Any:
    """``load_cgcnn_folder`` with the command's options; targets may be missing (NaN)."""
    from ..datasets import load_cgcnn_folder

    return load_cgcnn_folder(
        root, id_prop=args.id_prop, missing_target="nan", n_jobs=args.n_jobs,
        on_error="skip" if args.skip_errors else "raise",
        cache=not args.no_cache, verbose=verbose(args))


def log_skipped(errors: Sequence[tuple], what: str) -> list[tuple[str, str]]:
    """Log every skipped entry (the count and all ids in one warning, each reason at INFO)
    and return them as ``(id, reason)`` rows; ``errors`` end in ``(id, reason)``."""
    rows = [(str(e[-2]), one_line(ValueError(e[-1]))) for e in errors]
    if rows:
        logger.warning("%d %s skipped: %s (first: %s)", len(rows), what,
                       ", ".join(ident for ident, _ in rows), rows[0][1])
        for ident, reason in rows:
            logger.info("skipped %s: %s", ident, reason)
    return rows


def write_skipped(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    """``id,reason`` of every skipped structure (a header only when none was skipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "reason"])
        writer.writerows(rows)


def build_graphs(root: Path, args: argparse.Namespace, graph_params: dict,
                  skipped: list | None = None) -> tuple[Any, Any, Any, list[str]]:
    """Load DATA_DIR and build its graphs: (transformer, graphs, targets 2-D, names).

    With ``--skip-errors``, the ``(id, reason)`` of every structure left out are logged
    and appended to ``skipped``.
    """
    skipped = [] if skipped is None else skipped
    import numpy as np

    from ..transformers import StructureGraphTransformer

    spec = atom_features_spec(args.atom_features, root)
    t0 = time.perf_counter()
    df = load_folder(root, args)
    skipped += log_skipped(df.attrs.get("errors", []), "entries of the data folder")
    names = [c for c in df.columns if c != "structure"]
    if len(df) == 0:
        raise CLIError(f"no usable structures in {root}")
    logger.info("%d structures read from %s in %.1f s", len(df), root,
                time.perf_counter() - t0)
    transformer = StructureGraphTransformer(
        atom_features=spec, n_jobs=args.n_jobs, verbose=verbose(args),
        on_error="skip" if args.skip_errors else "raise", **graph_params)
    t0 = time.perf_counter()
    graphs = transformer.fit_transform(df["structure"])
    skipped += log_skipped(transformer.errors_, "structures without a graph")
    logger.info("%d crystal graphs (%d atoms) built in %.1f s", len(graphs),
                len(graphs.numbers), time.perf_counter() - t0)
    targets = df[names].to_numpy(dtype=float)[transformer.kept_indices_] if names else \
        np.zeros((len(graphs), 0))
    return transformer, graphs, targets, names


def read_graph_file(path: str, trusted: bool = False) -> Any:
    """The GraphBundle of --graphs FILE (old pickle files only with --trusted)."""
    from ..graph import GraphFileError, UntrustedGraphFileError, load_graphs

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
                       f"featurize': {one_line(exc)}") from exc


def choose_target(names: Sequence[str], wanted: str | None, where: str) -> int:
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


def write_results(path: Path | None, ids: Sequence[Any], targets: Any, preds: Any) -> None:
    """id, target, prediction[, prediction ...] rows without header, as the original."""
    handle = sys.stdout if path is None else open(path, "w", newline="")
    try:
        write_result_rows(handle, ids, targets, preds)
    finally:
        if path is not None:
            handle.close()


def write_result_rows(handle: Any, ids: Sequence[Any], targets: Any, preds: Any) -> None:
    """The rows of :func:`write_results` on an open text handle."""
    import numpy as np

    preds = np.asarray(preds, dtype=float).reshape(len(ids), -1)
    writer = csv.writer(handle, lineterminator="\n")
    for ident, target, row in zip(ids, targets, preds):
        writer.writerow([ident, _fmt(target)] + [_fmt(v) for v in row])
