""":func:`tune`: check the inputs, open the study, run its workers, report, refit the best."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._targets import check_finite_targets
from ..structures import as_structures
from ._baselines import DEFAULT_CGCNN, _baseline_values
from ._fidelity import check_trial_rows, rerun_best, subset_splits
from ._finetune import check_estimator_params, check_init_graphs, describe
from ._holdout import fit_default, fixed_split, score_on_test, write_split
from ._progress import (TrialLines, plural, seconds, state_counts, study_start,
                        work_with_progress, write_line)
from ..graph._cache import GraphCache, _site_numbers
from ._results import TuneResult, trials_table, write_results
from ._space import SearchSpace, TrialConfig, _resolve_table, usable_atom_feature_choices
from ._storage import _storage_kind, default_storage
from ._study import _Run, _silenced_optuna
from ._workers import worker_processes

logger = logging.getLogger(__name__)


def _splits(n: int, cv: Any, validation_fraction: float,
            random_state: int | None) -> tuple[list, str]:
    """The study's (train, valid) position arrays and the text that names them.

    The text goes into the study's attributes, so into the default study name (a hash
    of them) and the check that a resumed study ran on the same split: it must stay as
    it was, or existing studies would no longer resume.  ``holdout_split`` writes the
    holdout's text unchanged; an int ``cv`` keeps tuning's own ``KFold(k) seed=s``
    (``resolve_cv`` describes the same folds in other words).
    """
    from ..model_selection import holdout_split, resolve_cv

    if cv is None:
        return holdout_split(n_samples=n, validation_fraction=validation_fraction,
                             random_state=random_state)
    try:
        splits, desc = resolve_cv(cv, n_samples=n, random_state=random_state)
    except ValueError as exc:
        if isinstance(cv, Integral) and not isinstance(cv, bool) and cv < 2:
            # tune has a one-split mode of its own: point to it, not to a fixed pair
            raise ValueError(f"cv={cv}: use at least 2 folds, or cv=None for one "
                             "validation split") from exc
        raise
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        desc = f"KFold({int(cv)}) seed={random_state}"
    return splits, desc


def tune(structures: Any, y: Any, *, space: SearchSpace | None = None,
         n_trials: int | None = 20, timeout: float | None = None, max_epochs: int = 30,
         cv: Any = None, validation_fraction: float = 0.2, split: Mapping | None = None,
         storage: Any = None,
         study_name: str | None = None, pruner: Any = "median", sampler: Any = None,
         random_state: int | None = 0, n_workers: int = 1, output_dir: Any = None,
         graph_cache: Any = None, baselines: Any = None, refit: bool = True,
         refit_epochs: int | None = None, enqueue: Sequence[Mapping] | None = None,
         device: str = "cpu", heartbeat_interval: float = 20.0, grace_period: float = 90.0,
         max_retries: int = 2, n_jobs: int | None = None, on_error: str = "raise",
         target_name: str = "target", estimator_params: Mapping[str, Any] | None = None,
         trial_rows: float | int | None = None, rerun_top: int = 0,
         verbose: int = 1) -> TuneResult:
    """Search CGCNN hyper-parameters with Optuna; refit the best on all the data.

    Every trial trains a :class:`~skcgcnn.estimators.CGCNNRegressor` for ``max_epochs``
    on the training rows and scores the mean absolute error on the validation rows
    after the last epoch (mean over folds with ``cv``); the study minimises it.  The
    validation MAE is reported each epoch for pruning.  With ``split`` the study sees
    the train and val rows of a fixed split only, and the tuned model and the default
    ``CGCNNRegressor()`` are scored once, at the end, on its test rows.

    Parameters
    ----------
    structures : list, array or Series of Structure (or CIF paths / ASE Atoms)
        Read by :func:`skcgcnn.structures.as_structures`: a Series' index gives the ids,
        else ``properties["id"]`` when every structure has one, else the positions.
    y : array-like of shape (n,)
    space : SearchSpace, optional
        What to search (default ``SearchSpace()``).  A ``max_epochs`` in the space wins
        over the argument ``max_epochs``.
    n_trials : int or None, default=20
        Finished trials (complete, pruned, or failed on an error) the *study* should
        have: workers stop when it has them, and a resumed study only runs the rest.
        Pass a larger number to add trials to an existing study.  None: until
        ``timeout``.
    timeout : float, optional
        Seconds after which no new trial is started (per call).
    max_epochs : int, default=30
        Epochs per trial (and per fold).
    cv : int, splitter or list of (train, valid) pairs, optional
        k-fold cross-validation instead of one validation split, resolved by
        :func:`skcgcnn.model_selection.resolve_cv` (an int: shuffled ``KFold`` seeded
        by ``random_state``); pruning steps run over ``fold * max_epochs + epoch``.
    validation_fraction : float, default=0.2
        Share of the rows held out for validation when ``cv`` and ``split`` are None.
    split : mapping, optional
        A fixed train/val/test split, ``{"train": positions, "val": positions, "test":
        positions}`` (positions in ``structures``; rows in none of them are left out, as
        ``skcgcnn train --split`` does).  The trials train on the train rows and are
        scored on the val rows (one holdout, no ``cv``); the test rows take no part in
        the search.  The refit is then on the train rows only, with the best trial's
        seed, and it and the package's default ``CGCNNRegressor()``, fitted for
        ``max_epochs`` on the same train rows, are scored on the same test rows:
        ``result.test`` (and ``test.csv``, ``summary.json`` in ``output_dir``, with
        ``split.csv``).  The ``"cgcnn"`` baseline is that default model's val MAE.
    storage : str, path or optuna storage, optional
        Where the study lives (see :func:`make_storage`).  Default: an SQLite file,
        ``<output_dir>/study.db`` or ``<skcgcnn cache>/studies/<study_name>.db``.
        ``":memory:"`` keeps nothing.
    study_name : str, optional
        An existing study of that name is resumed (it must have been run on the same
        data, split, epochs and search space).  Default: ``skcgcnn-<hash>`` of the data
        and those settings, so running the same call again resumes its study.
    pruner : {"median", "hyperband", "successive-halving", "none"} or optuna pruner
        ``"median"``: ``MedianPruner(n_startup_trials=4, n_warmup_steps=max_epochs // 2)``
        (CGCNN's early validation error says little about its final one, see
        docs/tuning.md).
    sampler : optuna sampler, optional
        Default: ``TPESampler`` seeded from ``random_state``, the worker and the trials
        already in the study (so workers and resumed runs do not repeat each other).
    random_state : int or None, default=0
        Seeds the split, the samplers and each trial's network (seed + trial number).
    n_workers : int, default=1
        Processes that run trials at once on one storage (this one and
        ``n_workers - 1`` started ones, each with ``cpu_count // n_workers`` torch
        threads).  Needs a storage that is not ``":memory:"``.  For more machines, run
        ``tune`` (or ``skcgcnn tune``) on each with the same storage and study name.
    output_dir : str or Path, optional
        Write :func:`write_results`'s tables and plots here (and the default SQLite file).
    graph_cache : str or Path, optional
        Folder for graph files shared between processes and runs.  With
        ``n_workers > 1`` and none given, a temporary folder is used for this call.
    baselines : sequence of str, mapping, str or Path, optional
        Reference MAEs drawn beside the best: names for :func:`evaluate_baselines` on
        the same split(s) (``"cgcnn"``, ``"magpie-rf"``, ``"structure-gb"``,
        ``"dummy"``), a mapping ``{name: mae}``, or a ``skcgcnn benchmark``
        ``results.csv``.  Computed values are kept in the study and not recomputed.
    refit : bool, default=True
        Fit the best configuration on all rows (with ``split``: the train rows, then
        score it on the test rows) and return it as a Pipeline.
    refit_epochs : int, optional
        Epochs of the refit (default ``max_epochs``).
    enqueue : sequence of dict, optional
        Parameter sets to try first (``study.enqueue_trial``; skipped when the study
        already has them).
    device : {"cpu", "cuda", "auto"}, default="cpu"
    heartbeat_interval, grace_period : float, default=20, 90
        Running trials write a heartbeat every ``heartbeat_interval`` s; one silent for
        ``grace_period`` s belongs to a dead worker and is failed and run again (at most
        ``max_retries`` times).
    n_jobs : int, optional
        Processes for the neighbour search.
    on_error : {"raise", "skip"}, default="raise"
        Structures that cannot become graphs: an error, or left out.
    target_name : str, default="target"
        Name of the target for tables and plots.
    estimator_params : dict, optional
        :class:`~skcgcnn.estimators.CGCNNRegressor` parameters fixed for every trial and
        the refit (not the default-estimator baseline), e.g. ``{"init": "model.pt"}`` to
        fine-tune a fitted model (then the space may search ``freeze`` and
        ``init_lr_factor``, and fixes the network and graph fields to the model's:
        :func:`fine_tuning_space`), or ``{"lr_schedule": "cosine"}``.  Not those the
        space sets, nor ``max_epochs``, ``random_state``, ``device``, ``verbose``,
        ``train_split`` or ``callbacks``, which tune sets.  With ``n_workers > 1`` they
        must pickle (a path is the lightest ``init``).
    trial_rows : float or int, optional
        Multi-fidelity: each trial trains on this share (a fraction in (0, 1]) or this
        number of its split's training rows, drawn once by ``random_state``; the
        validation rows stay whole, so trials are compared on the same crystals.
        Default: all of them.  Combine with a small ``max_epochs`` and ``rerun_top``.
    rerun_top : int, default=0
        After the study, train the ``rerun_top`` best complete trials again on all the
        training rows for ``refit_epochs`` (default: each trial's epochs) and score them
        on the same validation rows; the best re-run is the configuration refitted and
        returned (with ``split``, that re-run itself, already fitted on the train rows,
        is the model scored on the test rows).  ``result.reruns`` lists them.  Not with
        ``cv``.
    verbose : int, default=1
        Progress on standard error, as the estimators' epoch table: 1 prints a line when
        the study starts, one per trial that ends (``trial 3 [4/20]: valid MAE 0.1234
        (best), 12.3 s: n_conv=3 lr=0.00123 ...``, ``pruned at epoch 7 (...)`` or
        ``failed (...)``; any worker's), the baselines' scores and a line when the refit
        starts and ends (on a terminal also a tqdm bar); trials print nothing per epoch.
        2: also the refit's epoch table and Optuna's own logs.  0: nothing.

    Returns
    -------
    TuneResult
        ``result.study``, ``result.best_pipeline`` (also ``study, model = tune(...)``).

    Examples
    --------
    >>> from skcgcnn.datasets import load_cgcnn_folder
    >>> df = load_cgcnn_folder("../shared/data/mp-formation-energy-36737/sample-500")  # doctest: +SKIP
    >>> result = tune(df["structure"], df["target"], n_trials=20, max_epochs=30,
    ...               output_dir="results/tune", baselines=["cgcnn", "magpie-rf"])  # doctest: +SKIP
    >>> result.best_pipeline.predict(new_structures)  # doctest: +SKIP
    """
    optuna = require("optuna")
    start = time.perf_counter()
    space = space or SearchSpace()
    fixed = check_estimator_params(estimator_params)
    space.validate(fixed)
    if n_trials is not None and (not isinstance(n_trials, (int, np.integer)) or n_trials < 1):
        raise ValueError(f"n_trials={n_trials!r}: use a positive integer or None")
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials or timeout (or both); otherwise the study never ends")
    if not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
        raise ValueError(f"max_epochs={max_epochs!r}: use a positive integer")
    if not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers={n_workers!r}: use a positive integer")
    check_trial_rows(trial_rows)
    if isinstance(rerun_top, bool) or not isinstance(rerun_top, (int, np.integer)) \
            or rerun_top < 0:
        raise ValueError(f"rerun_top={rerun_top!r}: use 0 (no re-runs) or a positive integer")
    if rerun_top and cv is not None:
        raise ValueError("rerun_top re-runs trials on one validation split; with cv give "
                         "rerun_top=0 (or use split= or validation_fraction=)")
    items, ids = as_structures(structures)
    y_arr = np.asarray(y, dtype=float)
    if y_arr.ndim != 1 or len(y_arr) != len(items):
        raise ValueError(f"y must be 1-D with one value per structure: {len(items)} "
                         f"structures, y of shape {y_arr.shape}")
    check_finite_targets(y_arr, ids)
    if n_workers > 1 and storage is not None and \
            _storage_kind(storage) in ("memory", "object"):
        raise ValueError("n_workers > 1 needs a storage the worker processes can open: give "
                         "a URL or a file path, not ':memory:' or a storage object")
    parts = None
    if split is not None:
        if cv is not None:
            raise ValueError("give split or cv, not both: with a fixed train/val/test split "
                             "the trials are scored on its val rows")
        parts, split_desc = fixed_split(split, len(items))
        splits = [(parts["train"], parts["val"])]
        if output_dir is not None:
            write_split(os.path.join(output_dir, "split.csv"), ids, parts)
    else:
        splits, split_desc = _splits(len(items), cv, validation_fraction, random_state)
    full_split = splits[0]
    splits = subset_splits(splits, trial_rows, random_state)
    tmp_cache = None
    if graph_cache is None and n_workers > 1:
        tmp_cache = tempfile.mkdtemp(prefix="skcgcnn-graphs-")
        graph_cache = tmp_cache
    cache = GraphCache(items, ids=ids, dmin=space.dmin, step=space.step, cache_dir=graph_cache,
                       n_jobs=n_jobs, on_error=on_error)
    numbers = np.asarray([z for s in items for z in _site_numbers(s)], dtype=np.int64)
    tables: dict = {}
    choices = usable_atom_feature_choices(space.atom_feature_choices(), numbers, tables)
    if not choices:
        raise ValueError(f"none of the atom-feature sets {space.atom_feature_choices()} covers "
                         "every element of the data (see the warnings above)")
    if fixed.get("init") is not None:
        check_init_graphs(fixed["init"], space, choices, cache, tables)
    digest = hashlib.sha1(cache.fingerprint.encode() + y_arr.tobytes()).hexdigest()
    study_attrs = {"n_samples": len(items), "data_sha1": digest, "validation": split_desc,
                   "max_epochs": int(max_epochs),
                   "atom_feature_choices": [str(c) for c in choices],
                   "space": space.to_dict()}
    if fixed:  # only then: the attributes (and names) of earlier studies stay as they were
        study_attrs["estimator_params"] = describe(fixed)
    if trial_rows is not None:  # likewise
        study_attrs["trial_rows"] = trial_rows
    epochs = space.trial_epochs(int(max_epochs))
    if study_name is None:
        # the same data and settings give the same name: running again resumes
        key = json.dumps(study_attrs, sort_keys=True).encode()
        study_name = f"skcgcnn-{hashlib.sha1(key).hexdigest()[:10]}"
    if storage is None:
        storage = default_storage(output_dir, study_name)
    logger.info("study %r in %s", study_name,
                storage if isinstance(storage, (str, os.PathLike)) else type(storage).__name__)
    run = _Run(cache=cache, y=y_arr, splits=splits, space=space, choices=choices,
               storage=storage if _storage_kind(storage) != "object" else None,
               study_name=study_name, pruner=pruner, sampler=sampler, n_trials=n_trials,
               max_epochs=int(max_epochs), random_state=random_state, device=device,
               heartbeat_interval=heartbeat_interval, grace_period=grace_period,
               max_retries=max_retries, verbose=verbose,
               study_attrs=study_attrs, estimator_params=fixed, fold_steps=max(epochs))
    run._tables.update(tables)
    storage_obj = run.make_storage() if run.storage is not None else storage
    if _storage_kind(storage) == "object":
        run.storage = storage_obj
    with _silenced_optuna(verbose):
        # created here, before any worker process starts: the workers only load it
        study = run.open_study(0, storage_obj, check=True)
    first_new = len(study.get_trials(deepcopy=False))  # trials from here on are this call's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in enqueue or ():
            study.enqueue_trial(dict(params), skip_if_exists=True)

    lines = TrialLines(n_trials, max(epochs), len(splits), verbose)
    lines.start(study.get_trials(deepcopy=False))
    write_line(study_start(study_name, n_trials, timeout, epochs, split_desc, lines.done),
               verbose)
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    with worker_processes(run, int(n_workers), timeout, verbose):
        study = work_with_progress(run, deadline, verbose, storage_obj, lines)
    lines.update(study.get_trials(deepcopy=False))  # those other workers ended last

    from optuna.trial import TrialState

    _check_new_trials(study, first_new, tmp_cache)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        if tmp_cache:
            shutil.rmtree(tmp_cache, ignore_errors=True)
        raise RuntimeError(
            f"study {study_name!r} has no complete trial"
            + (f"; the first error was: {errors[0]}" if errors else
               " (all were pruned, or time ran out: allow more trials or time)"))
    best = min(complete, key=lambda t: t.value)
    write_line(f"study {study_name!r}: {state_counts(study)}; best valid MAE "
               f"{best.value:.4f} (trial {best.number})", verbose)
    reruns, rerun_fit = None, None
    if rerun_top and refit:
        best, reruns, rerun_fit = rerun_best(
            complete, rerun_top, space=space, fixed=fixed, cache=cache, y=y_arr,
            split=full_split, epochs=refit_epochs, max_epochs=int(max_epochs),
            seed_of=lambda t: _trial_seed(random_state, t), device=device, tables=tables,
            verbose=verbose, refit=_refit)
    best_cfg = space.config(best.params)

    default_model, known = None, {}
    if parts is not None and refit:
        # fitted once: the test comparison's default model and the "cgcnn" baseline
        default_model, known[DEFAULT_CGCNN] = fit_default(
            items, y_arr, parts, cache, max_epochs, random_state, device, n_jobs, verbose)
    base_values = _baseline_values(baselines, study, items, y_arr, splits, max_epochs,
                                   random_state, cache, n_jobs, device, verbose, known)
    files: list = []
    extra = {"validation": split_desc, "max_epochs": int(max_epochs), "n_samples": len(items)}
    if trial_rows is not None:
        extra["trial_rows"] = trial_rows
    if reruns is not None:
        extra["reruns"] = reruns
    if output_dir is not None and parts is None:
        files = write_results(study, output_dir, space=space, baselines=base_values,
                              target_name=target_name,
                              extra={"wall_s_this_call": round(time.perf_counter() - start, 1),
                                     **extra})
    pipeline, test = None, None
    if refit:
        seed = random_state if parts is None else _trial_seed(random_state, best)
        params = {**fixed, **best_cfg.estimator_params}
        params["max_epochs"] = int(refit_epochs or params.get("max_epochs", max_epochs))
        if rerun_fit is not None and parts is not None:
            pipeline, graphs = rerun_fit  # already fitted on the train rows
        else:
            pipeline, graphs = _refit(best_cfg, params, cache, y_arr, seed, device, tables,
                                      best.number, verbose,
                                      None if parts is None else parts["train"])
        if parts is not None:
            test = score_on_test(pipeline.named_steps["cgcnn"], graphs, default_model, items,
                                 y_arr, parts["test"], cache, n_jobs, best.number, verbose)
    if output_dir is not None and parts is not None:
        files = write_results(study, output_dir, space=space, baselines=base_values,
                              target_name=target_name, test=test,
                              extra={"wall_s_this_call": round(time.perf_counter() - start, 1),
                                     **extra})
        files.append(Path(output_dir) / "split.csv")
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    return TuneResult(study=study, best_pipeline=pipeline, best_params=dict(best.params),
                      best_value=float(best.value), best_config=best_cfg,
                      baselines=base_values, trials=trials_table(study, space),
                      wall_s=time.perf_counter() - start, files=files,
                      graph_builds=cache.builds, test=test, reruns=reruns)


def _trial_seed(random_state: int | None, trial: Any) -> int | None:
    """The seed a trial's network had (a retried trial keeps its first run's)."""
    root = int(trial.user_attrs.get("retry_of", trial.number))
    return None if random_state is None else int(random_state) + root


def _check_new_trials(study: Any, first_new: int, tmp_cache: str | None) -> None:
    """Refuse a call whose every trial failed on an error; warn when some did.

    Failed trials count toward ``n_trials`` (so a trial that always fails cannot loop
    forever), and a resumed study keeps its earlier complete trials: without this check
    a call whose own trials all failed (on a broken disk, bad data) would report the
    old best as its result and exit 0.
    """
    from optuna.trial import TrialState

    ran = [t for t in study.get_trials(deepcopy=False) if t.number >= first_new
           and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
           and "skipped" not in t.user_attrs]
    failed = [t for t in ran if t.state == TrialState.FAIL and "error" in t.user_attrs]
    if not failed:
        return
    first = f"trial {failed[0].number}: {failed[0].user_attrs['error']}"
    if len(failed) < len(ran):
        logger.warning("%d of the %d trials run in study %r failed; the first was %s",
                       len(failed), len(ran), study.study_name, first)
        return
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    raise RuntimeError(
        f"all {len(ran)} trials run in study {study.study_name!r} failed; the first was "
        f"{first}. Failed trials count toward n_trials: fix the cause, then run again with "
        "a larger n_trials (or another study name)")




def _refit(cfg: TrialConfig, params: dict, cache: GraphCache, y: np.ndarray,
           random_state: int | None, device: str, tables: dict, number: int,
           verbose: int, rows: np.ndarray | None = None, label: str = "refit"
           ) -> tuple[Any, tuple]:
    """The best configuration (estimator ``params``) fitted on every row (or the
    positions ``rows``), as a Pipeline, from the cached graphs; and those graphs,
    ``(graphs, kept)``.

    A line on stderr when it starts and when it ends; its epoch table with ``verbose >= 2``.
    """
    from ..estimators import make_cgcnn_pipeline

    start = time.perf_counter()
    epochs = params["max_epochs"]
    pipe = make_cgcnn_pipeline(graph_params=cfg.graph_params, **{
        **params, "random_state": random_state, "device": device,
        "verbose": int(verbose >= 2)})
    graphs, kept = cache.get(cfg.radius, cfg.max_num_nbr)
    graphs = graphs.with_atom_features(_resolve_table(cfg.atom_features, tables))
    X, target, where = graphs, y[kept], ""
    if rows is not None:
        fit_rows = np.flatnonzero(np.isin(kept, rows))
        X, target, where = graphs[fit_rows], target[fit_rows], "train "
    write_line(f"{label}: trial {number}'s configuration on {len(X)} {where}structures, "
               f"{plural(int(epochs), 'epoch')} ...", verbose)
    pipe.named_steps["graph"].fit()  # learns nothing from the data
    pipe.named_steps["cgcnn"].fit(X, target)
    write_line(f"{label}: done in {seconds(time.perf_counter() - start)}", verbose)
    return pipe, (graphs, kept)
