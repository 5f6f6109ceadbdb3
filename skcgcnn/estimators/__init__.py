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
  at ``predict`` (``_domain``);
* resumable training callbacks (``_callbacks``);
* loading of the original CGCNN checkpoints and a safe save format of their own
  (``_persistence``).
"""
from ._base import DEFAULT_MOMENTUM, OPTIMIZERS
from ._callbacks import (AtomicCheckpoint, LoadTrainingState, TrainingCheckpoint,
                         TrainingStateError, atomic_torch_save, read_training_state)
from ._card import format_model_card
from ._classifier import CGCNNClassifier
from ._classifier import _exp  # noqa: F401 (estimators pickled before the split name it here)
from ._data import GraphDataset, collate_graphs, graphs_to_tensors
from ._domain import ApplicabilityDomain, OutsideDomainWarning
from ._embedder import CGCNNEmbedder
from ._ensemble import CGCNNEnsembleRegressor
from ._persistence import (CheckpointError, is_torch_file, load_cgcnn_checkpoint, load_model,
                           save_model)
from ._pipeline import make_cgcnn_pipeline
from ._recipe import (DEFAULT_CLASSIFIER_RECIPE, DEFAULT_RECIPE, LOSSES, LR_SCHEDULES,
                      ORIGINAL_CLASSIFIER_RECIPE, ORIGINAL_RECIPE, EpochTable,
                      GaussianNLLHead, PerBatchLRScheduler, ShortFitWarning, WarmupCosine)
from ._regressor import CGCNNRegressor

__all__ = ["CGCNNRegressor", "CGCNNClassifier", "CGCNNEnsembleRegressor", "CGCNNEmbedder",
           "ApplicabilityDomain", "OutsideDomainWarning", "GraphDataset", "collate_graphs", "graphs_to_tensors", "make_cgcnn_pipeline",
           "load_cgcnn_checkpoint", "save_model", "load_model", "format_model_card",
           "CheckpointError", "is_torch_file", "TrainingCheckpoint", "LoadTrainingState",
           "AtomicCheckpoint", "TrainingStateError", "read_training_state",
           "atomic_torch_save", "DEFAULT_MOMENTUM", "OPTIMIZERS", "DEFAULT_RECIPE",
           "DEFAULT_CLASSIFIER_RECIPE", "ORIGINAL_RECIPE",
           "ORIGINAL_CLASSIFIER_RECIPE", "LR_SCHEDULES", "LOSSES", "PerBatchLRScheduler",
           "WarmupCosine", "GaussianNLLHead", "EpochTable", "ShortFitWarning"]
