"""Chunks as dask.distributed tasks: the engine of ``predict_iter(..., client=client)``.

:func:`map_chunks` knows nothing of crystals: it sends one object (the fitted model) to
every worker once, runs a function on each chunk of a stream as a task, keeps a window
of tasks in flight (the stream is read only as far as the window needs, so a generator of
a million CIF paths stays lazy and memory stays bounded) and yields the results in the
stream's order, or as they finish.

What dask.distributed does when things go wrong (distributed 2026.11, read in its
scheduler): a worker that dies while it runs a task (killed, out of memory) is removed and
its tasks go back to the queue and run on another worker; a task that has been on
``distributed.scheduler.allowed-failures + 1`` dying workers (3 + 1 by default) fails
with ``KilledWorker``, reported here with the chunk's inputs.  An exception raised by the
task itself (a structure without a graph under ``on_error="raise"``) is not retried: it
would fail again the same way.  The model lives on every worker of the scatter; a worker
that joins later (the nanny's replacement of a dead one) fetches it from a peer.
"""
from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._optional import require

logger = logging.getLogger(__name__)


def require_distributed() -> Any:
    """The ``distributed`` module, or an ImportError that names the ``dask`` extra."""
    return require("distributed")


def check_client(client: Any) -> Any:
    """``client`` if it is a ``distributed.Client``; else a TypeError saying what is
    allowed."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a dask.distributed Client (Client(address) or "
                        f"Client(LocalCluster(...))), got {type(client).__name__}")
    return client


def connect(address: str) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (``tcp://host:8786``, or
    a scheduler file's path ending in ``.json``)."""
    distributed = require_distributed()
    if address.endswith(".json"):
        return distributed.Client(scheduler_file=address)
    return distributed.Client(address)


def default_window(client: Any) -> int:
    """Tasks in flight at once: two per worker thread (one running, one queued behind it,
    so that no thread waits for the next chunk to arrive), at least 2."""
    return max(2, 2 * sum(client.nthreads().values()))


def map_chunks(client: Any, func: Callable[..., Any], shared: Any,
               chunks: Iterable[tuple], *, describe: Callable[[tuple], str] = repr,
               window: int | None = None, ordered: bool = True) -> Iterator[Any]:
    """``func(shared, *chunk)`` for every chunk of ``chunks``, as tasks on ``client``.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    func : callable
        A module-level function (the workers import it by name).
    shared : object
        Sent to every worker once (``client.scatter(..., broadcast=True)``) and given to
        every task as its first argument.
    chunks : iterable of tuple
        The other arguments of each task; read only as far as the window needs.
    describe : callable, default=repr
        The chunk's name in error messages (``describe(chunk)``).
    window : int, optional
        Tasks in flight at most (default: :func:`default_window`).
    ordered : bool, default=True
        Yield the results in the order of ``chunks`` (a slow chunk holds back the ones
        behind it, not the workers: the window keeps them busy); False yields each as it
        finishes.

    Yields
    ------
    object
        ``func``'s result for each chunk.
    """
    distributed = require_distributed()
    window = default_window(client) if window is None else window
    [shared_future] = client.scatter([shared], broadcast=True, hash=False)
    chunks = iter(chunks)
    names: dict[str, str] = {}  # task key -> the chunk's name, for KilledWorker

    def submit(chunk: tuple) -> Any:
        future = client.submit(func, shared_future, *chunk, pure=False)
        names[future.key] = describe(chunk)
        return future

    def result(future: Any) -> Any:
        try:
            return future.result()
        except distributed.KilledWorker as exc:
            raise RuntimeError(
                f"the chunk of {names[future.key]} was running on every worker that died "
                f"while running it ({exc}); it may need more memory than a worker has: "
                "try a smaller chunk_size or workers with more memory") from exc
        finally:
            names.pop(future.key, None)

    running = collections.deque(submit(c) for c in itertools.islice(chunks, window))
    logger.debug("dask: %d tasks in flight at most", window)
    try:
        if ordered:
            while running:
                future = running.popleft()
                running.extend(submit(c) for c in itertools.islice(chunks, 1))
                yield result(future)
                del future  # the worker may forget the result
        else:
            finished = distributed.as_completed(list(running))
            for future in finished:
                running.remove(future)
                for chunk in itertools.islice(chunks, 1):
                    running.append(submit(chunk))
                    finished.add(running[-1])
                yield result(future)
                del future
    finally:  # the caller stopped early or a chunk failed: drop the rest
        if running:
            client.cancel(list(running))
        client.cancel([shared_future])


__all__ = ["check_client", "connect", "default_window", "map_chunks", "require_distributed"]
