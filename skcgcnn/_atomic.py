"""Files written whole or not at all: a temporary file beside the target, then ``os.replace``;
and :func:`file_lock`, one process at a time in a block.

A reader, or a process killed while writing, never sees half a file under the real
name; on any failure the temporary file is removed and the previous file (if any) is
left as it was.  ``os.replace`` is atomic on POSIX and on Windows within one folder,
which is why the temporary file lives in the target's folder.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "file_lock"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, private: bool = False) -> Iterator[str]:
    """The name of a temporary file to write ``path``'s content to; moved onto ``path``
    when the block ends without an error, removed when it raises.

    Parameters
    ----------
    path : str or path-like
        The file to write; its folder must exist.
    private : bool, default=False
        Create the temporary file with ``tempfile.mkstemp`` (readable by its owner
        only, as the file that replaces ``path``); else it is created by the writer
        with the usual permissions.
    """
    path = Path(path)
    if private:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=".tmp")
        os.close(handle)
    else:
        tmp = os.fspath(path.with_name(f".{path.name}.{os.getpid()}."
                                       f"{uuid.uuid4().hex[:8]}.tmp"))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False,
                 private: bool = False, opener: Callable[..., IO] = open,
                 **kwargs: Any) -> Iterator[IO]:
    """``opener(tmp, mode, **kwargs)`` on a temporary file of :func:`atomic_path`: the
    file object to write; ``path`` gets the whole content when the block ends, or is
    left as it was.  ``fsync`` flushes the data to the disk before the rename (a crash
    of the machine then cannot leave an empty file under the real name)."""
    with atomic_path(path, private=private) as tmp:
        with opener(tmp, mode, **kwargs) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock file ``path`` (made if missing) while the block runs: processes that
    ask for the same path wait their turn.  The `filelock <https://py-filelock.readthedocs.io>`_
    package's ``FileLock`` (a requirement of torch's, so always installed): ``flock`` on
    POSIX, ``msvcrt.locking`` on Windows."""
    from filelock import FileLock

    with FileLock(os.fspath(path)):
        yield
