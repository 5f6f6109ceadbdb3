"""CGCNNRegressor and CGCNNClassifier: the CGCNN network behind skorch.

The estimators are thin skorch subclasses.  What they add to skorch:

* a dataset and collate function for :class:`~skcgcnn.graph.GraphCollection` inputs
  (X must come from :class:`~skcgcnn.transformers.StructureGraphTransformer`)
  (``_data``);
* module parameters that come from the data (atom-feature length, distance
  expansion, number of outputs), set when the module is initialised (``_base``);
* target standardisation (regression) fitted on the rows passed to ``fit`` only,
  with ``predict`` in the original units (``_regressor``); label encoding
  (``_classifier``);
* a default training recipe measured to beat the original one (AdamW, one-cycle
  schedule, L1 loss: ``DEFAULT_RECIPE``), the original ``main.py`` recipe one switch
  away (SGD lr 0.01, momentum 0.9, batch 256, the learning rate multiplied by 0.1 at
  epoch 100, 30 epochs: ``ORIGINAL_RECIPE``), and the recipe as parameters: ``lr_schedule``, ``warmup_fraction``, ``early_stopping``,
  ``validation_fraction``, ``n_iter_no_change``, ``loss``, ``sample_weight`` in
  ``fit`` (``_recipe``);
* skorch's ``save_params`` / ``load_params`` with ``f_fitted`` for what ``fit`` learned
  besides the weights (``_fitted``);
* ``random_state`` without touching the global random generators;
* a mean-variance head (``loss="gaussian_nll"``, ``_recipe``) and a deep ensemble of
  regressors with ``predict(X, return_std=True)`` (``_ensemble``), a fitted network as
  a transformer to crystal embeddings (``_embedder``), and an applicability domain in
  that embedding space, which the regressors fit with ``domain="knn"`` and warn about
  at ``predict`` (``_domain``), and the ensemble's spread and the domain distance as
  features of the error, for MAPIE's normalised conformity score (``_uncertainty``);
* resumable training callbacks (``_callbacks``);
* loading of the original CGCNN checkpoints and a safe save format of their own
  (``_persistence``).
"""
from __future__ import annotations

import importlib

from . import _loader

# Public name -> the private module that defines it.  They are imported on first use, so
# that ``from skcgcnn import CGCNNRegressor`` loads the regressor's modules only, not the
# ensemble, the embedder, the persistence code or scikit-learn's neighbour search.
_LAZY = {
    "DEFAULT_MOMENTUM": "_base", "OPTIMIZERS": "_base",
    "AtomicCheckpoint": "_callbacks", "LoadTrainingState": "_callbacks",
    "TrainingCheckpoint": "_callbacks", "TrainingStateError": "_callbacks",
    "atomic_torch_save": "_callbacks", "read_training_state": "_callbacks",
    "format_model_card": "_card",
    "CGCNNClassifier": "_classifier",
    "_exp": "_classifier",  # estimators pickled before the split name it here
    "GraphDataset": "_data", "collate_graphs": "_data", "graphs_to_tensors": "_data",
    "ApplicabilityDomain": "_domain", "OutsideDomainWarning": "_domain",
    "CGCNNEmbedder": "_embedder",
    "CGCNNEnsembleRegressor": "_ensemble",
    "CheckpointError": "_persistence", "is_torch_file": "_persistence",
    "load_cgcnn_checkpoint": "_persistence", "load_model": "_persistence",
    "save_model": "_persistence",
    "make_cgcnn_pipeline": "_pipeline", "split_pipeline": "_split",
    "DEFAULT_CLASSIFIER_RECIPE": "_recipe", "DEFAULT_RECIPE": "_recipe", "LOSSES": "_recipe",
    "LR_SCHEDULES": "_recipe", "ORIGINAL_CLASSIFIER_RECIPE": "_recipe",
    "ORIGINAL_RECIPE": "_recipe", "EpochTable": "_recipe", "GaussianNLLHead": "_recipe",
    "PerBatchLRScheduler": "_recipe", "ShortFitWarning": "_recipe",
    "WarmupCosine": "_recipe",
    "CGCNNRegressor": "_regressor",
    "UncertaintyFeatures": "_uncertainty",
}

__all__ = ["CGCNNRegressor", "CGCNNClassifier", "CGCNNEnsembleRegressor", "CGCNNEmbedder",
           "ApplicabilityDomain", "OutsideDomainWarning", "UncertaintyFeatures", "GraphDataset", "collate_graphs", "graphs_to_tensors", "make_cgcnn_pipeline",
           "split_pipeline",
           "load_cgcnn_checkpoint", "save_model", "load_model", "format_model_card",
           "CheckpointError", "is_torch_file", "TrainingCheckpoint", "LoadTrainingState",
           "AtomicCheckpoint", "TrainingStateError", "read_training_state",
           "atomic_torch_save", "DEFAULT_MOMENTUM", "OPTIMIZERS", "DEFAULT_RECIPE",
           "DEFAULT_CLASSIFIER_RECIPE", "ORIGINAL_RECIPE",
           "ORIGINAL_CLASSIFIER_RECIPE", "LR_SCHEDULES", "LOSSES", "PerBatchLRScheduler",
           "WarmupCosine", "GaussianNLLHead", "EpochTable", "ShortFitWarning"]


def _load_init(init):
    """A saved path or pretrained name given as ``init=`` (see ``_loader``)."""
    from ..pretrained import load_model_or_pretrained

    return load_model_or_pretrained(init)


_loader.set_init_loader(_load_init)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
