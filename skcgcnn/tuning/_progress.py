"""What a study shows while it runs: one line per finished trial, and the refit's, on stderr.

:class:`TrialLines` follows the convention of the estimators' epoch table
(:class:`~skcgcnn.estimators.EpochTable`): progress goes to standard error, looked up at
the time of writing (so pytest's or a notebook's capture sees it), whether or not
logging is configured, and ``verbose=0`` silences it.  A line is printed for every
trial of the study that ends while :func:`~skcgcnn.tuning.tune` runs, whichever worker
ran it; trials inside report nothing per epoch.  On a terminal a tqdm bar (trials done,
time left) stays below the lines.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ._space import CGCNN_GROUPS_CHOICE


def write_line(text: str, verbose: int = 1) -> None:
    """``text`` and a newline on standard error (above a tqdm bar, if one is shown)."""
    if verbose < 1:
        return
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()


def seconds(s: float) -> str:
    """A wall time for a progress line: ``0.04 s``, ``12.3 s``, ``420 s``."""
    return f"{s:.2f} s" if s < 1 else (f"{s:.1f} s" if s < 100 else f"{s:.0f} s")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def compact_params(params: Mapping[str, Any], atom_features: str | None = None) -> str:
    """``name=value`` pairs of a trial's parameters; a subset of CGCNN groups as its
    table name (``atom_features=cgcnn[group,period]``), not nine yes/no values."""
    out = []
    for name, value in params.items():
        if name.startswith("group_"):
            continue
        if name == "atom_features" and value == CGCNN_GROUPS_CHOICE and atom_features:
            value = atom_features
        out.append(f"{name}={_value(value)}")
    return " ".join(out)


class TrialLines:
    """Print one line on standard error for each trial of a study that ends.

    ``trial 3 [4/20]: valid MAE 0.1234 (best), 12.3 s: n_conv=3 lr=0.00123 ...``, or
    ``pruned at epoch E`` (``epoch E of fold k`` with several folds), or ``failed
    (error)``; the count is of the finished trials that count toward ``n_trials``.
    Trials that had ended before :meth:`start` are not shown again.

    Parameters
    ----------
    n_trials : int or None
        The study's budget (None: no count of the total).
    max_epochs : int
        Steps per fold in the trials' reports (a pruned trial's epoch is read from them).
    n_folds : int, default=1
    verbose : int, default=1
        0: nothing.
    """

    def __init__(self, n_trials: int | None, max_epochs: int, n_folds: int = 1,
                 verbose: int = 1) -> None:
        self.n_trials = n_trials
        self.max_epochs = int(max_epochs)
        self.n_folds = int(n_folds)
        self.verbose = verbose
        self._seen: set[int] = set()
        self.done = 0
        self._best: float | None = None

    def start(self, trials: Sequence[Any]) -> None:
        """Remember the trials already finished (a resumed study's): not shown again."""
        from optuna.trial import TrialState

        for t in trials:
            if self._finished(t):
                self._seen.add(t.number)
                self.done += 1
            if t.state == TrialState.COMPLETE and t.value is not None:
                self._best = t.value if self._best is None else min(self._best, t.value)

    @staticmethod
    def _finished(trial: Any) -> bool:
        from optuna.trial import TrialState

        return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            trial.state == TrialState.FAIL and "error" in trial.user_attrs)

    def update(self, trials: Sequence[Any]) -> None:
        """Print a line for each trial that has ended since the last call."""
        new = sorted((t for t in trials if t.number not in self._seen and self._finished(t)),
                     key=lambda t: (t.datetime_complete is None, t.datetime_complete,
                                    t.number))
        for trial in new:
            self._seen.add(trial.number)
            self.done += 1
            write_line(self.line(trial), self.verbose)

    def line(self, trial: Any) -> str:
        """The line of one finished trial (and the count and best so far move on)."""
        from optuna.trial import TrialState

        total = f"/{self.n_trials}" if self.n_trials is not None else ""
        head = f"trial {trial.number} [{self.done}{total}]"
        if trial.state == TrialState.COMPLETE:
            best = self._best is None or trial.value < self._best
            if best:
                self._best = trial.value
            what = f"valid MAE {trial.value:.4f}" + (" (best)" if best else "")
        elif trial.state == TrialState.PRUNED:
            steps = trial.intermediate_values
            if steps:
                last = max(steps)
                fold, epoch = divmod(last, self.max_epochs)
                where = f"epoch {epoch + 1}" + (f" of fold {fold + 1}" if self.n_folds > 1
                                                else "")
                what = f"pruned at {where} (valid MAE {steps[last]:.4f})"
            else:
                what = "pruned"
        else:
            what = f"failed ({trial.user_attrs['error']})"
        wall = (trial.duration.total_seconds() if trial.duration is not None
                else trial.user_attrs.get("fit_s"))
        took = f", {seconds(wall)}" if wall is not None else ""
        params = compact_params(trial.params, trial.user_attrs.get("atom_features"))
        return f"{head}: {what}{took}" + (f": {params}" if params else "")


def work_with_progress(run: Any, deadline: float | None, verbose: int, storage: Any,
                       lines: TrialLines) -> Any:
    """``run.work`` (a :class:`~skcgcnn.tuning._study._Run`) with a line per finished
    trial, and on a terminal a tqdm bar below them."""
    from tqdm.auto import tqdm

    terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
    bar = tqdm(total=run.n_trials, desc=f"study {run.study_name}", unit="trial",
               disable=verbose < 1 or not terminal, file=sys.stderr)

    def progress(study: Any, trials: Sequence[Any], done: int) -> None:
        lines.update(trials)
        bar.n = done
        values = [t.value for t in trials if t.value is not None]
        if values:
            bar.set_postfix_str(f"best valid MAE {min(values):.4f}", refresh=False)
        bar.refresh()

    try:
        return run.work(0, deadline, progress, storage)
    finally:
        bar.close()


def study_start(name: str, n_trials: int | None, timeout: float | None,
                epochs: Sequence[int], validation: str, done: int) -> str:
    """The first line of a study: its budget, epochs per trial, split, trials done."""
    budget = " or ".join(([plural(n_trials, "trial")] if n_trials is not None else [])
                         + ([f"new trials for {timeout:g} s"] if timeout is not None else []))
    per_trial = plural(int(epochs[0]), "epoch") if len(epochs) == 1 else \
        ", ".join(map(str, epochs[:-1])) + f" or {epochs[-1]} epochs"
    return (f"study {name!r}: {budget} of {per_trial}, validation {validation}"
            + (f"; {done} trials done already" if done else ""))


def state_counts(study: Any) -> str:
    """``"14 complete, 6 pruned"``: the study's trials by state (skipped ones left out)."""
    from collections import Counter

    counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False)
                     if "skipped" not in t.user_attrs)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
