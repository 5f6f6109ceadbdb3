"""Multi-fidelity search: cheap trials on a share of the training rows, the best few
trained again in full.

A trial's cost grows with its training rows and epochs.  With ``tune(trial_rows=...)``
each trial trains on a seeded subset of its split's training rows (the validation rows
stay whole, so every trial is scored on the same crystals), and with ``rerun_top=k``
the ``k`` best complete trials are trained again on all the training rows for
``refit_epochs`` and scored on the same validation rows; the best of those re-runs is
the configuration ``tune`` returns.  A ranking made at low fidelity is noisy near the
top, so the re-runs choose among its head instead of trusting its first place.
"""
from __future__ import annotations

import time
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np

from ._holdout import _rows
from ._progress import plural, seconds, write_line

__all__ = ["check_trial_rows", "subset_splits", "rerun_best"]


def check_trial_rows(trial_rows: Any) -> None:
    """Refuse a ``trial_rows`` that is neither None, a fraction in (0, 1] nor a count ≥ 2."""
    if trial_rows is None:
        return
    if isinstance(trial_rows, bool) or not isinstance(trial_rows, Real):
        raise ValueError(f"trial_rows={trial_rows!r}: use a fraction in (0, 1] or a number "
                         "of rows (at least 2)")
    if isinstance(trial_rows, Integral) and trial_rows != 1:
        if trial_rows < 2:
            raise ValueError(f"trial_rows={trial_rows!r}: a trial needs at least 2 rows")
    elif not 0 < float(trial_rows) <= 1:
        raise ValueError(f"trial_rows={trial_rows!r}: a fraction must lie in (0, 1]")


def subset_splits(splits: Sequence[tuple[np.ndarray, np.ndarray]], trial_rows: Any,
                  random_state: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each split with its training positions cut to ``trial_rows`` (a fraction or a
    count, capped at what there is), drawn without replacement by ``random_state``;
    the validation positions as they are."""
    if trial_rows is None:
        return list(splits)
    rng = np.random.default_rng(random_state)
    out = []
    for train, valid in splits:
        train = np.asarray(train)
        if isinstance(trial_rows, Integral) and trial_rows != 1:
            size = min(int(trial_rows), len(train))
        else:
            size = max(2, int(round(float(trial_rows) * len(train))))
        out.append((np.sort(rng.choice(train, size=size, replace=False)), np.asarray(valid)))
    return out


def rerun_best(complete: Sequence[Any], k: int, *, space: Any, fixed: dict, cache: Any,
               y: np.ndarray, split: tuple[np.ndarray, np.ndarray], epochs: int | None,
               max_epochs: int, seed_of: Any, device: str, tables: dict, verbose: int,
               refit: Any) -> tuple[Any, list[dict], Any]:
    """Train the ``k`` best complete trials again on all of ``split``'s training rows and
    score them on its validation rows.

    ``refit`` is ``tune``'s ``_refit`` (it builds and fits the Pipeline); ``seed_of``
    gives a trial's network seed.

    Returns
    -------
    best : optuna FrozenTrial
        The trial whose re-run scored best.
    rows : list of dict
        ``trial``, ``trial_value`` (its score at the trials' fidelity), ``value`` (the
        re-run's validation MAE) and ``fit_s``, best re-run first.
    fitted : tuple
        ``(pipeline, (graphs, kept))`` of the best re-run.
    """
    from sklearn.metrics import mean_absolute_error

    train, valid = split
    ranked = sorted(complete, key=lambda t: t.value)[:int(k)]
    write_line(f"rerun: the best {plural(len(ranked), 'trial')} on all {len(train)} train "
               "rows", verbose)
    rows, fitted = [], {}
    for trial in ranked:
        cfg = space.config(trial.params)
        params = {**fixed, **cfg.estimator_params}
        params["max_epochs"] = int(epochs or params.get("max_epochs", max_epochs))
        start = time.perf_counter()
        pipe, graphs = refit(cfg, params, cache, y, seed_of(trial), device, tables,
                             trial.number, verbose, train, label="rerun")
        g, kept = graphs
        where = _rows(np.asarray(valid), kept, len(y))
        value = float(mean_absolute_error(y[kept][where],
                                          pipe.named_steps["cgcnn"].predict(g[where])))
        fit_s = time.perf_counter() - start
        write_line(f"rerun: trial {trial.number}: valid MAE {value:.4f} in full "
                   f"(its trial {trial.value:.4f}), {seconds(fit_s)}", verbose)
        rows.append({"trial": int(trial.number), "trial_value": float(trial.value),
                     "value": value, "fit_s": round(fit_s, 2)})
        fitted[trial.number] = (trial, pipe, graphs)
    rows.sort(key=lambda r: r["value"])
    best, pipe, graphs = fitted[rows[0]["trial"]]
    write_line(f"rerun: trial {best.number} chosen (valid MAE {rows[0]['value']:.4f})",
               verbose)
    return best, rows, (pipe, graphs)
