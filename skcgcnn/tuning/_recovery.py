"""Trials of dead workers: heartbeats, and failing and queueing again the silent ones.

Every running trial shows it is alive; a trial silent for ``grace_period`` seconds
belongs to a dead worker (killed, out of memory, a lost machine) and is marked FAIL and
queued again with the parameters it had drawn, at most ``max_retries`` times.

* RDB storages (SQLite, PostgreSQL): Optuna's own mechanism,
  ``RDBStorage(heartbeat_interval=..., grace_period=...,
  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retries))``;
  ``study.optimize`` beats and fails stale trials before each trial, and the worker loop
  calls ``optuna.storages.fail_stale_trials`` while it waits for trials in flight
  elsewhere.  Optuna fails only trials with a stale heartbeat *row*; a worker killed
  between starting a trial and its first beat leaves a running trial with none, which
  :func:`fail_beatless_trials` fails once it is ``grace_period`` old.
  :class:`_RequeueStaleTrial` adds the user attributes ``retry_of`` and
  ``retry_count`` (a retry trains with the first trial's seed; the tables show them).
* Every other persistent storage: ours (:class:`_Heartbeat`,
  :func:`recover_stale_trials`), because Optuna's journal storage has no heartbeat
  (optuna 5.0: only RDBStorage implements ``BaseHeartbeat``).  It writes
  ``time.time()`` to the trial's user attribute :data:`HEARTBEAT_ATTR`.
* In memory: nothing (one process; no other worker can die).
"""
from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
import warnings
from datetime import datetime
from typing import Any

from .._optional import require

logger = logging.getLogger(__name__)

#: Trial user attribute that holds the time (``time.time()``) of a worker's last sign of life.
HEARTBEAT_ATTR = "heartbeat"


def heartbeat_arguments(interval: float, grace_period: float | None,
                        max_retries: int) -> dict[str, Any]:
    """Keyword arguments of :class:`optuna.storages.RDBStorage` for its heartbeat."""
    optuna = require("optuna")
    storages = optuna.storages
    # optuna >= 4.9 names the callback heartbeat_stale_trial_callback (failed_trial_callback
    # before, deprecated since)
    name = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
            inspect.signature(storages.RDBStorage).parameters else "failed_trial_callback")
    return {"heartbeat_interval": interval, "grace_period": grace_period,
            name: _RequeueStaleTrial(max_retries)}


class _RequeueStaleTrial:
    """Optuna's ``RetryHeartbeatStaleTrialCallback``, plus our user attributes.

    ``retry_of`` (the first trial's number: a retry trains with its seed) and
    ``retry_count``, as :func:`recover_stale_trials` writes them, and a warning.
    """

    def __init__(self, max_retries: int):
        self.max_retries = int(max_retries)

    def __call__(self, study: Any, trial: Any) -> None:
        storages = require("optuna").storages
        retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or \
            storages.RetryFailedTrialCallback  # optuna < 4.9
        count = int(trial.user_attrs.get("retry_count", 0)) + 1
        if count > self.max_retries:
            logger.warning("trial %d: its worker stopped answering; it was tried %d times, "
                           "not again", trial.number, count)
            return
        # a deep copy (optuna.storages.fail_stale_trials): ours to change
        trial.user_attrs = {**trial.user_attrs, "retry_count": count,
                            "retry_of": trial.user_attrs.get("retry_of", trial.number)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", require("optuna").exceptions.ExperimentalWarning)
            retry(max_retry=self.max_retries)(study, trial)
        logger.warning("trial %d: its worker stopped answering; marked failed and queued "
                       "again", trial.number)


def heartbeat_keeper(storage: Any) -> str | None:
    """Who keeps the heartbeats of ``storage``'s running trials.

    ``"optuna"`` (an RDBStorage made with a heartbeat), ``"skcgcnn"`` (any other
    persistent storage: :class:`_Heartbeat` and :func:`recover_stale_trials`) or None
    (in memory).
    """
    optuna = require("optuna")
    if isinstance(storage, optuna.storages.InMemoryStorage):
        return None
    get = getattr(storage, "get_heartbeat_interval", None)
    return "optuna" if get is not None and get() is not None else "skcgcnn"


class _Heartbeat:
    """Writes ``time.time()`` to a running trial's user attribute every ``interval`` s."""

    def __init__(self, trial: Any, interval: float):
        self.trial = trial
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while True:
            try:
                self.trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            except Exception:  # the trial finished under us, or the storage hiccuped
                logger.debug("heartbeat of trial %d not written", self.trial.number,
                             exc_info=True)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"skcgcnn-heartbeat-{self.trial.number}")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _last_sign_of_life(trial: Any) -> float | None:
    beat = trial.user_attrs.get(HEARTBEAT_ATTR)
    if beat is not None:
        return float(beat)
    if trial.datetime_start is not None:
        return trial.datetime_start.timestamp()
    return None


def recover_stale_trials(study: Any, grace_period: float, max_retries: int = 2) -> list[int]:
    """Fail the running trials of dead workers and queue them again.

    A running trial whose heartbeat (:data:`HEARTBEAT_ATTR`, written by :func:`tune`'s
    workers) is older than ``grace_period`` seconds is marked FAIL and, unless it was
    already retried ``max_retries`` times, queued again with the same parameters (user
    attributes ``retry_of``: the first trial's number, ``retry_count``).  Several
    workers may call this at once: a trial is failed and queued by one of them only.

    Returns
    -------
    list of int
        Numbers of the trials this call failed.
    """
    require("optuna")
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = _last_sign_of_life(trial)
        if last is None or now - last < grace_period:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=False)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # another worker got there first, or the trial just finished
        failed.append(trial.number)
        root = trial.user_attrs.get("retry_of", trial.number)
        count = int(trial.user_attrs.get("retry_count", 0)) + 1
        if count > max_retries:
            logger.warning("trial %d: its worker stopped answering %.0f s ago; it was tried "
                           "%d times, not again", trial.number, now - last, count)
            continue
        study.enqueue_trial(dict(trial.params),
                            user_attrs={"retry_of": root, "retry_count": count})
        logger.warning("trial %d: its worker stopped answering %.0f s ago; marked failed and "
                       "queued again", trial.number, now - last)
    return failed


def fail_beatless_trials(study: Any, grace_period: float) -> list[int]:
    """Fail the running trials of an RDB storage that never beat, as Optuna fails stale ones.

    ``optuna.storages.fail_stale_trials`` looks only at trials with a heartbeat row (optuna
    5.0, ``RDBStorage._get_stale_trial_ids`` skips the others), so a worker killed
    between creating a trial and its first beat would leave it RUNNING for ever, and the
    other workers would wait for it once the budget is reached.  A running trial started
    more than ``grace_period`` seconds ago without a row in Optuna's ``trial_heartbeats``
    table is marked FAIL here and handed to the storage's stale-trial callback (ours
    queues it again), as Optuna does with a stale one.  The table is read with one SQL
    query on the storage's engine: Optuna has no public reader of heartbeats.

    Returns
    -------
    list of int
        Numbers of the trials this call failed.
    """
    require("optuna")
    import sqlalchemy
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    # datetime_start is written with the worker's local clock (datetime.now())
    old = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None
           and (datetime.now() - t.datetime_start).total_seconds() >= grace_period]
    if not old:
        return []
    ids = {t._trial_id: t.number for t in old}
    query = sqlalchemy.text("SELECT DISTINCT trial_id FROM trial_heartbeats "
                            "WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True))
    rdb = getattr(storage, "_backend", storage)  # under optuna's _CachedStorage
    with rdb.engine.connect() as connection:
        beaten = {row[0] for row in connection.execute(query, {"ids": list(ids)})}
    callback = storage.get_heartbeat_stale_trial_callback()
    failed = []
    for trial_id in sorted(set(ids) - beaten):
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker got there first, or it just finished
        failed.append(ids[trial_id])
        logger.warning("trial %d: its worker stopped before its first heartbeat; marked "
                       "failed", ids[trial_id])
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed
