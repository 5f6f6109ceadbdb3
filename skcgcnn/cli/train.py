"""``skcgcnn train``: the original CGCNN ``main.py`` as one experiment.

Reads a CGCNN data folder (or the graph file of ``skcgcnn featurize``), splits it into
train/validation/test sets, trains a CGCNN regressor or classifier with checkpoints in
``--output-dir`` (``--resume DIR`` continues a killed run), keeps the weights of the best
validation epoch and writes the model, the test predictions, metrics and plots.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from .._defaults import GRAPH_PARAMS
from ._common import CLIError, check_device, graph_params
from ._data import (atom_features_spec, build_graphs, choose_target, existing_root,
                    read_graph_file, write_skipped)
from ._results import TrainRun, evaluate_test, summary, write_outputs
from ._resume import (check_resumed_split, epochs_done, read_split, resume_args,
                      split_table, start_run_dir, write_split)
from ._train_options import add_train_options
from ._training import (apply_recipe, check_losses, check_recipe_args, make_estimator,
                        stopped_early, valid_accuracy, valid_auc)

logger = logging.getLogger(__name__)

__all__ = ["add_train_parser", "run_train", "split_sizes"]


def add_train_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    add_train_options(sub, common).set_defaults(func=run_train)


def _check_train_args(args: argparse.Namespace) -> None:
    def usage(message: str) -> CLIError:
        return CLIError(message, status=2)

    if args.root_dir is None and args.graphs is None:
        raise usage("give DATA_DIR (a CGCNN data folder) or --graphs FILE")
    if args.root_dir is not None and args.graphs is not None:
        raise usage("give either DATA_DIR or --graphs FILE, not both")
    if args.trusted and args.graphs is None:
        raise usage("--trusted applies to --graphs FILE only")
    if args.graphs is not None:
        given = [f"--{k.replace('_', '-')}" for k in GRAPH_PARAMS
                 if getattr(args, k) is not None]
        if given:
            raise usage(f"{', '.join(given)} cannot be used with --graphs: the graphs are "
                        "already built (run 'skcgcnn featurize' again to change them)")
    for name, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--checkpoint-every", args.checkpoint_every, 1),
                             ("--atom-fea-len", args.atom_fea_len, 1),
                             ("--h-fea-len", args.h_fea_len, 1), ("--n-conv", args.n_conv, 1),
                             ("--n-h", args.n_h, 1)):
        if value < low:
            raise usage(f"{name} {value}: must be at least {low}")
    if not args.lr > 0:
        raise usage(f"--lr {args.lr}: must be positive")
    if args.weight_decay < 0:
        raise usage(f"--weight-decay {args.weight_decay}: must not be negative")
    if args.momentum is not None and not 0 <= args.momentum < 1:
        raise usage(f"--momentum {args.momentum}: must be in [0, 1)")
    for name in ("train", "val", "test"):
        ratio = getattr(args, f"{name}_ratio")
        size = getattr(args, f"{name}_size")
        if ratio is not None and not 0 <= ratio <= 1:
            raise usage(f"--{name}-ratio {ratio}: must be between 0 and 1")
        if size is not None and size < 0:
            raise usage(f"--{name}-size {size}: must not be negative")
    if args.split is not None:
        given = [f"--{name}-{kind}" for name in ("train", "val", "test")
                 for kind in ("ratio", "size") if getattr(args, f"{name}_{kind}") is not None]
        if given:
            raise usage(f"{', '.join(given)} cannot be used with --split: the split file "
                        "gives the sets")
        if not Path(args.split).expanduser().is_file():  # before the data are read
            raise CLIError(f"--split {args.split!r}: no such file; give the split.csv of a "
                           "run (id,split rows)")
    check_recipe_args(args)
    params = graph_params(args)
    if not params["radius"] > 0 or params["max_num_nbr"] < 1 or not params["step"] > 0:
        raise usage("--radius and --step must be positive and --max-num-nbr at least 1")


def _stopped_early_at(metrics: Path) -> int | None:
    """The epoch at which early stopping ended the run of ``metrics.json`` (or None)."""
    import json

    try:
        record = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None
    return record.get("epochs_trained") if record.get("stopped_early") else None


def split_sizes(n: int, args: argparse.Namespace) -> tuple[int, int, int]:
    """Sizes of the train, validation and test sets of ``n`` crystals.

    A ratio gives ``floor(ratio * n)`` crystals as the original ``main.py``; without
    ``--train-ratio``/``--train-size`` the training set is every crystal left
    (:func:`skcgcnn.model_selection.split_sizes` with the command's options; its
    ``ValueError`` is a :class:`CLIError` with exit status 2).
    """
    from ..model_selection import split_sizes as sizes

    given = {f"{part}_{kind}": getattr(args, f"{part}_{kind}")
             for part in ("train", "val", "test") for kind in ("size", "ratio")}
    try:
        return sizes(n, **given, option="--{part}-{kind}")
    except ValueError as exc:
        raise CLIError(str(exc), status=2) from exc


def _read_data(args: argparse.Namespace, out_dir: Path
               ) -> tuple[Any, Any, Any, str, str]:
    """(transformer, graphs, y, target name, source) of DATA_DIR or --graphs FILE.

    Crystals without a value of the target are left out; with --skip-errors the
    skipped structures are written to ``out_dir/skipped.csv`` at once, so that the file
    is there even if training stops.
    """
    import numpy as np

    from ..transformers import StructureGraphTransformer

    if args.graphs is not None:
        bundle = read_graph_file(args.graphs, trusted=args.trusted)
        graphs, targets, names = bundle.graphs, bundle.targets, bundle.target_names
        source = f"{args.graphs} (graphs of {bundle.info.get('source', '?')})"
        if args.atom_features is not None:
            graphs = graphs.with_atom_features(atom_features_spec(args.atom_features, None))
        transformer = StructureGraphTransformer(
            atom_features=graphs.atom_features, **graphs.graph_params).fit()
        logger.info("%d crystal graphs from %s", len(graphs), args.graphs)
    else:
        root = existing_root(args.root_dir)
        source = str(root)
        skipped: list[tuple[str, str]] = []
        transformer, graphs, targets, names = build_graphs(root, args, graph_params(args),
                                                            skipped)
        if args.skip_errors and _writer():  # now, so that it is there if training stops
            write_skipped(out_dir / "skipped.csv", skipped)
    column = choose_target(names, args.target, source)
    target = names[column]
    y = np.asarray(targets, dtype=float)[:, column]
    known = np.isfinite(y)
    if not known.all():
        logger.warning("%d crystals without a %r value are left out", int((~known).sum()),
                       target)
        graphs, y = graphs[np.flatnonzero(known)], y[known]
    if args.task == "classification" and not np.array_equal(y, np.round(y)):
        odd = y[y != np.round(y)][0]
        raise CLIError(f"--task classification needs class labels (0, 1, ...) but {target!r} "
                       f"holds values such as {odd!r}; is --task right?")
    return transformer, graphs, y, target, source


def _writer() -> bool:
    """Whether this process writes the outputs: the only one, or process 0 of those
    that ``torchrun`` started (:mod:`skcgcnn.estimators._distributed`)."""
    from ..estimators._distributed import is_writer

    return is_writer()


def _validation(args: argparse.Namespace, graphs: Any, y: Any, train: Any, val: Any
                ) -> tuple[Any, tuple[str, Any, bool]]:
    """The validation dataset and score ``(name, scorer, lower_is_better)`` of the run."""
    import numpy as np

    from ..estimators import GraphDataset

    if args.task == "classification":
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder().fit(y[train])
        unseen = sorted(set(np.unique(y[val])) - set(encoder.classes_))
        if len(encoder.classes_) < 2:
            raise CLIError(f"the training set holds only class {encoder.classes_.tolist()}; "
                           "classification needs two classes (is --task right?)")
        if unseen:
            raise CLIError(f"validation classes {unseen} do not occur in the training set; "
                           "use a larger training set")
        valid_ds = GraphDataset(graphs[val], encoder.transform(y[val]).astype(np.int64))
        score = (("valid_auc", valid_auc, False) if len(encoder.classes_) == 2
                 else ("valid_acc", valid_accuracy, False))
    else:
        from ..estimators._scoring import validation_mae

        valid_ds = GraphDataset(graphs[val], y[val].astype(np.float32))
        score = ("valid_mae", validation_mae, True)
    return valid_ds, score


def run_train(args: argparse.Namespace) -> int:
    """Run ``skcgcnn train`` (or continue the run of ``--resume``); return 0."""
    import numpy as np

    from ..model_selection import train_val_test_split

    done = None  # epochs of the run being resumed
    if args.resume is not None:
        args = resume_args(args)
        done = epochs_done(Path(args.resume))
        metrics = Path(args.resume) / "metrics.json"
        if done >= args.epochs and metrics.is_file():
            print(f"the run in {args.resume} already finished: {done} of {args.epochs} "
                  "epochs trained and its results written; nothing to resume")
            return 0
        if args.early_stopping and _stopped_early_at(metrics) == done:
            print(f"the run in {args.resume} already finished: early stopping ended it "
                  f"after epoch {done} of {args.epochs} and its results are written; "
                  "nothing to resume")
            return 0
    args = apply_recipe(args)
    _check_train_args(args)
    device = check_device(args.device)  # before the data are read
    # under torchrun: one of several processes, each training on its share of every
    # batch; process 0 alone writes the outputs and prints the summary
    from ..estimators._distributed import init_from_env, world_size

    if init_from_env(device) and not _writer():
        logging.getLogger("skcgcnn").setLevel(logging.WARNING)
    started = time.perf_counter()
    classification = args.task == "classification"
    out_dir = Path(args.output_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--output-dir {args.output_dir!r} is a file, not a folder")

    # -- data and split ----------------------------------------------------------------
    transformer, graphs, y, target, source = _read_data(args, out_dir)
    ids = np.asarray(graphs.ids, dtype=object)
    if args.split is not None:
        train, val, test = read_split(args.split, ids).values()
    else:
        train, val, test = train_val_test_split(y, split_sizes(len(y), args),
                                                random_state=args.seed,
                                                stratify=classification)
    valid_ds, score = _validation(args, graphs, y, train, val)
    logger.info("%s on %r: %d train, %d validation, %d test crystals (seed %d)",
                args.task, target, len(train), len(val), len(test), args.seed)

    # -- training, with checkpoints in the output folder ---------------------------------
    split_rows = split_table(ids, {"train": train, "val": val, "test": test})
    if done is None:
        if _writer():
            start_run_dir(out_dir, args)
            write_split(out_dir / "split.csv", split_rows)
    else:
        check_resumed_split(out_dir / "split.csv", split_rows, source)
    est, checkpoint = make_estimator(args, valid_ds, score, out_dir)
    t0 = time.perf_counter()
    est.fit(graphs[train], y[train])
    fit_seconds = time.perf_counter() - t0
    history = est.history
    check_losses(history, args)
    if not _writer():  # the same model as process 0's, which writes it
        return 0
    if stopped_early(est):
        logger.info("early stopping: the validation %s did not improve for %d epochs; "
                    "stopped after epoch %d of %d", score[0].removeprefix("valid_"),
                    args.n_iter_no_change, len(history), args.epochs)
    elif len(history) < args.epochs:
        logger.warning("training stopped after epoch %d of %d; the results are those of "
                       "that model (continue the run with: skcgcnn train --resume %s)",
                       len(history), args.epochs, out_dir)
    improved = [row["epoch"] for row in history if row.get("event_cp")]
    best_epoch = improved[-1] if improved else None
    if best_epoch is not None:
        est.load_params(checkpoint=checkpoint)
    else:
        logger.warning("the validation %s was never defined; keeping the weights of the "
                       "last epoch", score[0])
    best_score = (None if best_epoch is None
                  else float(history[best_epoch - 1, score[0]]))

    # -- test set, outputs and summary ---------------------------------------------------
    run = TrainRun(args=args, transformer=transformer, est=est, graphs=graphs, y=y,
                   split={"train": train, "val": val, "test": test}, target=target,
                   source=source, score=score[0], best_epoch=best_epoch,
                   best_score=best_score, fit_seconds=fit_seconds, done=done,
                   stopped_early=stopped_early(est), world_size=world_size())
    shown, test_metrics = evaluate_test(run)
    written = write_outputs(run, out_dir, shown, test_metrics)
    for line in summary(run, test_metrics, written, out_dir, started):
        print(line)
    return 0

