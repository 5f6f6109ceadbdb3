"""Active learning: which unlabelled crystals to compute next.

:func:`suggest` ranks a pool of candidates by what a fitted model does not know yet and
answers the ``n`` to label (run DFT on) next, best first.  The model is any fitted
regressor, or Pipeline ending in one, whose ``predict(X, return_std=True)`` answers a
mean and a standard deviation per crystal: a
:class:`~skcgcnn.estimators.CGCNNEnsembleRegressor` (the members' spread, an epistemic
uncertainty, the one that shrinks with more data) or a
:class:`~skcgcnn.estimators.CGCNNRegressor` fitted with ``loss="gaussian_nll"`` (its
predicted noise).  The strategies:

``"std"``
    Uncertainty sampling: the largest predicted std first, to learn the property
    everywhere (meant to lower the test error for the same number of labels;
    ``benchmarks/bench_active.py`` measures it against random picking).
``"ucb"``
    The upper confidence bound ``mean + kappa * std``, largest first, to find crystals
    with a high value of the target (a search, not a model of the whole space); with
    ``maximize=False`` the lower bound ``mean - kappa * std``, smallest first, for a
    target one wants low, such as a formation energy.
``"random"``
    A seeded uniform draw: the baseline every strategy must beat.

Examples
--------
>>> from skcgcnn.active import suggest
>>> picks = suggest(pipe, candidates, 250, strategy="std")           # doctest: +SKIP
>>> to_compute = candidates.loc[picks]                           # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any

import numpy as np

__all__ = ["STRATEGIES", "suggest"]

#: The values of ``suggest``'s ``strategy``.
STRATEGIES = ("std", "ucb", "random")


def suggest(model: Any, pool: Any, n: int, strategy: str = "std", *,
            kappa: float = 1.96, maximize: bool = True, random_state: Any = None,
            chunk_size: int | None = None) -> np.ndarray:
    """The ``n`` candidates of ``pool`` to label next, best first.

    Parameters
    ----------
    model : Pipeline or regressor
        Fitted, with ``predict(X, return_std=True)`` answering ``(mean, std)``, each of
        shape (len(pool),): a Pipeline ending in a
        :class:`~skcgcnn.estimators.CGCNNEnsembleRegressor`, a CGCNNRegressor fitted
        with ``loss="gaussian_nll"``, or any scikit-learn regressor that takes
        ``return_std`` (``GaussianProcessRegressor``, ``BayesianRidge``).  Not used
        (may be None) for ``strategy="random"``.
    pool : sequence
        The unlabelled candidates, as ``model.predict`` takes them: structures (a list
        or a pandas Series) for a Pipeline, a GraphCollection for a bare estimator.
    n : int
        How many to pick, from 1 to ``len(pool)``.
    strategy : {"std", "ucb", "random"}, default="std"
        ``"std"``: the largest predicted std first.  ``"ucb"``: the largest
        ``mean + kappa * std`` first (``maximize=False``: the smallest
        ``mean - kappa * std`` first).  ``"random"``: a uniform draw without
        replacement, in the order drawn.
    kappa : float, default=1.96
        With ``"ucb"``: how many stds of optimism, >= 0 (0 is the greedy choice of the
        best predicted mean; 1.96 the bound of a 95 % normal interval).
    maximize : bool, default=True
        With ``"ucb"``: whether a high target is wanted (``False`` for a low one, such
        as a formation energy or an energy above the hull).
    random_state : int, RandomState instance or None, default=None
        The draw of ``"random"``; with an int the same picks every time.
    chunk_size : int or None, default=None
        Predict the pool ``chunk_size`` structures at a time with
        :func:`skcgcnn.streaming.predict_iter`, so that only one chunk's graphs are in
        memory (a pool of 10,000s of crystals); needs a Pipeline whose first step builds
        the graphs.  None predicts the whole pool in one ``model.predict``.

    Returns
    -------
    picks : ndarray of shape (n,)
        Positions in ``pool``, best first; for a pandas Series (or DataFrame) its index
        labels instead, so that ``pool.loc[picks]`` are the crystals.  Ties go to the
        earlier position.  Candidates whose prediction is NaN (structures a
        ``StructureGraphTransformer(on_error="skip")`` left out) are never picked.

    Raises
    ------
    ValueError
        For an unknown ``strategy``, an ``n`` out of range, a negative ``kappa``, a
        model that gives no std, or fewer than ``n`` candidates with a prediction.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import StructureGraphTransformer, CGCNNEnsembleRegressor
    >>> pipe = make_pipeline(StructureGraphTransformer(),
    ...                      CGCNNEnsembleRegressor(n_estimators=3, random_state=0))
    >>> pipe.fit(labelled, y)                                          # doctest: +SKIP
    >>> suggest(pipe, pool, 250)                   # uncertainty sampling  # doctest: +SKIP
    >>> suggest(pipe, pool, 10, "ucb", maximize=False)   # low E_form  # doctest: +SKIP
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, "
                         f"got {strategy!r}")
    size = _pool_size(pool)
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or not 1 <= n <= size:
        raise ValueError(f"n must be an integer from 1 to the pool's size {size}, "
                         f"got {n!r}")
    n = int(n)
    if strategy == "random":
        from sklearn.utils import check_random_state

        positions = check_random_state(random_state).choice(size, size=n, replace=False)
        return _labels(pool, positions)
    if not isinstance(kappa, numbers.Real) or not np.isfinite(kappa) or kappa < 0:
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    mean, std = _predict_with_std(model, pool, size, chunk_size)
    if strategy == "std":
        score = std
    else:  # "ucb": the optimistic bound, as a score to maximise
        score = mean + kappa * std if maximize else -(mean - kappa * std)
    valid = np.flatnonzero(~np.isnan(score))
    if len(valid) < n:
        raise ValueError(f"only {len(valid)} of the {size} candidates have a prediction "
                         f"(the others were left out by the graph transformer): cannot "
                         f"pick {n}")
    order = valid[np.argsort(-score[valid], kind="stable")]
    return _labels(pool, order[:n])


def _pool_size(pool: Any) -> int:
    try:
        return len(pool)
    except TypeError:
        raise TypeError(f"pool must be a sequence with a length (a list, a pandas Series, "
                        f"a GraphCollection), got {type(pool).__name__}: pass "
                        f"list(pool)") from None


def _labels(pool: Any, positions: np.ndarray) -> np.ndarray:
    """A Series' (or DataFrame's) index labels at ``positions``, else the positions."""
    positions = np.asarray(positions, dtype=np.int64)
    if hasattr(pool, "iloc") and hasattr(pool, "index"):
        return np.asarray(pool.index[positions])
    return positions


def _final_step(model: Any) -> Any:
    from .estimators._split import split_pipeline

    return split_pipeline(model)[1]


def _check_gives_std(model: Any) -> None:
    """Refuse, before predicting anything, a model whose ``predict`` gives no std."""
    est = _final_step(model)
    predict = getattr(est, "predict", None)
    fix = ("use CGCNNEnsembleRegressor (a spread over several networks) or "
           "CGCNNRegressor(loss='gaussian_nll') (a variance head), or strategy='random'")
    if predict is None:
        raise ValueError(f"model ({type(est).__name__}) has no predict method; {fix}")
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):  # a builtin without a signature: try it
        return
    if "return_std" not in params and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"{type(est).__name__}.predict takes no return_std, so it gives "
                         f"no std to rank the pool by; {fix}")
    has_head = getattr(est, "_has_variance_head", None)
    if callable(has_head) and not hasattr(est, "estimators_") and hasattr(est, "module_") \
            and not has_head():
        raise ValueError(f"this {type(est).__name__} was fitted with "
                         f"loss={getattr(est, 'loss', None)!r}, which predicts a mean only; "
                         f"{fix}")


def _predict_with_std(model: Any, pool: Any, size: int, chunk_size: int | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of every candidate, float arrays of shape (size,), NaN where the
    graph transformer left a candidate out."""
    if model is None:
        raise ValueError("strategy 'std' and 'ucb' need a fitted model; pass one, or use "
                         "strategy='random'")
    _check_gives_std(model)
    if chunk_size is None:
        out = model.predict(pool, return_std=True)
        if not isinstance(out, tuple) or len(out) < 2:
            raise ValueError(f"{type(_final_step(model)).__name__}.predict(X, "
                             "return_std=True) did not answer (mean, std)")
        mean, std = (np.asarray(a, dtype=float) for a in out[:2])
    else:
        mean, std = _predict_chunked(model, pool, size, chunk_size)
    if mean.ndim != 1 or std.shape != mean.shape or len(mean) != size:
        raise ValueError(f"suggest needs one target: predict answered a mean of shape "
                         f"{mean.shape} and a std of shape {std.shape} for a pool of "
                         f"{size}; fit the model on the one target to rank by")
    return mean, std


def _predict_chunked(model: Any, pool: Any, size: int, chunk_size: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    from .streaming import predict_iter

    if getattr(model, "steps", None) is None:
        raise ValueError("chunk_size needs a Pipeline whose first step builds the graphs "
                         "(predict_iter reads structures chunk by chunk); pass "
                         "chunk_size=None to predict a bare estimator's pool at once")
    mean = np.full(size, np.nan)
    std = np.full(size, np.nan)
    from .estimators._split import split_pipeline

    on_error = getattr(split_pipeline(model)[0], "on_error", "raise")
    for chunk in predict_iter(model, pool, chunk_size=chunk_size, on_error=on_error,
                              return_std=True):
        if chunk.values.ndim != 1:
            raise ValueError(f"suggest needs one target: predict answered values of shape "
                             f"{chunk.values.shape}; fit the model on the one target to "
                             "rank by")
        mean[chunk.positions] = chunk.values
        std[chunk.positions] = chunk.std
    return mean, std
