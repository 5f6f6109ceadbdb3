"""Optuna storages from a URL or a path, created safely by many processes at once."""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._defaults import default_cache_dir
from .._optional import require
from .._atomic import file_lock
from ._recovery import heartbeat_arguments

logger = logging.getLogger(__name__)

_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def default_storage(output_dir: str | os.PathLike | None, study_name: str) -> str:
    """The SQLite URL used when no storage is given.

    ``<output_dir>/study.db`` when there is an output folder, else
    ``<skcgcnn cache>/studies/<study_name>.db`` (never the working directory).
    """
    if output_dir is not None:
        path = Path(output_dir).expanduser().resolve() / "study.db"
    else:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
        path = default_cache_dir() / "studies" / f"{safe}.db"
    return f"sqlite:///{path}"


def _storage_kind(spec: Any) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        return "object"
    text = os.fspath(spec)
    if text in (":memory:", "memory"):
        return "memory"
    if text.startswith("journal:"):
        return "journal"
    if "://" in text:
        return "rdb"
    if text.endswith(_JOURNAL_SUFFIXES):
        return "journal"
    if text.endswith(_SQLITE_SUFFIXES):
        return "sqlite-path"
    raise ValueError(
        f"storage {text!r} is not understood: give an SQLAlchemy URL (sqlite:///path.db, "
        "postgresql://user:password@host/db), a journal file (path ending in .log, or "
        "journal:path), an SQLite file (path ending in .db) or ':memory:'")


def _with_postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 takes psycopg 3
    for a bare ``postgresql://``; with only psycopg2 installed, name it in the URL."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("psycopg") is None and \
                    importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def make_storage(spec: Any, *, heartbeat_interval: float | None = None,
                 grace_period: float | None = None, max_retries: int = 2) -> Any:
    """An Optuna storage from a URL, a path or an existing storage object.

    Parameters
    ----------
    spec : str, path or optuna storage
        ``sqlite:///path.db``, ``postgresql://...`` or any SQLAlchemy URL: an
        :class:`optuna.storages.RDBStorage` (SQLite waits up to 60 s for a locked
        database instead of failing; processes creating the same new database at once
        take turns through ``<file>.lock``, and any RDB creation that collides with
        another process's is retried); a path ending in ``.log``/``.journal``/``.jsonl``
        or ``journal:path``: an :class:`optuna.storages.JournalStorage` on a
        :class:`optuna.storages.journal.JournalFileBackend` (many processes, also over
        NFS); a path ending in ``.db``/``.sqlite``: that SQLite file; ``":memory:"``:
        in memory (one process, nothing kept).
    heartbeat_interval, grace_period : float, optional
        For an RDB storage: Optuna's own heartbeat (``RDBStorage(heartbeat_interval=...,
        grace_period=...)``): running trials beat every ``heartbeat_interval`` s, and a
        trial silent for ``grace_period`` s is failed and queued again, at most
        ``max_retries`` times (see :mod:`skcgcnn.tuning._recovery`).  Ignored for other
        storages; by default there is no heartbeat.
    max_retries : int, default=2

    Returns
    -------
    optuna.storages.BaseStorage
    """
    optuna = require("optuna")
    kind = _storage_kind(spec)
    if kind == "object":
        return spec
    text = os.fspath(spec)
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "journal":
        path = Path(text[len("journal:"):] if text.startswith("journal:") else text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # optuna >= 4.0
            from optuna.storages.journal import JournalFileBackend, JournalStorage
        except ImportError:  # optuna 3.x
            from optuna.storages import JournalFileStorage as JournalFileBackend
            from optuna.storages import JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite-path":
        text = f"sqlite:///{Path(text).expanduser().resolve()}"
    text = _with_postgres_driver(text)
    engine_kwargs = None
    if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
        Path(text[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    beat = {} if heartbeat_interval is None else heartbeat_arguments(
        heartbeat_interval, grace_period, max_retries)
    try:
        with _storage_lock(text), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _retry_creation(
                lambda: optuna.storages.RDBStorage(text, engine_kwargs=engine_kwargs, **beat),
                f"storage {text.split('://')[0]}://")
    except ImportError as exc:
        raise ImportError(f"storage {text.split('://')[0]}:// needs a database driver that is "
                          f"not installed ({exc}); for PostgreSQL: pip install "
                          "'psycopg[binary]' or psycopg2-binary") from exc


# Two processes that open a new RDB storage at the same moment both create its tables and
# stamp its schema version (RDBStorage.__init__): the slower one fails with "table studies
# already exists" or "IntegrityError ... alembic_version" (measured: 3 of 10 rounds of two
# processes, 8 of 10 rounds of four, on one new SQLite file).  tune() creates storage
# and study before it starts its own workers, so they only ever open an existing study;
# independent processes are made safe twice over:
# * an SQLite file on this machine: an exclusive file lock beside it (``<db>.lock``) held
#   while the storage is created and the study opened, so they take turns, deterministically;
# * any RDB storage (PostgreSQL, or SQLite where the lock cannot be taken or does not
#   hold, e.g. some network file systems): the creation is retried on the errors of that
#   race, with a growing, jittered pause; the retry finds the tables and version row the
#   other process wrote, and goes on.  A real fault (a bad URL, a read-only disk) still
#   raises, after the last try.
_CREATE_TRIES = 6


def _sqlite_file(url: Any) -> Path | None:
    if isinstance(url, str) and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):]).expanduser()
    return None


@contextlib.contextmanager
def _storage_lock(url: Any) -> Iterator[None]:
    """Hold ``<db>.lock`` for an SQLite URL (nothing for other storages)."""
    db = _sqlite_file(url)
    if db is None:
        yield
        return
    lock = db.with_name(db.name + ".lock")
    try:
        lock.touch()
    except OSError as exc:  # a read-only folder: rely on the retries
        logger.debug("no lock file %s (%s)", lock, exc)
        yield
        return
    with file_lock(lock):
        yield


def _retry_creation(action: Any, what: str, tries: int = _CREATE_TRIES) -> Any:
    """``action()``, again after a short pause when it lost a race with another process
    creating the same storage or study (SQLAlchemy IntegrityError / OperationalError)."""
    import random

    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    attempt = 0
    while True:
        try:
            return action()
        except (IntegrityError, OperationalError, StorageInternalError) as exc:
            attempt += 1
            if attempt >= tries:
                raise
            pause = min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random())
            logger.info("%s: another process was creating it at the same moment (%s); "
                        "trying again in %.2f s", what, type(exc).__name__, pause)
            time.sleep(pause)
