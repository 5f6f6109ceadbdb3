"""Worker processes of a study on one machine: started by :func:`tune`, each runs trials."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._study import _Run

logger = logging.getLogger(__name__)


def _worker_main(argv: Sequence[str]) -> int:
    """Body of a worker process started by :func:`tune` (``n_workers > 1``).

    ``argv``: payload path, worker index, torch threads, timeout in s (or "None"), log level.
    """
    from .. import set_cpu_performance_defaults

    set_cpu_performance_defaults()  # a worker is skcgcnn's own process
    import torch

    payload_path, worker, threads = argv[0], int(argv[1]), int(argv[2])
    deadline_s = None if argv[3] == "None" else float(argv[3])
    log_level = int(argv[4])

    logging.basicConfig(level=log_level, format=f"[worker {worker}] %(levelname)s "
                        "%(name)s: %(message)s")
    torch.set_num_threads(max(1, int(threads)))
    with open(payload_path, "rb") as fh:
        run: _Run = pickle.load(fh)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    run.work(worker, deadline, ready=Path(payload_path).with_name(f"ready-{worker}"))
    return 0


@contextlib.contextmanager
def worker_processes(run: _Run, n_workers: int, timeout: float | None,
                     verbose: int) -> Iterator[list[subprocess.Popen]]:
    """Start ``n_workers - 1`` processes that take part in ``run``'s study.

    The run is handed over in a temporary file; each process (this one included, for
    the body of the ``with``) gets ``cpu_count // n_workers`` torch threads.  The body
    starts once every worker has opened the study; on leaving, the workers are waited
    for (or terminated, when the body raised) and the temporary file removed.
    """
    procs: list[subprocess.Popen] = []
    if n_workers <= 1:
        yield procs
        return
    import torch

    payload_dir = None
    threads_before = None
    try:
        threads = max(1, (os.cpu_count() or 1) // int(n_workers))
        payload_dir = tempfile.mkdtemp(prefix="skcgcnn-tune-")
        payload = os.path.join(payload_dir, "run.pkl")
        with open(payload, "wb") as fh:
            pickle.dump(run, fh)
        level = logging.INFO if verbose >= 2 else logging.WARNING
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p)
        code = ("import sys; from skcgcnn.tuning._workers import _worker_main; "
                "sys.exit(_worker_main(sys.argv[1:]))")
        for worker in range(1, int(n_workers)):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", code, payload, str(worker), str(threads),
                 str(timeout), str(level)], env=env))
        threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        _wait_until_ready(procs, Path(payload_dir))
        yield procs
        for proc in procs:
            proc.wait()
        failed = [p.returncode for p in procs if p.returncode != 0]
        if failed:
            logger.warning("%d worker process(es) ended with an error (exit codes %s); see "
                           "their messages above", len(failed), failed)
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        raise
    finally:
        if threads_before is not None:
            torch.set_num_threads(threads_before)
        if payload_dir is not None:
            shutil.rmtree(payload_dir, ignore_errors=True)


def _wait_until_ready(procs: Sequence[subprocess.Popen], folder: Path,
                      timeout: float = 300.0) -> None:
    """Wait until every worker process has opened the study (or ended), so that all
    start taking trials together."""
    start = time.monotonic()
    pending = dict(enumerate(procs, start=1))
    while pending and time.monotonic() - start < timeout:
        for worker, proc in list(pending.items()):
            if (folder / f"ready-{worker}").exists():
                del pending[worker]
            elif proc.poll() is not None:
                logger.warning("worker process %d ended before it started (exit code %s)",
                               worker, proc.returncode)
                del pending[worker]
        time.sleep(0.1)
    if pending:
        logger.warning("worker process(es) %s are still starting after %.0f s; going on",
                       sorted(pending), timeout)
