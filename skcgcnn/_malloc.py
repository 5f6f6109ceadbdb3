"""Keep freed memory for reuse in glibc's malloc while training on CPU.

A CGCNN batch makes many tensors of tens of MB (one row per edge).  glibc serves
allocations above its mmap threshold (at most 32 MB) with fresh ``mmap`` calls and
returns them with ``munmap``, so every batch pays page faults on all of that memory:
measured here, element-wise ops on such tensors ran 3-4 times slower than on reused
memory.  ``M_MMAP_MAX = 0`` serves them from the heap instead, and a high
``M_TRIM_THRESHOLD`` keeps the heap from being handed back between batches.

This changes the process's allocator settings (not results), so it is opt-in:
:func:`skcgcnn.set_cpu_performance_defaults` applies it (the command line calls that),
once, on Linux with glibc; set the environment variable ``SKCGCNN_NO_MALLOPT=1`` to
leave malloc alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Apply the settings above once; True if they are in force."""
    global _done
    if _done:
        return True
    if os.environ.get("SKCGCNN_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    if ok:
        logger.debug("malloc: large blocks now come from the heap and are kept for reuse")
    _done = ok
    return ok
