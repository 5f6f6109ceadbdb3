"""``skcgcnn tune``: search CGCNN hyper-parameters with Optuna.

:func:`add_tune_parser` adds the subcommand to an ``argparse`` subparsers object and
:func:`run_tune_command` runs it with the parsed arguments; the data come from
:func:`skcgcnn.tuning.load_tuning_data` and the search is :func:`skcgcnn.tuning.tune`.
Nothing heavy is imported until the command runs, so ``skcgcnn tune --help`` imports
neither torch nor optuna nor scikit-learn.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (DATA_DIR, PROG, check_device, common_options, data_options,
                      device_option, label_options, random_state_option)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["add_tune_parser", "run_tune_command"]


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is :func:`run_tune_command`.
    """
    p = subparsers.add_parser(
        "tune", parents=[common_options()],
        help="search CGCNN hyper-parameters (atom features, depth, optimiser, graphs) "
             "with Optuna",
        description=(
            "Run (or resume) an Optuna study of CGCNN hyper-parameters on a CGCNN data "
            "folder: atom-feature set, n_conv, widths, optimiser, learning rate, weight "
            "decay, batch size, radius and max_num_nbr. Trials are pruned on the "
            "validation MAE. Several workers (--n-workers, or several machines with the "
            "same --storage and --study-name) share one study; a killed study resumes "
            "where it stopped."),
    )
    p.add_argument("data_dir", metavar=DATA_DIR,
                   help="a CGCNN data folder or archive: <id>.cif files (or cifs.tar.gz) "
                        "and a header-less id_prop.csv (id,target)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use a random subset of N structures (seeded by --random-state; the "
                        "same subset as skcgcnn benchmark --limit)")
    p.add_argument("--n-trials", type=int, default=20,
                   help="finished trials the study should have (default: 20)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="start no new trial after S seconds")
    p.add_argument("--epochs", type=int, default=30, help="epochs per trial (default: 30)")
    p.add_argument("--trial-rows", type=_fraction_or_count, metavar="F|N",
                   help="multi-fidelity: each trial trains on this share (0-1) or number of "
                        "the training rows (default: all); the validation rows stay whole")
    p.add_argument("--rerun-top", type=int, default=0, metavar="K",
                   help="train the K best trials again on all the training rows and keep "
                        "the best of those (default: 0, none)")
    p.add_argument("--refit-epochs", type=int, metavar="E",
                   help="epochs of the re-runs and the refit (default: --epochs)")
    p.add_argument("--cv", type=int, metavar="K",
                   help="K-fold cross-validation instead of one validation split")
    p.add_argument("--validation-fraction", type=float,
                   help="held-out share when neither --cv nor --split is given (default: 0.2)")
    p.add_argument("--split", metavar="FILE",
                   help="a fixed split: a CSV of id,split rows (train, val or test; the "
                        "split.csv that skcgcnn train writes). The trials train on the train "
                        "rows and are scored on the val rows; the test rows are left out of "
                        "the search, and at the end the best configuration, refitted on the "
                        "train rows, and the default CGCNNRegressor() are scored on them. "
                        "Crystals the file does not name are not used")
    p.add_argument("--storage", metavar="URL_OR_PATH",
                   help="sqlite:///file.db, postgresql://user:pw@host/db, a journal file "
                        "(*.log) or ':memory:' (default: OUTPUT_DIR/study.db, else the "
                        "skcgcnn cache folder)")
    p.add_argument("--study-name",
                   help="an existing study of that name is resumed (default: skcgcnn-<hash of "
                        "the data and settings>, so the same command resumes its study)")
    p.add_argument("--n-workers", type=int, default=1,
                   help="worker processes sharing the study on this machine (default: 1)")
    p.add_argument("--pruner", default="median",
                   choices=["median", "hyperband", "successive-halving", "none"],
                   help="pruning of unpromising trials (default: median)")
    p.add_argument("--space", metavar="JSON",
                   help="the search space as a JSON object (or the path of a .json file) with "
                        "SearchSpace fields, e.g. '{\"n_conv\": [1, 3], \"optimizer\": "
                        "\"adam\"}'; ranges are [low, high], choices lists, single values "
                        "fix a field")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune this fitted model in every trial (a file saved by skcgcnn "
                        "train or --save-model, or a pretrained model's name): its graphs and "
                        "network are fixed to the model's, freeze and init_lr_factor are "
                        "searched besides the recipe; --space fields override")
    p.add_argument("--atom-features", metavar="LIST",
                   help="comma-separated atom-feature choices among cgcnn, onehot, magpie, "
                        "matscholar, megnet, cgcnn_groups (default: all)")
    p.add_argument("--radius", metavar="LIST", help="comma-separated radii in Å (default: 6,8)")
    p.add_argument("--max-num-nbr", metavar="LIST",
                   help="comma-separated neighbour counts (default: 8,12,16)")
    p.add_argument("--baselines", default="cgcnn,magpie-rf",
                   help="reference models scored on the same split, comma-separated among "
                        "cgcnn, magpie-rf, structure-gb, dummy, or a skcgcnn benchmark "
                        "results.csv; 'none' for none (default: cgcnn,magpie-rf)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="write tables and plots here (and the default study.db)")
    p.add_argument("--graph-cache", metavar="DIR",
                   help="keep built graphs here, shared by workers and later runs "
                        "(default: OUTPUT_DIR/graphs when --output-dir is given)")
    p.add_argument("--save-model", metavar="PATH",
                   help="refit the best configuration on all data (with --split: on the "
                        "train rows) and save it here (skcgcnn.estimators.save_model format)")
    p.add_argument("--heartbeat-interval", type=float, default=20.0,
                   help="seconds between a running trial's heartbeats (default: 20)")
    p.add_argument("--grace-period", type=float, default=90.0,
                   help="a running trial silent this long (s) belongs to a dead worker and "
                        "is run again (default: 90)")
    random_state_option(p, "the subset, split, sampler and networks")
    device_option(p)
    data_options(p)
    label_options(p)
    p.set_defaults(func=run_tune_command)
    return p


def _fraction_or_count(text: str) -> float | int:
    """``--trial-rows``: a fraction such as 0.25, or a whole number of rows."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if "." not in text and "e" not in text.lower() and value.is_integer():
        return int(value)
    return value


def _csv_list(text: str | None, kind: type) -> list | None:
    if text is None:
        return None
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def _split_file_ids(path: str) -> list[str] | None:
    """The ids a split file names, to read only those crystals; None when the file cannot
    be read as one (:func:`read_split` then says what is wrong with it)."""
    try:
        with open(Path(path).expanduser(), newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or [cell.strip() for cell in rows[0]] != ["id", "split"]:
        return None
    return list(dict.fromkeys(row[0].strip() for row in rows[1:] if len(row) == 2))


def run_tune_command(args: argparse.Namespace) -> int:
    """Run ``skcgcnn tune`` with parsed arguments; return the exit status."""
    def fail(message: str) -> int:
        sys.stderr.write(f"{PROG} tune: error: {message}\n")
        return 2

    from ..tuning import (SearchSpace, best_trials_markdown, fine_tuning_space,
                          load_tuning_data, tune)

    if not Path(args.data_dir).exists():
        return fail(f"DATA_DIR {args.data_dir!r} does not exist")
    if args.limit is not None and args.limit < 10:
        return fail(f"--limit {args.limit}: use at least 10 structures")
    if args.n_workers < 1:
        return fail(f"--n-workers {args.n_workers}: use at least 1")
    split_ids = None
    if args.split is not None:
        given = [name for name, value in (("--cv", args.cv), ("--limit", args.limit),
                                          ("--validation-fraction", args.validation_fraction))
                 if value is not None]
        if given:
            return fail(f"{', '.join(given)} cannot be used with --split: the split file "
                        "names the crystals and their parts")
        if not Path(args.split).expanduser().is_file():
            return fail(f"--split {args.split!r}: no such file; give a CSV of id,split rows "
                        "(the split.csv of skcgcnn train)")
        split_ids = _split_file_ids(args.split)
        if split_ids is None:  # not a split file: say why before reading any crystal
            from ._resume import read_split

            read_split(args.split, [])
    verbose = 0 if args.quiet else 1
    device = check_device(args.device)
    estimator_params = None if args.init is None else {"init": args.init}
    try:
        data: dict = {}
        if args.space:
            text = args.space
            if not text.lstrip().startswith("{"):
                text = Path(text).read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--space is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError("--space must be a JSON object of SearchSpace fields")
        space = SearchSpace.from_dict(data)
        if args.init is not None:
            space = fine_tuning_space(args.init, **{k: getattr(space, k) for k in data})
        if args.atom_features:
            space.atom_features = tuple(_csv_list(args.atom_features, str))
        if args.radius:
            space.radius = tuple(_csv_list(args.radius, float))
        if args.max_num_nbr:
            space.max_num_nbr = tuple(_csv_list(args.max_num_nbr, int))
        space.validate(estimator_params)
    except (ValueError, OSError, TypeError) as exc:
        return fail(str(exc))
    baselines: Any = None
    if args.baselines and args.baselines.lower() != "none":
        baselines = (args.baselines if args.baselines.endswith(".csv")
                     else _csv_list(args.baselines, str))
    graph_cache = args.graph_cache
    if graph_cache is None and args.output_dir is not None:
        graph_cache = os.path.join(args.output_dir, "graphs")
    try:
        X, y, target = load_tuning_data(args.data_dir, id_prop=args.id_prop,
                                        target=args.target, limit=args.limit, ids=split_ids,
                                        random_state=args.random_state, n_jobs=args.n_jobs,
                                        cache=not args.no_cache,
                                        on_error="skip" if args.skip_errors else "raise",
                                        verbose=verbose)
    except (ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    logger.info("%d structures from %s, target %r", len(y), args.data_dir, target)
    split = None
    if args.split is not None:
        from ._resume import read_split

        split = read_split(args.split, X.index)  # a CLIError names the file and the row
    validation_fraction = 0.2 if args.validation_fraction is None else args.validation_fraction
    try:
        result = tune(X, y, space=space, n_trials=args.n_trials, timeout=args.timeout,
                      max_epochs=args.epochs, cv=args.cv,
                      validation_fraction=validation_fraction, split=split,
                      storage=args.storage, study_name=args.study_name, pruner=args.pruner,
                      random_state=args.random_state, n_workers=args.n_workers,
                      output_dir=args.output_dir, graph_cache=graph_cache,
                      baselines=baselines,
                      refit=args.save_model is not None or split is not None,
                      device=device, heartbeat_interval=args.heartbeat_interval,
                      grace_period=args.grace_period, n_jobs=args.n_jobs,
                      target_name=args.target_label or target,
                      estimator_params=estimator_params, trial_rows=args.trial_rows,
                      rerun_top=args.rerun_top, refit_epochs=args.refit_epochs,
                      verbose=verbose)
    except (ValueError, RuntimeError, ImportError) as exc:
        return fail(str(exc))
    print(best_trials_markdown(result.study, space))
    counts = result.trials["state"].value_counts().to_dict()
    print(f"\nstudy {result.study.study_name!r}: {counts}; best validation MAE "
          f"{result.best_value:.4f} (atom features "
          f"{result.study.best_trial.user_attrs.get('atom_features')}); wall time "
          f"{result.wall_s:.0f} s")
    for name, value in result.baselines.items():
        print(f"  {name}: {value:.4f}")
    for row in result.reruns or ():
        print(f"  rerun of trial {row['trial']} on all the train rows: valid MAE "
              f"{row['value']:.4f} (its trial: {row['trial_value']:.4f})")
    if result.test is not None:
        test = result.test
        print(f"test MAE on {test['n_test']} rows the study never saw: tuned CGCNN (trial "
              f"{test['tuned_trial']}, refitted on the train rows) "
              f"{test['tuned_test_mae']:.4f}, default CGCNNRegressor() "
              f"{test['default_test_mae']:.4f}")
    if args.save_model:
        from ..estimators import save_model

        save_model(result.best_pipeline, args.save_model)
        print(f"best model saved to {args.save_model}")
    if result.files:
        print(f"files in {args.output_dir}")
    return 0
