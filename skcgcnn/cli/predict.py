"""``skcgcnn predict``: the original CGCNN ``predict.py``.

Loads a model written by ``skcgcnn train`` (or an original ``.pth.tar``), predicts a data
folder or CIF files and writes header-less ``id,target,prediction`` rows (``id,target,
prediction,std`` for a model with a variance head, ``--loss gaussian_nll``) to
``--output`` (default ``predictions.csv``; ``-`` for standard output); when the targets
are known, the MAE (classification: accuracy and ROC-AUC) is printed too.  The model
card is summed up in a few log lines (the whole card with ``--debug``).

The crystals are read, featurized and predicted ``--chunk-size`` at a time
(:func:`skcgcnn.streaming.predict_iter`) and each chunk's rows are written before the
next is read, so memory stays flat in the number of crystals; ``--resume`` appends to
an output file left by an interrupted run, skipping the ids it already holds.  (A data
folder whose CIFs are in a tar archive is read whole first, then predicted in chunks.)

``--shard I/N`` predicts only the inputs of shard I of N (:func:`skcgcnn.streaming.shard_of`:
a stable hash of the id), into ``predictions.shard-I-of-N.csv`` by default, so that the N
tasks of a job array write N files that ``--resume`` continues and ``skcgcnn merge`` joins.

``--dask-scheduler ADDRESS`` runs the chunks as tasks on a dask.distributed cluster
(``predict_iter(..., client=Client(ADDRESS))``); the rows are written here, in input
order, as the chunks come back.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from .._defaults import MAX_NUM_NBR
from ._common import (DATA_DIR, CLIError, check_device, data_options, device_option,
                      label_options, one_line, verbose)
from ._data import choose_target, load_folder, log_skipped, write_result_rows

logger = logging.getLogger(__name__)

#: Where the rows go when --output is not given (the original predict.py writes
#: test_results.csv in the current directory).
DEFAULT_OUTPUT = "predictions.csv"


def shard_output(index: int, count: int) -> str:
    """The default output of ``--shard I/N``: ``predictions.shard-I-of-N.csv``."""
    return f"predictions.shard-{index}-of-{count}.csv"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)`` with ``0 <= I < N`` (argparse type of --shard)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not I/N (e.g. 0/32: the first of 32 shards)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"{text!r}: I must be 0 to N-1 (shards are numbered from 0, as Slurm's "
            "--array=0-31 numbers its tasks)")
    return index, count

__all__ = ["add_predict_parser", "run_predict"]


def add_predict_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict", parents=[common],
        help="predict with a trained model or an original .pth.tar (the original predict.py)",
        description=(
            "Predict the property of crystals with a model written by 'skcgcnn train' (or "
            "skcgcnn.estimators.save_model) or an original CGCNN .pth.tar checkpoint. The "
            "output (--output, default predictions.csv) is CSV without header: id, "
            "target (empty when unknown), prediction; for "
            "classification the prediction is the probability of class 1, as predict.py; "
            "for a model trained with --loss gaussian_nll the predicted std follows it "
            "(one per target). "
            "When DATA_DIR has an id_prop.csv its targets are written too and the MAE "
            "(classification: accuracy and ROC-AUC) is printed."),
        epilog="example: skcgcnn predict pre-trained/formation-energy-per-atom.pth.tar "
               "data/sample-regression --output test_results.csv",
    )
    p.add_argument("model", metavar="MODEL",
                   help="model.pt from 'skcgcnn train', an original CGCNN .pth.tar, or the "
                        "name of a pretrained model shipped with skcgcnn "
                        "(skcgcnn.list_pretrained(): mp-formation-energy, mp-band-gap)")
    p.add_argument("inputs", nargs="+", metavar=f"{DATA_DIR}|CIF",
                   help="a CGCNN data folder (id_prop.csv optional: without it, every *.cif "
                        "in it), or CIF files")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help=f"CSV file to write; '-' writes the rows to standard output "
                        f"(default: {DEFAULT_OUTPUT} in the current directory)")
    p.add_argument("--trusted", action="store_true",
                   help="allow checkpoints that hold pickled Python objects (the original "
                        "classification checkpoints); they can run code when loaded, so "
                        "only for files you trust")
    device_option(p)
    p.add_argument("-b", "--batch-size", type=int, default=None, metavar="N",
                   help="crystals per batch (default: the model's)")
    p.add_argument("--chunk-size", type=int, default=2000, metavar="N",
                   help="crystals read, featurized and predicted at a time; their rows are "
                        "written before the next chunk is read (default: 2000)")
    p.add_argument("--resume", action="store_true",
                   help="append to --output, skipping the ids it already holds (the rows "
                        "of an interrupted run); without the file, start it")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                   help="predict only shard I of N (0 <= I < N): the inputs whose id hashes "
                        "to I, for the N tasks of a job array; the output defaults to "
                        "predictions.shard-I-of-N.csv (which --resume continues); join the "
                        "N files with 'skcgcnn merge'")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the chunks as tasks on the dask.distributed cluster of this "
                        "scheduler (tcp://host:8786, or a scheduler file *.json); the rows "
                        "come back here in input order (needs pip install 'skcgcnn[dask]')")
    data_options(p)
    label_options(p)
    p.set_defaults(func=run_predict)


def _check_model_file(path: str) -> Path:
    """A path that looks like a torch file (a zip archive or torch's legacy format), or
    the file of the pretrained model that ``path`` names."""
    from ..estimators import is_torch_file
    from ..pretrained import PretrainedError, is_pretrained_name, list_pretrained

    if is_pretrained_name(path):
        from ..pretrained import pretrained_path

        try:
            return pretrained_path(path)
        except PretrainedError as exc:
            raise CLIError(str(exc)) from exc
    file = Path(path).expanduser()
    if not file.exists():
        raise CLIError(f"MODEL {path!r} does not exist; give a model.pt from 'skcgcnn "
                       "train', an original CGCNN .pth.tar or the name of a pretrained "
                       f"model ({', '.join(list_pretrained()) or 'none shipped'})")
    if not file.is_file():
        raise CLIError(f"MODEL {path!r} is not a file")
    if not is_torch_file(file):
        raise CLIError(f"MODEL {path!r} is not a model file: give a model.pt from "
                       "'skcgcnn train' or an original CGCNN .pth.tar")
    return file


def _load_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(transformer, estimator, task) from MODEL."""
    from ..estimators import CGCNNClassifier, CheckpointError, load_model, split_pipeline
    from ..transformers import StructureGraphTransformer

    file = _check_model_file(args.model)
    device = check_device(args.device)
    # load_model logs the whole model card at INFO; here a summary is logged instead
    # (_log_card), the whole card only with --debug
    quiet_loader = logging.getLogger("skcgcnn.estimators._persistence")
    old_level = quiet_loader.level
    if not logger.isEnabledFor(logging.DEBUG):
        quiet_loader.setLevel(logging.WARNING)
    try:
        model = load_model(file, trusted=args.trusted, device=device)
    except CheckpointError as exc:
        message = one_line(exc).replace("; for skcgcnn models use load_model", "")
        if "trusted=True" in message:
            message = (f"MODEL {args.model!r} holds pickled Python objects besides tensors "
                       "(the original CGCNN classification checkpoints do), which can run "
                       "code when loaded; pass --trusted if you trust the file")
        raise CLIError(message) from exc
    except pickle.UnpicklingError as exc:
        raise CLIError(f"MODEL {args.model!r} is not a model file ({one_line(exc)})") from exc
    finally:
        quiet_loader.setLevel(old_level)
    transformer, est = split_pipeline(model)
    if transformer is None:
        kw = {"max_num_nbr": MAX_NUM_NBR, **est.module_kwargs_,
              **getattr(est, "graph_params_", {})}
        logger.warning("MODEL holds an estimator without its transformer; building graphs "
                       "with radius %s, %s neighbours and the cgcnn atom features",
                       kw["radius"], kw["max_num_nbr"])
        transformer = StructureGraphTransformer(radius=kw["radius"],
                                                max_num_nbr=kw["max_num_nbr"], dmin=kw["dmin"],
                                                step=kw["step"]).fit()
    task = "classification" if isinstance(est, CGCNNClassifier) else "regression"
    _log_card(args.model, getattr(est, "model_card_", None))
    return transformer, est, task


def _log_card(path: str, card: dict | None) -> None:
    """The model card's essentials at INFO (what, trained on what, recipe, test
    metrics); the whole card is logged by load_model with --debug."""
    from ..estimators._card import summarize_model_card

    if not card:
        return
    lines = summarize_model_card(card)
    logger.info("MODEL %s: %s", path, lines[0])
    for line in lines[1:]:
        logger.info("  %s", line)


def _warn_other_atom_features(root: Path, transformer: Any) -> None:
    """Warn when DATA_DIR/atom_init.json differs from the model's atom features."""
    import numpy as np

    from ..atom_features import get_atom_features

    path = root / "atom_init.json"
    if not path.is_file():
        return
    try:
        theirs, ours = get_atom_features(str(path)), transformer.atom_features_
        same = (theirs.table.shape == ours.table.shape
                and np.array_equal(theirs.available, ours.available)
                and np.allclose(theirs.table[theirs.available], ours.table[ours.available]))
    except Exception as exc:  # an odd atom_init.json is not the model's business
        logger.debug("cannot compare %s: %s", path, exc)
        return
    if not same:
        logger.warning("%s differs from the atom features stored with the model; the "
                       "model's are used", path)


def _load_wanted(root: Path, args: argparse.Namespace, wanted: Any) -> Any:
    """The data folder (or archive) parsed whole, or only the ids that ``wanted`` keeps
    (those of ``--shard`` not yet in the ``--resume`` file): N shards of an archive then
    parse N parts of it, not N times the whole."""
    if wanted is None:
        return load_folder(root, args)
    from ..datasets import id_prop_ids, load_cgcnn_folder

    prop = Path(args.id_prop)
    if not prop.is_absolute():
        prop = (root if root.is_dir() else root.parent) / prop
    ids = id_prop_ids(prop)
    if ids is None:
        return load_folder(root, args)
    return load_cgcnn_folder(
        root, id_prop=args.id_prop, ids=[i for i in dict.fromkeys(ids) if wanted(i)],
        missing_target="nan", n_jobs=args.n_jobs,
        on_error="skip" if args.skip_errors else "raise", cache=not args.no_cache,
        verbose=verbose(args))


def _predict_inputs(args: argparse.Namespace, transformer: Any, wanted: Any = None
                    ) -> tuple[Any, Any, str | None]:
    """(structures or CIF paths as a Series indexed by id, targets or None, target name).

    The ids are those of a data folder's rows, or the CIF files' names without suffix;
    the Series carries them to the transformer (:mod:`skcgcnn.structures`' id rule).
    ``wanted(id)``, when given, says which ids of a folder that must be parsed whole
    (its CIFs in an archive) are parsed; the others are filtered later, unread.
    """
    import pandas as pd

    paths = [Path(p).expanduser() for p in args.inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CLIError(f"{missing[0]!r} does not exist; give a CGCNN data folder or CIF files")
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].name.lower().endswith(
            (".tar.gz", ".tgz", ".tar"))):
        root = paths[0]
        if root.is_dir():
            _warn_other_atom_features(root, transformer)
        has_id_prop = (root / args.id_prop).is_file() if root.is_dir() else True
        if has_id_prop and root.is_dir():
            listed = _list_folder(root, args)
            if listed is not None:
                names = [c for c in listed.columns if c != "path"]
                column = choose_target(names, args.target, str(root)) if names else None
                targets = None if column is None else listed[names[column]].to_numpy(float)
                return listed["path"], targets, None if column is None else names[column]
        if has_id_prop:
            df = _load_wanted(root, args, wanted)
            log_skipped(df.attrs.get("errors", []), "entries of the data folder")
            names = [c for c in df.columns if c != "structure"]
            column = choose_target(names, args.target, str(root)) if names else None
            targets = None if column is None else df[names[column]].to_numpy(dtype=float)
            return df["structure"], targets, None if column is None else names[column]
        cifs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
        if not cifs:
            raise CLIError(f"{root} holds neither {args.id_prop} nor .cif files")
        logger.info("no %s in %s: predicting its %d CIF files", args.id_prop, root, len(cifs))
        paths = cifs
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise CLIError(f"{folders[0]!r} is a folder; give one DATA_DIR or CIF files, not both")
    return pd.Series([str(p) for p in paths], index=[p.stem for p in paths],
                     dtype=object), None, None


def _list_folder(root: Path, args: argparse.Namespace) -> Any:
    """The folder's ids, CIF paths and targets, nothing parsed; None when its CIFs are
    in an archive (then it is read whole by load_folder)."""
    from ..datasets import DatasetError, list_cgcnn_folder

    try:
        listed = list_cgcnn_folder(root, id_prop=args.id_prop, missing_target="nan",
                                   on_error="skip" if args.skip_errors else "raise")
    except DatasetError as exc:
        raise CLIError(one_line(exc)) from exc
    except ValueError as exc:
        if "archive" in str(exc):
            return None
        raise CLIError(one_line(exc)) from exc
    log_skipped(listed.attrs.get("errors", []), "entries of the data folder")
    return listed


def _done_rows(output: Path) -> set[str]:
    """Ids of the complete rows of an interrupted run's output; a last line cut short
    is removed from the file."""
    import csv

    if not output.is_file():
        return set()
    with open(output, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.info("--resume: removing the unfinished last line of %s", output)
            handle.truncate(end)
    text = data[:end].decode("utf-8")
    return {row[0] for row in csv.reader(text.splitlines()) if row}


def _check_chunking(args: argparse.Namespace) -> None:
    if args.chunk_size < 1:
        raise CLIError(f"--chunk-size {args.chunk_size}: must be at least 1", status=2)
    # named, not the default: resuming appends to the file, which must be the right one;
    # a shard's default file names the shard, and its rows are checked to be the shard's
    if args.resume and (args.output == "-" or (args.output is None and args.shard is None)):
        raise CLIError("--resume needs --output FILE, the file of the interrupted run "
                       f"(e.g. --output {DEFAULT_OUTPUT})", status=2)


def _check_resumed_shard(done: set[str], shard: tuple[int, int], output: Path) -> None:
    """The rows of the file resumed with --shard are all of that shard."""
    from ..streaming import shard_of

    other = sorted(i for i in done if shard_of(i, shard[1]) != shard[0])
    if other:
        raise CLIError(f"--resume --shard {shard[0]}/{shard[1]}: {output} holds "
                       f"{len(other)} ids of other shards (first: {other[0]}); it is not "
                       "this shard's output: give the right --output or start afresh "
                       "without --resume")


def _connect(address: str | None) -> Any:
    """A dask.distributed Client of ``--dask-scheduler``, or None."""
    if address is None:
        return None
    from .. import _dask

    try:
        client = _dask.connect(address)
    except ImportError as exc:
        raise CLIError(one_line(exc)) from exc
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--dask-scheduler {address}: cannot reach the scheduler "
                       f"({one_line(exc)})") from exc
    logger.info("--dask-scheduler %s: %d workers, %d threads", address,
                len(client.nthreads()), sum(client.nthreads().values()))
    return client


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import reporting
    from ..streaming import predict_iter, predicts_std
    from ..structures import ids_of

    from .. import _cif

    started = time.perf_counter()
    read_before = _cif.reader_counts()
    shard = args.shard
    default = DEFAULT_OUTPUT if shard is None else shard_output(*shard)
    given = default if args.output is None else args.output
    output = None if given == "-" else Path(given).expanduser()
    if output is not None and output.is_dir():
        raise CLIError(f"--output {given!r} is a folder; give a file name")
    _check_chunking(args)
    transformer, est, task = _load_model(args)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise CLIError(f"--batch-size {args.batch_size}: must be at least 1", status=2)
        est.set_params(batch_size=args.batch_size)
    done = _done_rows(output) if args.resume else set()
    if done and shard is not None:
        _check_resumed_shard(done, shard, output)
    if done:
        logger.info("--resume: %d ids already in %s are skipped", len(done), output)
    wanted = None
    if shard is not None:
        from ..streaming import shard_of

        def wanted(ident: Any) -> bool:
            return str(ident) not in done and shard_of(ident, shard[1]) == shard[0]
    X, targets, target_name = _predict_inputs(args, transformer, wanted)
    ids = ids_of(X)
    transformer.set_params(verbose=verbose(args))
    y_all = None if targets is None else np.asarray(targets, float)
    with_std = task == "regression" and predicts_std(est)  # a std column after each value
    shown_parts, y_parts, label_parts, proba_parts, skipped = [], [], [], [], []
    n_rows = 0
    # the file is opened with the first rows: a run that fails before them leaves none
    handle = sys.stdout if output is None else None
    client = _connect(args.dask_scheduler)
    try:
        for chunk in predict_iter(est, X, ids=ids, transformer=transformer,
                                  chunk_size=args.chunk_size, n_jobs=args.n_jobs,
                                  on_error="skip" if args.skip_errors else "raise",
                                  skip_ids=done, return_std=with_std, shard=shard,
                                  client=client):
            skipped += [(pos, ident, reason) for pos, ident, reason in chunk.errors]
            if not chunk.ids:
                continue
            y = np.full(len(chunk.ids), np.nan) if y_all is None else y_all[chunk.positions]
            if task == "classification":
                classes = est.classes_
                labels = classes[chunk.values.argmax(axis=1)]
                shown = chunk.values[:, 1] if len(classes) == 2 else labels
                label_parts.append(labels)
                proba_parts.append(chunk.values)
            else:
                shown = chunk.values
            columns = shown
            if with_std:  # prediction(s) then std(s): id,target,prediction,std
                columns = np.column_stack([np.reshape(shown, (len(chunk.ids), -1)),
                                           np.reshape(chunk.std, (len(chunk.ids), -1))])
            if handle is None:
                handle = open(output, "a" if args.resume else "w", newline="")
            write_result_rows(handle, chunk.ids, y, columns)
            handle.flush()
            shown_parts.append(np.asarray(shown))
            y_parts.append(y)
            n_rows += len(chunk.ids)
            logger.info("predicted %d crystals", n_rows)
    finally:
        if output is not None and handle is not None:
            handle.close()
        if client is not None:
            client.close()
    log_skipped(skipped, "structures without a graph")
    # the CIFs read in this process (with --n-jobs, the workers' are not counted here)
    _cif.log_reader_counts(_cif.counts_since(read_before), "CIFs")
    if n_rows == 0 and not done and shard is not None and not skipped:
        # more shards than inputs: an empty shard is no failure of its array task
        logger.warning("shard %d/%d holds none of the inputs", *shard)
        if output is not None:
            open(output, "a").close()
    elif n_rows == 0 and not done:
        raise CLIError("no structure could be turned into a graph")
    y = np.concatenate(y_parts) if y_parts else np.zeros(0)
    shown = np.concatenate(shown_parts) if shown_parts else np.zeros(0)
    if task == "classification" and label_parts:
        labels, proba = np.concatenate(label_parts), np.concatenate(proba_parts)

    where = "standard output" if output is None else str(output)
    of_shard = "" if shard is None else f" of shard {shard[0]}/{shard[1]}"
    summary = [f"predicted {n_rows} crystals{of_shard} in {time.perf_counter() - started:.1f} s; "
               f"wrote {n_rows} predictions to {where}"
               + (f" after the {len(done)} already there" if done else "")]
    known = np.isfinite(y)
    if known.any():
        label = args.target_label or target_name
        what = f"on the {int(known.sum())} crystals with a {label!r} value"
        if task == "classification":
            m = reporting.classification_metrics(y[known], labels[known], proba[known], classes)
            summary.append(f"accuracy {m['accuracy']:.4f}"
                           + (f", ROC-AUC {m['roc_auc']:.4f}" if m.get("roc_auc") is not None
                              else "") + f" {what}")
        elif np.ndim(shown) == 1:
            m = reporting.regression_metrics(y[known], shown[known])
            summary.append(f"MAE {m['mae']:.4g} {what}")
    stream = sys.stderr if output is None else sys.stdout
    for line in summary:
        print(line, file=stream)
    return 0

