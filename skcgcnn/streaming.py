"""Prediction in chunks, for screening sets too large to hold in memory.

:func:`predict_iter` reads ``chunk_size`` inputs at a time (structures, ASE Atoms or CIF
paths, from any iterable, consumed lazily), builds their graphs, predicts them and
yields the chunk's results before it reads the next one, so memory stays flat in the
number of crystals: only one chunk's structures and graphs are alive at a time.
``skcgcnn predict`` writes each chunk's rows as it comes and, with ``--resume``, skips
the ids already in its output file.

Shards
------
``predict_iter(..., shard=(i, n))`` predicts only the inputs of shard ``i`` of ``n``
(``skcgcnn predict --shard I/N``): those whose id hashes to ``i``
(:func:`shard_of`: BLAKE2b of the id's text, modulo ``n``).  A hash rather than
ranges of sorted ids, because each input's shard follows from its id alone: a shard
needs neither the list of all ids nor a sort of them (the inputs stay a lazy stream of a
million CIF paths), adding or removing inputs moves no other input to another shard
(so a shard's partial output stays valid for ``--resume``), and the shards are of
nearly equal size whatever the ids look like.  Python's ``hash()`` is salted per
process, so it is not used.

On a dask cluster
-----------------
``predict_iter(..., client=client)`` (a ``dask.distributed`` Client; ``pip install
'skcgcnn[dask]'``) runs each chunk as a task on the cluster's workers instead
(:mod:`skcgcnn._dask`): the fitted model is sent to every worker once, a few chunks per
worker thread are in flight at a time (the inputs are still read lazily), the chunks come
back in input order (``ordered=False``: as they finish), and the chunk of a worker that
dies is run again on another.  ``on_error``, ``skip_ids``, ``shard`` and ``return_std``
mean what they mean in one process, and the results are the same.

Examples
--------
>>> from skcgcnn.streaming import predict_iter
>>> for chunk in predict_iter(model, cif_paths, ids=names, chunk_size=2000):  # doctest: +SKIP
...     write(chunk.ids, chunk.values)
"""
from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class PredictedChunk:
    """The results of one chunk of :func:`predict_iter`.

    Attributes
    ----------
    ids : list
        Ids of the predicted crystals, in input order.
    positions : ndarray of int
        Their positions in the whole input stream.
    values : ndarray
        Predictions, shape (n, ) or (n, n_targets), for a regressor; class
        probabilities, shape (n, n_classes), for a classifier.
    errors : list of (int, object, str)
        Position, id and reason of every input of the chunk left out
        (``on_error="skip"``).
    std : ndarray or None
        With ``return_std=True``: the predicted standard deviation, the shape of
        ``values``; else None.
    """

    ids: list
    positions: np.ndarray
    values: np.ndarray
    errors: list = field(default_factory=list)
    std: np.ndarray | None = None


def _split_model(model: Any, transformer: Any) -> tuple[Any, Any]:
    """(transformer, estimator) of a fitted Pipeline (by :func:`split_pipeline`'s rule),
    or of an estimator and its transformer."""
    from .estimators._split import split_pipeline
    from .transformers import StructureGraphTransformer

    head, est = split_pipeline(model)
    if head is not None:
        if transformer is not None:
            raise ValueError("model is a Pipeline, which holds its transformer: do not pass "
                             "transformer= as well")
        if not isinstance(head, StructureGraphTransformer):
            names = [type(step).__name__ for _, step in model.steps]
            raise ValueError(f"model is a Pipeline of {names}; predicting in chunks takes "
                             "a StructureGraphTransformer followed by the CGCNN estimator")
        return head, est
    if transformer is None:
        raise ValueError("model is an estimator without its graph transformer: pass "
                         "transformer= (the fitted StructureGraphTransformer) or a Pipeline")
    return transformer, est


def _check_chunk_size(chunk_size: Any) -> int:
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    return int(chunk_size)


def shard_of(ident: Any, n_shards: int) -> int:
    """The shard (from 0 to ``n_shards - 1``) of the input with id ``ident``.

    The first 8 bytes of the BLAKE2b digest of ``str(ident)`` (UTF-8), as a
    little-endian integer, modulo ``n_shards``: the same in every process, Python
    version and machine, so the shards of a job array never overlap.

    Examples
    --------
    >>> [shard_of(f"mp-{k}", 4) for k in range(6)]
    [2, 1, 0, 3, 2, 2]
    """
    digest = hashlib.blake2b(str(ident).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def check_shard(shard: Any) -> tuple[int, int] | None:
    """``shard`` as ``(i, n)`` with ``0 <= i < n``, or None; anything else is a
    ValueError that says what is allowed."""
    if shard is None:
        return None
    ok = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)
    if not ok or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be a pair (i, n) of integers with 0 <= i < n (shard i "
                         f"of n), got {shard!r}")
    return int(shard[0]), int(shard[1])


def predict_iter(model: Any, X: Iterable[Any], *, ids: Iterable[Any] | None = None,
                 transformer: Any = None, chunk_size: int = 1000,
                 on_error: str = "raise", skip_ids: Iterable[Any] | None = None,
                 n_jobs: int | None = None, return_std: bool = False,
                 shard: tuple[int, int] | None = None, client: Any = None,
                 ordered: bool = True) -> Iterator[PredictedChunk]:
    """Predict ``X`` chunk by chunk: read, featurize, predict, yield.

    Parameters
    ----------
    model : Pipeline or CGCNNRegressor or CGCNNClassifier
        A fitted Pipeline (StructureGraphTransformer then the estimator), as
        :func:`skcgcnn.load_model` returns, or a fitted estimator with ``transformer``.
    X : iterable of Structure, ase.Atoms or str
        The inputs (CIF paths are read only when their chunk comes); a generator is
        fine.  A pandas Series gives its index as ids.
    ids : iterable, optional
        One id per input (default: a Series' index, else the positions).
    transformer : StructureGraphTransformer, optional
        The fitted transformer, when ``model`` is a bare estimator.
    chunk_size : int, default=1000
        Inputs per chunk: the memory held at once grows with it, the per-chunk overhead
        (starting the ``n_jobs`` workers, the last partial batch) shrinks.
    on_error : {"raise", "skip"}, default="raise"
        What a structure without a graph does: stop with its position and id, or be left
        out and listed in the chunk's ``errors``.
    skip_ids : iterable, optional
        Ids not to read nor predict (compared as strings): those of an interrupted run.
    n_jobs : int, optional
        Worker processes for building the graphs (default: the transformer's setting).
    return_std : bool, default=False
        Also give each chunk's predicted standard deviation (``chunk.std``), from the
        regressor's ``predict(X, return_std=True)``: a model with a variance head
        (:func:`predicts_std`) or an ensemble.
    shard : (int, int), optional
        ``(i, n)``: predict only shard ``i`` of ``n``, the inputs whose id
        :func:`shard_of` maps to ``i`` (the others are not read).  The ``n`` shards
        together hold every input once; ``positions`` stay those in the whole stream.
    client : distributed.Client, optional
        Run the chunks as tasks on this dask cluster: the model is sent to every worker
        once (a scatter with ``broadcast=True``), two chunks per worker thread are in
        flight at a time, and a chunk whose worker dies runs again on another (up to
        ``distributed.scheduler.allowed-failures`` times).  ``n_jobs`` then defaults to
        1 per task (the cluster's workers are the parallelism).
    ordered : bool, default=True
        With ``client``: yield the chunks in input order, or (False) each as it finishes.

    Yields
    ------
    PredictedChunk
        One per chunk that has something to predict or to report, in input order (with
        ``client`` and ``ordered=False``, in the order they finish).
    """
    chunk_size = _check_chunk_size(chunk_size)
    shard = check_shard(shard)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    transformer, est = _split_model(model, transformer)
    if ids is None:  # a Series' index (a list's .index is a method), else the positions
        index = getattr(X, "index", None) if hasattr(X, "iloc") else None
        ids = iter(index) if index is not None else itertools.count()
    if hasattr(X, "index") and hasattr(X, "iloc"):
        X = iter(X.tolist())
    done = None if skip_ids is None else {str(i) for i in skip_ids}
    pairs = ((pos, ident, item) for pos, (ident, item) in enumerate(zip(ids, X))
             if (done is None or str(ident) not in done)
             and (shard is None or shard_of(ident, shard[1]) == shard[0]))
    if client is not None:
        from . import _dask

        _dask.check_client(client)
        if n_jobs is None:
            n_jobs = 1
    params = {"on_error": on_error}
    if client is not None:  # the workers' progress bars would only interleave
        params["verbose"] = 0
    if n_jobs is not None:
        params["n_jobs"] = n_jobs
    classification = hasattr(est, "predict_proba") and hasattr(est, "classes_")
    if return_std and classification:
        raise ValueError("return_std=True needs a regressor; this model is a classifier")
    transformer = _with_params(transformer, params)
    chunks = _chunks(pairs, chunk_size)
    if client is None:
        for items, chunk_ids, positions in chunks:
            yield _predict_chunk(transformer, est, items, chunk_ids, positions,
                                 classification, return_std)
        return
    yield from _dask.map_chunks(client, _predict_task,
                                (transformer, est, classification, return_std), chunks,
                                describe=_describe, ordered=bool(ordered))


def _chunks(pairs: Iterator[tuple], chunk_size: int) -> Iterator[tuple[list, list, np.ndarray]]:
    """(items, ids, positions) of ``chunk_size`` (position, id, item) triples at a time."""
    while True:
        chunk = list(itertools.islice(pairs, chunk_size))
        if not chunk:
            return
        positions = np.array([pos for pos, _, _ in chunk], dtype=np.int64)
        yield [item for _, _, item in chunk], [ident for _, ident, _ in chunk], positions
        del chunk


def _describe(chunk: tuple) -> str:
    """A chunk's name in the dask engine's messages: its inputs' stream positions."""
    positions = chunk[2]
    return f"inputs {int(positions[0])}..{int(positions[-1])} of the stream"


def _predict_task(shared: tuple, items: list, ids: list, positions: np.ndarray
                  ) -> PredictedChunk:
    """One chunk on a dask worker; ``shared`` is (transformer, estimator,
    classification, return_std), sent to the worker once."""
    transformer, est, classification, return_std = shared
    return _predict_chunk(transformer, est, items, ids, positions, classification,
                          return_std)


def _with_params(transformer: Any, params: dict) -> Any:
    """A copy of the fitted transformer with ``params`` (the caller's is left as it is)."""
    import copy

    twin = copy.copy(transformer)
    twin.set_params(**params)
    return twin


def predicts_std(model: Any) -> bool:
    """Whether a fitted regressor (or a Pipeline ending in one) predicts a std of its
    own: a CGCNNRegressor with a variance head (``loss="gaussian_nll"``), or an ensemble
    whose members all have one."""
    est = model.steps[-1][1] if hasattr(model, "steps") else model
    has_head = getattr(est, "_has_variance_head", None)  # CGCNNRegressor and the ensemble
    return callable(has_head) and bool(has_head())


def _predict_chunk(transformer: Any, est: Any, items: list, ids: list,
                   positions: np.ndarray, classification: bool,
                   return_std: bool = False) -> PredictedChunk:
    import pandas as pd

    from .structures import StructureError

    try:  # a Series, so that the transformer's messages name the ids
        graphs = transformer.transform(pd.Series(items, index=ids, dtype=object))
    except StructureError as exc:
        raise StructureError(f"{exc} (input {int(positions[0])}..{int(positions[-1])} of "
                             "the stream)") from exc
    except ValueError:
        # every structure of the chunk was skipped: the transformer has no graph to give
        if transformer.on_error == "skip" and getattr(transformer, "errors_", None):
            return _only_errors(transformer.errors_, ids, positions, est, classification,
                                return_std)
        raise
    kept = np.asarray(transformer.kept_indices_, dtype=np.int64)
    errors = [(int(positions[pos]), ids[pos], reason)
              for pos, _, reason in transformer.errors_]
    std = None
    if classification:
        values = est.predict_proba(graphs)
    elif return_std:
        values, std = (np.asarray(a, dtype=float) for a in est.predict(graphs,
                                                                        return_std=True))
    else:
        values = np.asarray(est.predict(graphs), dtype=float)
    if len(values) != len(kept):  # one row per input, NaN where skipped
        values = values[kept]
        std = None if std is None else std[kept]
    return PredictedChunk([ids[i] for i in kept], positions[kept], values, errors, std)


def _only_errors(raw: list, ids: list, positions: np.ndarray, est: Any,
                 classification: bool, return_std: bool = False) -> PredictedChunk:
    width = len(est.classes_) if classification else getattr(est, "n_outputs_", 1)
    shape = (0, width) if classification or width > 1 else (0,)
    errors = [(int(positions[pos]), ids[pos], reason) for pos, _, reason in raw]
    return PredictedChunk([], np.zeros(0, dtype=np.int64), np.zeros(shape), errors,
                          np.zeros(shape) if return_std else None)


__all__ = ["PredictedChunk", "check_shard", "predict_iter", "predicts_std", "shard_of"]
