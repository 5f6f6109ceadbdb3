"""One process's part in a study: open it, run trials within the budget, evaluate a trial."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._defaults import resolve_device
from .._optional import require
from ._callbacks import PruningCallback, ValidationMAE
from ..graph import GraphCache
from ._space import SearchSpace, _resolve_table
from ._recovery import (_Heartbeat, fail_beatless_trials, heartbeat_keeper,
                        recover_stale_trials)
from ._storage import _retry_creation, _storage_lock, make_storage

logger = logging.getLogger(__name__)

_STUDY_ATTR = "skcgcnn"


class _BudgetReached(Exception):
    """The study already has its trials; this one was not run."""


class _QuietSkips(logging.Filter):
    """Drops Optuna's failure messages (and traceback) of trials skipped by the budget."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed") for n in self.numbers)


# The trial budget is ours, not optuna.study.MaxTrialsCallback: that callback stops a
# worker after one of its trials ends, once the study has n_trials in the given states,
# so workers whose trials were in flight all finish them and overshoot (up to
# n_workers - 1 extra trials); it does not count running trials, and by state alone it
# cannot tell a trial failed on an error from a skipped or a dead worker's one.  Ours
# counts finished trials (failed-on-error included, so a trial that always fails cannot
# loop forever) plus the running ones ahead, before each trial draws its parameters, so
# many workers (or machines) end at exactly n_trials.
def _finished_count(trials: Sequence[Any]) -> int:
    """Trials that count against ``n_trials``: complete, pruned, failed on an error."""
    from optuna.trial import TrialState

    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def _make_pruner(spec: Any, max_steps: int, max_epochs: int | None = None) -> Any:
    optuna = require("optuna")
    if spec is None or spec == "none":
        return optuna.pruners.NopPruner()
    if isinstance(spec, str):
        if spec == "median":
            # CGCNN's validation error is erratic in the first epochs (Adam, BatchNorm):
            # on 2,000 MP crystals, a warm-up of a sixth of the epochs pruned the trial
            # that ended best; half of them kept it (docs/tuning.md)
            epochs = max_steps if max_epochs is None else max_epochs
            return optuna.pruners.MedianPruner(n_startup_trials=4,
                                               n_warmup_steps=max(1, epochs // 2))
        if spec == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=max(1, max_steps // 10),
                                                  max_resource=max_steps)
        if spec == "successive-halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_steps // 10))
        raise ValueError(f"pruner={spec!r}: use 'median', 'hyperband', 'successive-halving', "
                         "'none' or an optuna pruner")
    return spec


def _silenced_optuna(verbose: int):
    optuna = require("optuna")

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        old = optuna.logging.get_verbosity()
        if verbose < 2:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(old)
    return ctx()


@dataclass
class _Run:
    """Everything a worker process needs to take part in the study (picklable)."""

    cache: GraphCache
    y: np.ndarray
    splits: list
    space: SearchSpace
    choices: list
    storage: Any
    study_name: str
    pruner: Any
    sampler: Any
    n_trials: int | None
    max_epochs: int
    random_state: int | None
    device: str
    heartbeat_interval: float
    grace_period: float
    max_retries: int
    verbose: int
    study_attrs: dict = field(default_factory=dict)
    #: Fixed CGCNNRegressor parameters of every trial (``tune``'s ``estimator_params``).
    estimator_params: dict = field(default_factory=dict)
    #: Steps per fold in the trials' reports: the most epochs a trial can have (the
    #: space's largest ``max_epochs``); None: ``max_epochs``.
    fold_steps: int | None = None

    @property
    def steps(self) -> int:
        """Steps per fold (the pruner's unit, and each fold's offset)."""
        return int(self.fold_steps or self.max_epochs)

    def __post_init__(self) -> None:
        self._tables: dict = {}
        self._quiet = _QuietSkips()
        self._fatal: Exception | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tables"] = {}
        state["_quiet"] = _QuietSkips()
        return state

    # -- study ---------------------------------------------------------------------
    def make_storage(self) -> Any:
        """The run's storage; an RDB one keeps the heartbeats itself (see ``_recovery``)."""
        return make_storage(self.storage, heartbeat_interval=self.heartbeat_interval,
                            grace_period=self.grace_period, max_retries=self.max_retries)

    def open_study(self, worker: int, storage: Any = None, check: bool = False) -> Any:
        """Create or load the study; with ``check``, also :meth:`check_study` it."""
        optuna = require("optuna")
        storage = self.make_storage() if storage is None else storage
        sampler = self.sampler
        if sampler is None:
            seed = None
            if self.random_state is not None:
                # differs between workers, and from a previous run of the same study
                existing = 0
                with contextlib.suppress(KeyError):
                    existing = len(optuna.load_study(study_name=self.study_name,
                                                     storage=storage).trials)
                seed = (int(self.random_state) + 7919 * worker + 104729 * existing) % 2 ** 31
            n_start = 10 if self.n_trials is None else min(10, max(3, self.n_trials // 3))
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_start)
        pruner = _make_pruner(self.pruner, self.steps * len(self.splits), self.steps)

        def create() -> Any:
            return optuna.create_study(storage=storage, study_name=self.study_name,
                                       direction="minimize", load_if_exists=True,
                                       sampler=sampler, pruner=pruner)

        # another process may be creating the same study (see _retry_creation)
        with _storage_lock(getattr(storage, "url", None)):
            study = _retry_creation(create, f"study {self.study_name!r}")
            if check:
                self.check_study(study)
        return study

    def check_study(self, study: Any) -> None:
        """Store the run's settings in a new study; refuse to mix with another one's."""
        stored = study.user_attrs.get(_STUDY_ATTR)
        if stored is None:
            study.set_user_attr(_STUDY_ATTR, self.study_attrs)
            # read back: a process that set them at the same moment may have won
            stored = study.user_attrs.get(_STUDY_ATTR, self.study_attrs)
        diff = {k: (stored.get(k), v) for k, v in self.study_attrs.items()
                if stored.get(k) != v}
        if diff:
            lines = "; ".join(f"{k}: study has {a!r}, this run {b!r}" for k, (a, b) in
                              diff.items())
            raise ValueError(
                f"study {self.study_name!r} was run on other data or settings ({lines}); "
                "its trials cannot be compared with this run's: use another study name, or "
                "the same data and settings to resume it")

    # -- one trial -----------------------------------------------------------------
    def _check_budget(self, trial: Any) -> None:
        from optuna.trial import TrialState

        trials = trial.study.get_trials(deepcopy=False)
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING
                    and t.number < trial.number)
        if _finished_count(trials) + ahead >= self.n_trials:
            self._quiet.numbers.add(trial.number)
            trial.set_user_attr("skipped", "the study had its n_trials when this trial began")
            raise _BudgetReached(f"the study already has {self.n_trials} trials; trial "
                                 f"{trial.number} was not run")

    def objective(self, trial: Any) -> float:
        optuna = require("optuna")
        if self.n_trials is not None:
            self._check_budget(trial)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        # optuna's own heartbeat (RDB storages) beats in study.optimize
        beat = (_Heartbeat(trial, self.heartbeat_interval)
                if getattr(self, "_beats", "skcgcnn") == "skcgcnn"
                else contextlib.nullcontext())
        with beat:
            try:
                return self._evaluate(trial)
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                from ..graph import StructureError

                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
                if isinstance(exc, StructureError):
                    self._fatal = exc  # bad data, not a bad trial: stop the study
                raise

    def _evaluate(self, trial: Any) -> float:
        from skorch.helper import predefined_split

        from ..estimators import CGCNNRegressor, GraphDataset

        start = time.perf_counter()
        cfg = self.space.suggest(trial, self.choices)
        graphs, kept = self.cache.get(cfg.radius, cfg.max_num_nbr)
        table = _resolve_table(cfg.atom_features, self._tables)
        graphs = graphs.with_atom_features(table)
        trial.set_user_attr("atom_features", table.name)
        y = self.y[kept]
        row_of = np.full(len(self.y), -1, dtype=np.int64)
        row_of[kept] = np.arange(len(kept))
        root = int(trial.user_attrs.get("retry_of", trial.number))
        seed = None if self.random_state is None else int(self.random_state) + root
        # a concrete device: ValidationMAE's cached predictions are moved to net.device
        device = resolve_device(self.device)
        maes, bests = [], []
        for k, (train, valid) in enumerate(self.splits):
            r_train = row_of[train][row_of[train] >= 0]
            r_valid = row_of[valid][row_of[valid] >= 0]
            est = CGCNNRegressor(**{
                "max_epochs": self.max_epochs, **self.estimator_params,
                **cfg.estimator_params, "random_state": seed, "device": device,
                "verbose": 0,
                "train_split": predefined_split(GraphDataset(graphs[r_valid], y[r_valid])),
                "callbacks": [("valid_mae", ValidationMAE()),
                              ("pruning", PruningCallback(
                                  trial, "valid_mae", k * self.steps,
                                  prune_last_epoch=k < len(self.splits) - 1))]})
            est.fit(graphs[r_train], y[r_train])
            curve = [float(v) for v in est.history[:, "valid_mae"]]
            maes.append(curve[-1])
            bests.append(min(curve))
        value = float(np.mean(maes))
        trial.set_user_attr("valid_mae_folds", maes)
        trial.set_user_attr("valid_mae_best_epoch", float(np.mean(bests)))
        trial.set_user_attr("fit_s", round(time.perf_counter() - start, 2))
        if not math.isfinite(value):
            raise require("optuna").TrialPruned(f"valid_mae is {value}: diverged")
        return value

    # -- the worker loop -----------------------------------------------------------
    def work(self, worker: int, deadline: float | None = None, progress: Any = None,
             storage: Any = None, ready: Path | None = None) -> Any:
        """Run trials until the study has ``n_trials`` finished ones or time is up.

        ``ready``: a file created once the study is open (worker processes tell the
        starting process that they are about to run trials).
        """
        optuna = require("optuna")
        storage = self.make_storage() if storage is None else storage
        beats = self._beats = heartbeat_keeper(storage)
        poll = max(0.1, min(float(self.heartbeat_interval), 1.0))
        catch = (Exception,)
        self._quiet = _QuietSkips()
        optuna_log = logging.getLogger("optuna.study._optimize")
        optuna_log.addFilter(self._quiet)
        with _silenced_optuna(self.verbose), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = self.open_study(worker, storage)
            if ready is not None:
                Path(ready).touch()
            try:
                self._loop(study, worker, deadline, progress, beats, poll, catch)
            finally:
                optuna_log.removeFilter(self._quiet)
        return study

    def _loop(self, study: Any, worker: int, deadline: float | None, progress: Any,
              beats: str | None, poll: float, catch: tuple) -> None:
        optuna = require("optuna")
        from optuna.trial import TrialState

        while True:
            # also while waiting below for the last trials in flight elsewhere, where
            # study.optimize (which fails stale trials of RDB storages) is not called
            if beats == "optuna":
                optuna.storages.fail_stale_trials(study)
                fail_beatless_trials(study, self.grace_period)
            elif beats == "skcgcnn":
                recover_stale_trials(study, self.grace_period, self.max_retries)
            trials = study.get_trials(deepcopy=False)
            done = _finished_count(trials)
            if progress is not None:
                progress(study, trials, done)
            if self.n_trials is not None and done >= self.n_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if self.n_trials is not None and done + running >= self.n_trials:
                time.sleep(poll)  # the last trials are in flight elsewhere
                continue
            self._fatal = None
            study.optimize(self.objective, n_trials=1, catch=catch)
            if self._fatal is not None:
                raise self._fatal

