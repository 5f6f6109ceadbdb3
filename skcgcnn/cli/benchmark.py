"""The ``skcgcnn benchmark`` command: its parser, data loading and run.

:func:`add_benchmark_parser` adds the subcommand to an ``argparse`` subparsers object and
:func:`run_benchmark_command` runs it with the parsed arguments; the work itself is
:func:`skcgcnn.benchmark.run_benchmark`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._defaults import DEFAULT_RECIPE
from ..benchmark import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_MODELS, MODEL_NAMES,
                         make_models, run_benchmark)
from ._common import (DATA_DIR, PROG, CLIError, check_device, common_options, data_options,
                      device_option, label_options, random_state_option)
from ._data import log_skipped
from ._resume import read_split

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
        help=f"comma-separated models among {', '.join(MODEL_NAMES)} "
             f"(default: {','.join(DEFAULT_MODELS)}); cgcnn-finetuned needs --init",
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
    split = p.add_argument_group(
        "fixed split", "Instead of --cv or --test-size: the sets of a split file. The models "
        "are fitted on its train and val rows and scored on its test rows.")
    split.add_argument(
        "--split", metavar="FILE|NAME",
        help="id,split rows with that header (split train, val or test), as in the "
             "split.csv of 'skcgcnn train'; or the name of a pretrained model, whose own "
             "split is used (skcgcnn.pretrained.pretrained_split), so that its test rows "
             "stay unseen. Crystals the file does not name are left out",
    )
    split.add_argument(
        "--n-train", type=int, metavar="N",
        help="with --split: a seeded subset of N of its train and val rows to fit on "
             "(default: all of them)",
    )
    split.add_argument(
        "--n-test", type=int, metavar="N",
        help="with --split: a seeded subset of N of its test rows (default: all of them); "
             "only the chosen crystals are read",
    )
    finetune = p.add_argument_group(
        "fine-tuning", "The cgcnn-finetuned model: the cgcnn recipe started from a fitted "
        "model, on graphs built with that model's settings (CGCNNRegressor(init=...)).")
    finetune.add_argument(
        "--init", metavar="NAME|FILE",
        help="the model to fine-tune: a pretrained model's name (skcgcnn.list_pretrained(), "
             "e.g. mp-formation-energy) or a file of skcgcnn.save_model",
    )
    finetune.add_argument(
        "--freeze", choices=("embedding", "conv"),
        help="keep the pretrained atom embedding (embedding) or the embedding and every "
             "convolution (conv) as they are (default: train every layer)",
    )
    finetune.add_argument(
        "--init-lr-factor", type=float, default=1.0, metavar="F",
        help="learning rate of the pretrained layers: the recipe's times F (default: 1)",
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


def _load_data(args: argparse.Namespace, verbose: int
               ) -> tuple[pd.Series, np.ndarray, str, Any]:
    """Structures (Series indexed by id), targets, the target's name and the split.

    ``--limit N`` picks ``sorted(default_rng(seed).choice(n_rows, N, replace=False))`` of
    the rows, so only those CIFs are parsed.  With ``--split`` the split is the pair of
    positions (train and val rows, test rows) and only the crystals of those sets (after
    ``--n-train`` / ``--n-test``) are read; otherwise it is None.  A structure that
    cannot be read stops the command unless ``--skip-errors`` is given, as in
    ``skcgcnn train``.
    """
    from .. import datasets
    from ..datasets import id_prop_ids, sample_rows, structures_and_target, subset_ids

    # missing values of other columns of a multi-target file are no error: rows whose
    # chosen target is missing are dropped (structures_and_target)
    kwargs = {"n_jobs": args.n_jobs, "on_error": "skip" if args.skip_errors else "raise",
              "verbose": verbose}
    sets = None
    if args.dataset:
        df = datasets.load_matbench(args.dataset, **kwargs)
        chosen = False
    else:  # the subset's ids first, so that only their CIFs are read
        data_dir = Path(args.data_dir)
        prop = Path(args.id_prop)
        prop = prop if prop.is_absolute() else data_dir / prop
        chosen = prop.is_file()
        if args.split is not None and chosen:
            all_ids = np.asarray(id_prop_ids(prop), dtype=object)
            sets = _split_sets(args, all_ids)
            ids = list(all_ids[_rows_of(sets)])
        else:
            ids = subset_ids(prop, args.limit, args.random_state)
        df = datasets.load_cgcnn_folder(
            data_dir, id_prop=args.id_prop, ids=ids, missing_target="nan",
            cache=not args.no_cache, **kwargs)
    if args.split is not None and sets is None:  # a dataset, or no id_prop file to read
        sets = _split_sets(args, np.asarray(df.index.astype(str), dtype=object))
        df = df.iloc[_rows_of(sets)]
    elif not chosen and args.split is None:  # no id_prop.csv to choose from: loaded rows
        keep = sample_rows(len(df), args.limit, args.random_state)
        if keep is not None:
            df = df.iloc[keep]
    log_skipped(df.attrs.get("errors", []), "entries of the data")
    if "structure" not in df.columns:
        raise ValueError("the loaded data has no 'structure' column")
    X, y, target = structures_and_target(df, args.target or None)
    if sets is None:
        return X, y, target, None
    test_ids = set(sets["test_ids"])
    in_test = np.array([str(ident) in test_ids for ident in X.index])
    train, test = np.flatnonzero(~in_test), np.flatnonzero(in_test)
    for part, rows, wanted in (("training", train, sets["train"]),
                               ("test", test, sets["test"])):
        if len(rows) < len(wanted):
            logger.warning("%d of the %d %s crystals of --split are left out (no %r value, "
                           "or unreadable)", len(wanted) - len(rows), len(wanted), part,
                           target)
        if not len(rows):
            raise ValueError(f"--split {args.split!r} leaves no {part} crystals with a "
                             f"{target!r} value")
    return X, y, target, (train, test)


def _split_sets(args: argparse.Namespace, ids: np.ndarray) -> dict[str, Any]:
    """Positions in ``ids`` of the rows to fit on (``train``: the file's train and val
    rows) and to score (``test``), after ``--n-train`` / ``--n-test``, and the ids of
    the test rows (``test_ids``)."""
    from ..datasets import sample_rows

    with _split_path(args.split) as path:
        parts = read_split(str(path), ids)
    sets = {"train": np.concatenate([parts["train"], parts["val"]]), "test": parts["test"]}
    for part, limit in (("train", args.n_train), ("test", args.n_test)):
        keep = sample_rows(len(sets[part]), limit, args.random_state)
        if keep is not None:
            sets[part] = sets[part][keep]
    if args.init is not None:
        _check_unseen(args.init, ids[sets["test"]])
    return {**sets, "test_ids": [str(ident) for ident in ids[sets["test"]]]}


def _rows_of(sets: dict[str, Any]) -> np.ndarray:
    """The positions of both sets, in data order: the rows to read."""
    return np.sort(np.concatenate([sets["train"], sets["test"]]))


@contextlib.contextmanager
def _split_path(value: str) -> Iterator[Path]:
    """The split file of ``--split``: the file itself, or, for the name of a pretrained
    model, its split written to a temporary file (read by :func:`read_split` as any)."""
    path = Path(value).expanduser()
    if path.is_file():
        yield path
        return
    from ..pretrained import is_pretrained_name, pretrained_split

    if not is_pretrained_name(value):
        raise CLIError(f"--split {value!r}: no such file, nor the name of a pretrained model; "
                       "give the split.csv of a run (id,split rows) or a name of "
                       "skcgcnn.list_pretrained()", status=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.csv"
        pretrained_split(value).to_csv(path, index=False)
        try:
            yield path
        except CLIError as exc:  # read_split's message names the file: name the model
            message = str(exc).replace(repr(str(path)), f"{value!r} (the pretrained model's "
                                       "split)")
            raise CLIError(message, status=exc.status) from None


def _check_unseen(init: str, test_ids: np.ndarray) -> None:
    """Warn when test rows were among the training or validation rows of the pretrained
    model ``init`` (a shipped name; a file's split is not known)."""
    from ..pretrained import is_pretrained_name, pretrained_split

    if not is_pretrained_name(init):
        return
    split = pretrained_split(init)
    seen = set(split.loc[split["split"] != "test", "id"].astype(str))
    n_seen = sum(str(ident) in seen for ident in test_ids)
    if n_seen:
        logger.warning("%d of the %d test crystals were training or validation crystals of "
                       "the pretrained model %r: cgcnn-finetuned's scores on them are no "
                       "fair test; use --split %s", n_seen, len(test_ids), init, init)


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
    if args.split is not None:
        given = [flag for flag, value in (("--test-size", args.test_size),
                                          ("--limit", args.limit)) if value is not None]
        if given:
            return fail(f"{' and '.join(given)} cannot be used with --split: the split file "
                        "gives the sets (--n-train and --n-test take subsets of them)")
    else:
        given = [flag for flag, value in (("--n-train", args.n_train),
                                          ("--n-test", args.n_test)) if value is not None]
        if given:
            return fail(f"{' and '.join(given)} take subsets of the sets of --split: give "
                        "--split FILE too")
    for flag, value in (("--n-train", args.n_train), ("--n-test", args.n_test)):
        if value is not None and value < 1:
            return fail(f"{flag} {value}: use at least 1 crystal")
    names = [nm.strip() for nm in args.models.split(",") if nm.strip()]
    if "cgcnn-finetuned" in names and args.init is None:
        return fail("cgcnn-finetuned in --models needs --init NAME|FILE, the model to "
                    "fine-tune")
    if "cgcnn-finetuned" not in names and args.init is not None:
        logger.warning("--init %s is not used: --models has no cgcnn-finetuned", args.init)
        args.init = None
    verbose = 0 if args.quiet else 1
    cgcnn = {"cgcnn", "cgcnn-finetuned"} & set(names)
    device = check_device(args.device) if cgcnn else "cpu"
    try:
        models = make_models(
            names,
            epochs=args.epochs,
            batch_size=args.batch_size,
            n_jobs=args.n_jobs,
            random_state=args.random_state,
            device=device,
            init=args.init,
            freeze=args.freeze,
            init_lr_factor=args.init_lr_factor,
        )
    except ValueError as exc:
        return fail(str(exc))
    X, y, target, fixed = _load_data(args, verbose)
    label = target_label(args, target)
    logger.info("%d structures from %s, target %r", len(y), args.dataset or args.data_dir,
                label)
    cv: Any = args.cv
    if fixed is not None:
        cv = fixed
        logger.info("--split %s: %d crystals to fit on (train and val), %d test crystals",
                    args.split, len(fixed[0]), len(fixed[1]))
    elif args.test_size is not None:
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
    if fixed is not None:
        split = f"--split {args.split}: {len(fixed[0])} train, {len(fixed[1])} test"
    elif args.test_size is not None:
        split = f"one split, {args.test_size:g} test"
    else:
        split = f"{n_folds} folds"
    print(f"\n{result.n_samples} structures, {split}, "
          f"wall time {result.wall_s:.0f} s"
          + (f"; files in {result.output_dir}" if result.output_dir else ""))
    return 0
