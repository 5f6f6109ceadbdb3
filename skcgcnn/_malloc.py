"""Keep freed memory for reuse in glibc's malloc while training on CPU.

A CGCNN batch makes many tensors of tens of MB (one row per edge).  glibc serves
allocations above its mmap threshold (at most 32 MB) with fresh ``mmap`` calls and
returns them with ``munmap``, so every batch pays page faults on all of that memory:
measured here, element-wise ops on such tensors ran 3-4 times slower than on reused
memory.  ``M_MMAP_MAX = 0`` serves them from the heap instead, and a high
``M_TRIM_THRESHOLD`` keeps the heap from being handed back between batches.

The estimators apply this for the duration of ``fit`` and ``predict``
(:func:`keep_freed_memory_for_a_while`, through :mod:`skcgcnn._cpu`) and set glibc's
defaults back afterwards, trimming the heap; :func:`skcgcnn.set_cpu_performance_defaults`
applies it to the whole process (the command line calls that), once, on Linux with
glibc.  Set the environment variable ``SKCGCNN_NO_MALLOPT=1`` to leave malloc alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: glibc's defaults (malloc/malloc.c: DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX)
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_done = False
_scoped = 0


@functools.lru_cache(maxsize=None)
def _libc_functions():
    """glibc's ``mallopt`` and ``malloc_trim``, or None (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None


def _libc():
    """:func:`_libc_functions`, or None on other systems than Linux or with
    ``SKCGCNN_NO_MALLOPT`` set."""
    if os.environ.get("SKCGCNN_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return None
    return _libc_functions()


def keep_freed_memory() -> bool:
    """Apply the settings above once; True if they are in force."""
    global _done
    if _done:
        return True
    functions = _libc()
    if functions is None:
        return False
    mallopt = functions[0]
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    if ok:
        logger.debug("malloc: large blocks now come from the heap and are kept for reuse")
    _done = ok
    return ok


class keep_freed_memory_for_a_while:
    """The settings above for a ``with`` block (nested blocks share the outermost one);
    on leaving it, glibc's default ``M_MMAP_MAX`` and ``M_TRIM_THRESHOLD`` are set back
    and ``malloc_trim(0)`` hands the kept memory back to the system.  Nothing changes
    where :func:`keep_freed_memory` applied them to the whole process."""

    def __enter__(self) -> "keep_freed_memory_for_a_while":
        global _scoped
        _scoped += 1
        self.applied = False
        functions = _libc() if _scoped == 1 and not _done else None
        if functions is not None:
            mallopt = functions[0]
            self.applied = mallopt(_M_MMAP_MAX, 0) == 1 \
                and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
        return self

    def __exit__(self, *exc) -> None:
        global _scoped
        _scoped -= 1
        if self.applied and not _done:  # not if the whole process asked for it since
            mallopt, malloc_trim = _libc_functions()
            mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            malloc_trim(0)
