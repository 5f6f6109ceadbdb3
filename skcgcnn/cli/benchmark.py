"""The ``skcgcnn benchmark`` command: its parser, data loading and run.

:func:`add_benchmark_parser` adds the subcommand to an ``argparse`` subparsers object and
:func:`run_benchmark_command` runs it with the parsed arguments; the work itself is
:func:`skcgcnn.benchmark.run_benchmark`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._defaults import DEFAULT_RECIPE
from ..benchmark import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_MODELS, make_models,
                         run_benchmark)
from ._common import (DATA_DIR, PROG, check_device, common_options, data_options,
                      device_option, label_options, random_state_option)
from ._data import log_skipped

logger = logging.getLogger(__name__)

__all__ = ["add_benchmark_parser", "run_benchmark_command"]


def add_benchmark_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is :func:`run_benchmark_command`.
    """
    p = subparsers.add_parser(
        "benchmark", parents=[common_options()],
        help="compare CGCNN with descriptor baselines on the same cross-validation folds",
        description=(
            "Cross-validate CGCNN and matminer descriptor baselines on the same folds and "
            "write a table (markdown, CSV), per-fold numbers, out-of-fold predictions, parity "
            "plots and an MAE bar chart."
        ),
    )
    p.add_argument(
        "data_dir", nargs="?", metavar=DATA_DIR,
        help="a CGCNN data folder: <id>.cif files and a header-less id_prop.csv "
             "(id,target); not needed with --dataset",
    )
    p.add_argument(
        "--dataset", metavar="NAME",
        help=f"load a matbench dataset instead of {DATA_DIR}, e.g. matbench_mp_e_form "
             "(downloads it: needs network)",
    )
    p.add_argument(
        "--models", default=",".join(DEFAULT_MODELS),
        help="comma-separated models among cgcnn, magpie-rf, structure-gb, dummy "
             f"(default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument("--cv", type=int, default=5, help="number of KFold folds (default: 5)")
    p.add_argument(
        "--test-size", type=float, metavar="F",
        help="one seeded train/test split with this share of test rows instead of --cv "
             "folds, e.g. 0.2",
    )
    p.add_argument(
        "--limit", type=int, metavar="N",
        help="use a random subset of N structures (seeded by --random-state)",
    )
    p.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS,
        help=f"CGCNN training epochs (default: the default recipe's, "
             f"{DEFAULT_RECIPE['max_epochs']})",
    )
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
        help=f"CGCNN mini-batch size (default: the default recipe's, "
             f"{DEFAULT_RECIPE['batch_size']})",
    )
    p.add_argument(
        "--output-dir", metavar="DIR",
        help="write tables and plots here (default: only print the table)",
    )
    random_state_option(p, "the subset, the folds and the models")
    device_option(p)
    data_options(p)
    label_options(p)
    p.set_defaults(func=run_benchmark_command)
    return p


#: Labels (name and unit) of the matbench targets, from the matbench task metadata; a
#: --target-label replaces them.
MATBENCH_LABELS: dict[str, str] = {
    "mp_e_form": "E_form (eV/atom)",
    "mp_gap": "band gap (eV)",
    "mp_is_metal": "is_metal",
    "log_gvrh": "log10(G_VRH) (log10(GPa))",
    "log_kvrh": "log10(K_VRH) (log10(GPa))",
    "dielectric": "refractive index n",
    "jdft2d": "exfoliation energy (meV/atom)",
    "perovskites": "E_form (eV/unit cell)",
    "phonons": "last phonon DOS peak (1/cm)",
}


def target_label(args: argparse.Namespace, column: str) -> str:
    """The target's name in tables and plots: --target-label, else the matbench
    dataset's label (:data:`MATBENCH_LABELS`, when its target column is the one
    used), else the column's name."""
    if args.target_label:
        return args.target_label
    if args.dataset and not args.target:
        label = MATBENCH_LABELS.get(args.dataset.removeprefix("matbench_"))
        if label is not None:
            return label
    return column


def _load_data(args: argparse.Namespace, verbose: int) -> tuple[pd.Series, np.ndarray, str]:
    """Structures (Series indexed by id), targets and the target's name.

    ``--limit N`` picks ``sorted(default_rng(seed).choice(n_rows, N, replace=False))`` of
    the rows, so only those CIFs are parsed.  A structure that cannot be read stops the
    command unless ``--skip-errors`` is given, as in ``skcgcnn train``.
    """
    from .. import datasets
    from ..datasets import sample_rows, structures_and_target, subset_ids

    kwargs = {"n_jobs": args.n_jobs, "on_error": "skip" if args.skip_errors else "raise",
              "verbose": verbose}
    if args.dataset:
        df = datasets.load_matbench(args.dataset, **kwargs)
        chosen = False
    else:  # the subset's ids first, so that only their CIFs are read
        data_dir = Path(args.data_dir)
        prop = Path(args.id_prop)
        prop = prop if prop.is_absolute() else data_dir / prop
        df = datasets.load_cgcnn_folder(
            data_dir, id_prop=args.id_prop, ids=subset_ids(prop, args.limit, args.random_state),
            cache=not args.no_cache, **kwargs)
        chosen = prop.is_file()
    if not chosen:  # no id_prop.csv to choose from: the subset of the loaded rows
        keep = sample_rows(len(df), args.limit, args.random_state)
        if keep is not None:
            df = df.iloc[keep]
    log_skipped(df.attrs.get("errors", []), "entries of the data")
    if "structure" not in df.columns:
        raise ValueError("the loaded data has no 'structure' column")
    return structures_and_target(df, args.target or None)


def run_benchmark_command(args: argparse.Namespace) -> int:
    """Run ``skcgcnn benchmark`` with parsed arguments; return the exit status.

    Wrong options end with status 2; data that cannot be read (a :class:`ValueError`,
    :class:`OSError`) reach :func:`skcgcnn.cli.main`, which prints their first line.
    """
    def fail(message: str) -> int:
        sys.stderr.write(f"{PROG} benchmark: error: {message}\n")
        return 2

    if not args.data_dir and not args.dataset:
        return fail(f"give a {DATA_DIR} (a CGCNN folder) or --dataset NAME")
    if args.data_dir and args.dataset:
        return fail(f"give either {DATA_DIR} or --dataset, not both")
    if args.data_dir and not Path(args.data_dir).is_dir():
        return fail(f"{DATA_DIR} {args.data_dir!r} is not a directory")
    if args.test_size is not None and not 0.0 < args.test_size < 1.0:
        return fail(f"--test-size {args.test_size}: give a share of the rows in (0, 1)")
    if args.limit is not None and args.limit < 2:
        return fail(f"--limit {args.limit}: use at least 2 structures")
    names = [nm.strip() for nm in args.models.split(",") if nm.strip()]
    verbose = 0 if args.quiet else 1
    device = check_device(args.device) if "cgcnn" in names else "cpu"
    try:
        models = make_models(
            names,
            epochs=args.epochs,
            batch_size=args.batch_size,
            n_jobs=args.n_jobs,
            random_state=args.random_state,
            device=device,
        )
    except ValueError as exc:
        return fail(str(exc))
    X, y, target = _load_data(args, verbose)
    label = target_label(args, target)
    logger.info("%d structures from %s, target %r", len(y), args.dataset or args.data_dir,
                label)
    cv: Any = args.cv
    if args.test_size is not None:
        from ..model_selection import holdout_split

        cv = holdout_split(n_samples=len(y), validation_fraction=args.test_size,
                           random_state=args.random_state)[0]
    try:
        result = run_benchmark(
            models, X, y, cv=cv, output_dir=args.output_dir,
            random_state=args.random_state, target_name=label, verbose=verbose,
        )
    except ValueError as exc:
        return fail(str(exc))
    print(result.to_markdown())
    n_folds = len(result.folds) // len(models)
    split = (f"one split, {args.test_size:g} test" if args.test_size is not None
             else f"{n_folds} folds")
    print(f"\n{result.n_samples} structures, {split}, "
          f"wall time {result.wall_s:.0f} s"
          + (f"; files in {result.output_dir}" if result.output_dir else ""))
    return 0
