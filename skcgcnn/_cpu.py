"""CPU settings for the duration of a fit or a prediction: threads and malloc.

Why a plain script was slow
---------------------------
torch runs its CPU operations on a team of OpenMP threads, as many as the machine has
cores.  Every operation on the team ends at a barrier where the threads wait for the
slowest one.  When another process occupies a core, one thread of the team is taken
off its core by the scheduler, and every barrier then waits for it to be scheduled
again: on this 2-core machine, with two busy processes beside it, an epoch on 120 MP
crystals took 4.7 s instead of 0.13 s (the CGCNN step is thousands of small
operations, each ending at a barrier).  ``OMP_WAIT_POLICY=PASSIVE`` (what
:func:`skcgcnn.set_cpu_performance_defaults` sets) softens this, as waiting threads
sleep and hand their core over, but it is read once, when torch is imported, and costs
15-20 % on a quiet machine, where spinning threads answer faster.

What ``fit`` and ``predict`` do instead
---------------------------------------
:class:`cpu_settings` is entered by the estimators' ``fit`` and prediction methods:

* **Threads: never more than the cores that are free.**  When the call starts, the
  processes that are running now are counted (``/proc/loadavg``), and at the start of
  every epoch the CPU time that other processes took during the last epoch is read
  from ``/proc/stat`` (the machine's busy time less this process's own); the team gets
  ``torch.get_num_threads()`` threads (the user's setting is the ceiling) less the
  cores the others occupy, and at least one.  With one thread there are no barriers.
  When the call ends the thread count is set back.
* **malloc keeps freed memory** (glibc only): a batch makes many tensors of tens of MB;
  glibc hands allocations above its mmap threshold back to the kernel when they are
  freed, so each batch page-faults all of that memory anew (element-wise operations
  3-4 times slower).  For the call, large blocks come from the heap and stay there
  (``mallopt``); afterwards glibc's defaults are set back and the heap is trimmed.
  Where :func:`skcgcnn.set_cpu_performance_defaults` already applied this to the
  process, it stays.

malloc's settings change no result.  The thread count changes the order in which
torch sums float32 values, so two fits with the same ``random_state``, one beside a
busy process and one on a quiet machine, can differ in the last bits (about 1e-7
relative; measured on the suite's 8-crystal fit with 1 and with 2 threads).  For
bit-identical reruns keep the count fixed: with
``torch.use_deterministic_algorithms(True)`` (torch's own switch for reproducible
results) or ``SKCGCNN_CPU_SETTINGS=0`` the calls leave it as it is.
``SKCGCNN_CPU_SETTINGS=0`` leaves malloc alone as well (``SKCGCNN_NO_MALLOPT=1`` only
malloc).  Elsewhere than Linux the thread count stays as it is.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

#: a core counts as taken when other processes used at least this share of it: a
#: thread of the team then loses its core often enough to stall the barriers
TAKEN = 0.4
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_lock = threading.Lock()
_depth = 0
_active: "cpu_settings | None" = None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


def _own_seconds() -> float:
    import resource  # Unix only; called only where /proc/stat was read

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _own_running() -> int:
    """Threads of this process that are running or runnable now (``/proc/self/task``)."""
    running = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        running += stat[stat.rindex(b")") + 2:][:1] == b"R"
    return running


def _running_elsewhere() -> int | None:
    """Threads of other processes running or runnable now: the fourth field of
    ``/proc/loadavg`` less this process's own (its OpenMP threads may still spin after
    the last operation), the least of three looks 1 ms apart; None without ``/proc``."""
    seen = []
    for _ in range(3):
        try:
            with open("/proc/loadavg", "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
            seen.append(running - _own_running())
        except (OSError, IndexError, ValueError):
            return None
        time.sleep(0.001)
    return max(min(seen), 0)


def threads_for(others: float, ceiling: int, cores: int | None = None) -> int:
    """The thread count for a team when ``others`` cores' worth of CPU is used by other
    processes: ``ceiling`` less the cores they take (a core counts as taken from
    :data:`TAKEN` of it on), at least 1."""
    cores = _usable_cores() if cores is None else cores
    taken = int(max(others, 0.0) + (1.0 - TAKEN))
    return max(1, min(int(ceiling), cores - taken))


def _wanted() -> bool:
    return os.environ.get("SKCGCNN_CPU_SETTINGS", "1").strip().lower() not in (
        "0", "false", "no", "off")


class cpu_settings:
    """The settings above for one call (a context manager; nested calls share the
    outermost one).

    Parameters
    ----------
    device : str or torch.device, default="cpu"
        Only a CPU device changes anything.
    """

    def __init__(self, device: Any = "cpu") -> None:
        self.device = str(device)

    def __enter__(self) -> "cpu_settings":
        global _depth, _active
        with _lock:
            _depth += 1
            if _depth > 1 or not self.device.startswith("cpu") or not _wanted():
                self._owner = False
                return self
            self._owner = True
            _active = self
        import torch

        self._torch = torch
        self.threads_before = torch.get_num_threads()
        self.cores = _usable_cores()
        self.threads = self.threads_before
        self._mark = None
        if (self.threads_before > 1 and sys.platform.startswith("linux")
                and not torch.are_deterministic_algorithms_enabled()):
            others = _running_elsewhere()
            if others is not None:
                self._set_threads(threads_for(others, self.threads_before, self.cores),
                                  f"{others} other thread(s) running")
            self._mark = self._sample()
        from ._malloc import keep_freed_memory_for_a_while

        self._malloc = keep_freed_memory_for_a_while()
        self._malloc.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        global _depth, _active
        with _lock:
            _depth -= 1
            if not self._owner:
                return
            _active = None
        self._malloc.__exit__(*exc)
        if self._torch.get_num_threads() != self.threads_before:
            self._torch.set_num_threads(self.threads_before)

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _machine_busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_seconds())

    def _set_threads(self, threads: int, why: str) -> None:
        if threads != self.threads:
            logger.debug("torch threads %d -> %d (%s)", self.threads, threads, why)
            self._torch.set_num_threads(threads)
            self.threads = threads

    def adjust(self) -> None:
        """Set the thread count from the CPU that other processes used since the last
        look (called at the start of each epoch)."""
        if self._mark is None:
            return
        now = self._sample()
        if now is None:
            return
        wall = now[0] - self._mark[0]
        if wall < 0.2:  # too short a window for the clock ticks of /proc/stat
            return
        others = ((now[1] - self._mark[1]) - (now[2] - self._mark[2])) / wall
        self._mark = now
        self._set_threads(threads_for(others, self.threads_before, self.cores),
                          f"other processes used {others:.2f} cores")


def adjust_threads() -> None:
    """:meth:`cpu_settings.adjust` of the call in progress, if any."""
    active = _active
    if active is not None:
        active.adjust()
