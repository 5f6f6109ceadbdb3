"""Optuna searches over CGCNN's atom features, depth, widths, optimiser and graphs.

:func:`tune` runs an Optuna study whose trials train a :class:`CGCNNRegressor` on a
fixed train/validation split (or k folds) and minimise the validation mean absolute
error, in the target's units.  What it adds to a plain ``study.optimize`` loop:

* a :class:`SearchSpace` over the atom-feature set (named sets and subsets of the nine
  CGCNN property groups), ``n_conv``, ``atom_fea_len``, ``h_fea_len``, ``n_h``, the
  convolution kind, optimiser, learning rate, weight decay, batch size, the graph
  parameters ``radius`` and ``max_num_nbr`` and, when given, epochs and loss; and for
  fine-tuning a fitted model (``estimator_params={"init": ...}``,
  :func:`fine_tuning_space`) ``freeze`` and ``init_lr_factor``;
* a :class:`GraphCache`: neighbour lists are built once per graph-parameter set (in
  memory, and on disk to share them between processes); the atom-feature choice only
  swaps the feature table (:meth:`GraphCollection.with_atom_features`);
* pruning: :class:`ValidationMAE` records the validation MAE each epoch and
  :class:`PruningCallback` reports it to the trial and stops unpromising ones;
* storages: an SQLite file by default, any SQLAlchemy URL (PostgreSQL, MySQL) or an
  Optuna journal file, shared by many worker processes (``n_workers``) or machines;
  a trial budget (``n_trials``) that counts finished trials of the whole study, so
  workers stop together and a killed study resumes where it stopped: finished trials
  stay, trials of dead workers are found by their heartbeat and run again;
* honest selection: with a fixed train/val/test split (``split=``) the search sees the
  train and val rows only, and the tuned model and the default ``CGCNNRegressor()``
  are scored once on the test rows;
* results: optimisation history, learning curves and parameter importances as PNG,
  tables of the best trials, and the MAE of descriptor baselines
  (:mod:`skcgcnn.baselines`) and the default CGCNN on the same split, drawn beside the
  study's best.

:func:`load_tuning_data` reads a seeded subset of a CGCNN folder.  The ``skcgcnn tune``
command (``add_tune_parser``, ``run_tune_command``) lives in
:mod:`skcgcnn.cli.tune`, above the library (importing them from here raises an
AttributeError that names their home).
:func:`pipeline_distributions` gives the same space for optuna-integration's
``OptunaSearchCV`` on :func:`~skcgcnn.estimators.make_cgcnn_pipeline`.

The private modules, in the order data flows through them: ``_space`` (search space),
``_data`` (:func:`load_tuning_data`), ``_pipeline`` (trial -> Pipeline, OptunaSearchCV
distributions),
``_callbacks`` (skorch), ``_storage`` (storages, creation races), ``_recovery``
(heartbeats, trials of dead workers),
``_study`` (one process's trials), ``_workers`` (worker processes), ``_progress`` (a
line per finished trial on stderr), ``_finetune`` (a pretrained ``init`` in every
trial), ``_baselines``, ``_holdout`` (a fixed train/val/test
split: the tuned and the default estimator scored on its test rows), ``_results``
(tables, plots, :class:`TuneResult`) and ``_tune`` (:func:`tune`).
"""
from __future__ import annotations

from typing import Any

from ._baselines import DEFAULT_CGCNN, evaluate_baselines, read_benchmark_maes
from ._callbacks import PruningCallback, ValidationMAE
from ..graph import GraphCache
from ..graph._cache import structures_fingerprint
from ._data import load_tuning_data
from ._finetune import fine_tuning_space
from ._pipeline import pipeline_distributions, pipeline_from_params
from ._results import (TuneResult, best_trials_markdown, plot_against_baselines,
                       trials_table, write_results)
from ._space import (CGCNN_GROUPS_CHOICE, FREEZE_CHOICES, TUNED_LOSSES, SearchSpace,
                     TrialConfig, usable_atom_feature_choices)
from ._recovery import HEARTBEAT_ATTR, fail_beatless_trials, recover_stale_trials
from ._storage import default_storage, make_storage
from ._tune import tune

__all__ = [
    "GraphCache",
    "PruningCallback",
    "SearchSpace",
    "TrialConfig",
    "TuneResult",
    "ValidationMAE",
    "evaluate_baselines",
    "fine_tuning_space",
    "make_storage",
    "pipeline_distributions",
    "pipeline_from_params",
    "fail_beatless_trials",
    "recover_stale_trials",
    "tune",
    "write_results",
]

# The ``skcgcnn tune`` command's two names lived here until issue 27: the library does
# not import the command line (data flow: tuning -> cli).
_MOVED = {"add_tune_parser": "skcgcnn.cli.tune", "run_tune_command": "skcgcnn.cli.tune"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"skcgcnn.tuning.{name} moved to {_MOVED[name]}: import it "
                             f"from there (the library no longer imports the command line)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
