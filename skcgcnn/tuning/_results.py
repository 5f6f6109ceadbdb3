"""What a study leaves behind: tables, markdown, plots, ``summary.json``, :class:`TuneResult`."""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._optional import require
from ..reporting import markdown_table, plot_bars, save_figure, write_json
from ._space import SearchSpace, TrialConfig

logger = logging.getLogger(__name__)

_TABLE_PARAMS = ("n_conv", "atom_fea_len", "h_fea_len", "n_h", "conv", "optimizer", "lr",
                 "weight_decay", "batch_size", "radius", "max_num_nbr", "max_epochs", "loss",
                 "freeze", "init_lr_factor")
#: Columns of the optional fields, there when the space has them.
_OPTIONAL_COLUMNS = ("max_epochs", "loss", "freeze", "init_lr_factor")


def trials_table(study: Any, space: SearchSpace | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs run, duration, the configuration."""
    space = space or SearchSpace()
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name,
                               "valid_mae": t.value,
                               "epochs": len(t.intermediate_values),
                               "duration_s": (t.duration.total_seconds()
                                              if t.duration is not None else np.nan),
                               "atom_features": t.user_attrs.get("atom_features")}
        try:
            cfg = space.config(t.params)
            est = cfg.estimator_params
            row.update(n_conv=est["module__n_conv"], atom_fea_len=est["module__atom_fea_len"],
                       h_fea_len=est["module__h_fea_len"], n_h=est["module__n_h"],
                       conv=est["module__conv"], optimizer=est["optimizer"], lr=est["lr"],
                       weight_decay=est["optimizer__weight_decay"],
                       batch_size=est["batch_size"], radius=cfg.radius,
                       max_num_nbr=cfg.max_num_nbr)
            row.update({name: est[name] for name in _OPTIONAL_COLUMNS if name in est})
        except ValueError:
            pass  # a trial that failed before sampling everything
        row["worker"] = t.user_attrs.get("worker")
        row["retry_of"] = t.user_attrs.get("retry_of")
        row["error"] = t.user_attrs.get("error") or t.user_attrs.get("skipped")
        rows.append(row)
    return pd.DataFrame(rows)


def best_trials_markdown(study: Any, space: SearchSpace | None = None, k: int = 10) -> str:
    """The ``k`` best complete trials as a markdown table (lowest validation MAE first)."""
    table = trials_table(study, space)
    if table.empty:
        return "(no trials)"
    done = table[table["state"] == "COMPLETE"].sort_values("valid_mae").head(k)
    cols = ["number", "valid_mae", "atom_features"] + [c for c in _TABLE_PARAMS
                                                        if c in done.columns]
    cols += ["epochs", "duration_s"]
    return markdown_table(done[cols])


def plot_against_baselines(best_value: float, baselines: Mapping[str, float], path: Path,
                           label: str = "tuned CGCNN", title: str = "validation MAE") -> Path:
    """Horizontal bars: the study's best validation MAE beside the baselines' MAE."""
    return plot_bars({label: best_value, **baselines}, path, title=title, horizontal=True,
                     colors=["tab:blue"] + ["tab:gray"] * len(baselines), digits=4)


def write_results(study: Any, output_dir: str | os.PathLike, *, space: SearchSpace | None = None,
                  baselines: Mapping[str, float] | None = None, target_name: str = "target",
                  extra: Mapping[str, Any] | None = None,
                  test: Mapping[str, Any] | None = None) -> list[Path]:
    """Write tables and plots of a study into ``output_dir``.

    ========================  =========================================================
    ``trials.csv``            every trial (:func:`trials_table`)
    ``best_trials.md/.csv``   the ten best complete trials
    ``history.png``           optimisation history (Optuna's matplotlib plot)
    ``intermediate.png``      validation MAE per epoch of every trial (pruning at work)
    ``importances.png``       parameter importances (fANOVA), when 2+ trials completed
    ``baselines.png``         the best validation MAE beside the baselines' MAE
    ``summary.json``          counts per state, the best trial, baselines, ``extra``
    ``test.csv``              with ``test`` (a fixed split's, see :func:`tune`): the test
                              MAE of the tuned and the default estimator
    ``test.png``              the two as bars
    ========================  =========================================================
    """
    optuna = require("optuna")
    from optuna.visualization import matplotlib as ovm
    from optuna.trial import TrialState

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    table = trials_table(study, space)
    table.to_csv(out / "trials.csv", index=False)
    files.append(out / "trials.csv")
    md = best_trials_markdown(study, space)
    (out / "best_trials.md").write_text(
        f"# Best trials of study {study.study_name!r}\n\nValidation MAE of {target_name}.\n\n"
        f"{md}\n", encoding="utf-8")
    files.append(out / "best_trials.md")
    if not table.empty:
        done = table[table["state"] == "COMPLETE"].sort_values("valid_mae").head(10)
        done.to_csv(out / "best_trials.csv", index=False)
        files.append(out / "best_trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # fANOVA's "some regimes ... have less than 2 trials": expected in small studies
        warnings.filterwarnings("ignore", message="Some regimes for parameter")
        plots = [("history.png", ovm.plot_optimization_history, 1),
                 ("intermediate.png", ovm.plot_intermediate_values, 1),
                 ("importances.png", ovm.plot_param_importances, 2)]
        for name, plot, needed in plots:
            if len(complete) < needed:
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                logger.warning("%s not drawn: %s", name, exc)
                continue
            if name == "history.png":
                ax.set_ylabel(f"validation MAE, {target_name}")
            elif name == "intermediate.png":
                ax.set_ylabel(f"validation MAE, {target_name}")
                ax.set_xlabel("epoch (with k folds: fold × max_epochs + epoch)")
            files.append(save_figure(ax.figure, out / name, tight=True))
    best = min(complete, key=lambda t: t.value) if complete else None
    if best is not None and baselines:
        files.append(plot_against_baselines(
            best.value, baselines, out / "baselines.png",
            label=f"tuned CGCNN (trial {best.number})",
            title=f"validation MAE, {target_name}"))
    if test:
        files.extend(_write_test(test, out, target_name))
    states = {s.name: sum(1 for t in study.trials if t.state == s) for s in TrialState}
    summary = {"study_name": study.study_name, "trials": states,
               "best_trial": None if best is None else best.number,
               "best_valid_mae": None if best is None else best.value,
               "best_params": None if best is None else best.params,
               "best_atom_features": None if best is None else
               best.user_attrs.get("atom_features"),
               "baselines": dict(baselines or {}), **dict(extra or {})}
    if test:
        summary["test"] = dict(test)
    files.append(write_json(out / "summary.json", summary))
    return files


def _write_test(test: Mapping[str, Any], out: Path, target_name: str) -> list[Path]:
    tuned = f"tuned CGCNN (trial {test['tuned_trial']})"
    default = "default CGCNNRegressor()"
    pd.DataFrame({"model": [tuned, default],
                  "test_mae": [test["tuned_test_mae"], test["default_test_mae"]],
                  "n_test": [test["n_test"]] * 2}).to_csv(out / "test.csv", index=False)
    plot = plot_against_baselines(test["tuned_test_mae"], {default: test["default_test_mae"]},
                                  out / "test.png", label=tuned,
                                  title=f"test MAE, {target_name} ({test['n_test']} rows)")
    return [out / "test.csv", plot]


@dataclass
class TuneResult:
    """What :func:`tune` returns; unpacks as ``study, best_pipeline = tune(...)``.

    Attributes
    ----------
    study : optuna.Study
    best_pipeline : sklearn Pipeline or None
        The best configuration refitted on all the data (None with ``refit=False``).
    best_params : dict
    best_value : float
        The best validation MAE.
    best_config : TrialConfig
    baselines : dict of str -> float
        Validation MAE of the reference models on the same split(s).
    trials : DataFrame
        :func:`trials_table` of the study.
    wall_s : float
        Wall time of this call.
    files : list of Path
        Files written into ``output_dir``.
    graph_builds : int
        Neighbour searches run by this process.
    test : dict or None
        With ``tune(split=...)`` and a refit: ``n_test``, ``tuned_trial``,
        ``tuned_test_mae`` (the refitted best configuration) and ``default_test_mae``
        (``CGCNNRegressor()`` on the same train rows), on the same test rows.
    reruns : list of dict or None
        With ``rerun_top``: each re-run trial's ``trial``, ``trial_value`` (at the
        trials' fidelity), ``value`` (valid MAE in full) and ``fit_s``, best first.
    """

    study: Any
    best_pipeline: Any
    best_params: dict
    best_value: float
    best_config: TrialConfig
    baselines: dict
    trials: pd.DataFrame
    wall_s: float
    files: list = field(default_factory=list)
    graph_builds: int = 0
    test: dict | None = None
    reruns: list | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.study, self.best_pipeline))
