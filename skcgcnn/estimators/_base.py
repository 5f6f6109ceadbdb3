"""What CGCNNRegressor and CGCNNClassifier share: the skorch glue around the CGCNN module."""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._cpu import adjust_threads, cpu_settings
from .._defaults import GRAPH_PARAMS, MOMENTUM, resolve_device
from ..graph import GraphCollection
from ..model import CGCNN
from . import _distributed, _finetune
from ._checks import _InputChecks, _seed_of
from ._data import GraphDataset, graphs_to_tensors
from ._device_batches import autocast, device_iterator
from ._recipe import (EpochTable, check_callbacks, recipe_callbacks, validation_split,
                      warn_if_short)

logger = logging.getLogger(__name__)

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
#: SGD's momentum unless one is given (the original's, :data:`skcgcnn._defaults.MOMENTUM`).
DEFAULT_MOMENTUM = MOMENTUM


# -- shared behaviour ---------------------------------------------------------------
class _CGCNNMixin(_InputChecks):
    """What CGCNNRegressor and CGCNNClassifier share."""

    _classification = False

    # `device` may be "auto": skorch reads self.device in many places (initialize,
    # infer, get_loss, the scoring callbacks' cached predictions), so fit, predict and
    # those entry points run with the resolved value; the parameter stays as given.
    @contextlib.contextmanager
    def _resolved_device(self):
        given = self.__dict__.get("device")
        self.__dict__["device"] = resolve_device(given)
        try:
            yield
        finally:
            self.__dict__["device"] = given

    def initialize(self):
        with self._resolved_device():
            return super().initialize()

    def infer(self, x, **fit_params):
        if isinstance(x, dict) and "sample_weight" in x:  # for the loss, not the module
            x = {key: value for key, value in x.items() if key != "sample_weight"}
        with self._resolved_device(), autocast(self._precision, self.device):
            y_pred = super().infer(x, **fit_params)
        if isinstance(y_pred, torch.Tensor) and y_pred.dtype == torch.bfloat16:
            y_pred = y_pred.float()  # the loss, and what predict returns, in float32
        return y_pred

    @property
    def _precision(self):  # estimators pickled before issue 16 have no `precision`
        return self.__dict__.get("precision", "float32")

    def get_iterator(self, dataset, training=False):
        """skorch's ``get_iterator``; with ``batch_on_device`` (by default on CUDA) the
        batches are cut on the device from arrays moved there once
        (:mod:`skcgcnn.estimators._device_batches`), else skorch's ``DataLoader`` with
        ``collate_graphs``."""
        with self._resolved_device():
            if training and _distributed.state(self) is not None:
                # several processes: this one's shares of the global batches
                # (skcgcnn.estimators._distributed.shard_rows), on the device or not
                return _distributed.train_iterator(self, dataset)
            iterator = device_iterator(self, dataset, training)
        return super().get_iterator(dataset, training) if iterator is None else iterator

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self._weighted_loss(super().get_loss, y_pred, y_true, X, training)

    # -- several processes (torchrun): skcgcnn.estimators._distributed ------------------
    def train_step_single(self, batch, **fit_params):
        """skorch's, through the DistributedDataParallel module when training with
        several processes (validation and prediction use the plain module)."""
        parallel = _distributed.state(self)
        if parallel is None:
            return super().train_step_single(batch, **fit_params)
        plain = self.__dict__["module_"]
        self.__dict__["module_"] = parallel.ddp
        try:
            return super().train_step_single(batch, **fit_params)
        finally:
            self.__dict__["module_"] = plain

    def train_step(self, batch, **fit_params):
        """skorch's; with several processes the loss recorded is the global batch's."""
        step = super().train_step(batch, **fit_params)
        if _distributed.state(self) is not None:
            step["loss"] = _distributed.global_loss(step["loss"])
        return step

    def _weighted_loss(self, loss, y_pred, y_true, X, training):
        """``loss(y_pred, y_true, X=X, training=training)``; when the batch carries sample
        weights (normalised to mean 1 over the fit's rows), the mean over the batch of
        each crystal's loss times its weight.  Training with several processes, this
        process's part of the global batch's loss
        (:func:`~skcgcnn.estimators._distributed.shared_loss`)."""
        parallel = _distributed.state(self) if training else None
        if parallel is None:
            return self._batch_loss(loss, y_pred, y_true, X, training)
        value = self._batch_loss(loss, y_pred, y_true, X, training) if len(y_pred) else None
        return _distributed.shared_loss(parallel, value, y_pred, X)

    def _batch_loss(self, loss, y_pred, y_true, X, training):
        weights = X.get("sample_weight") if isinstance(X, dict) else None
        with self._resolved_device():
            if weights is None:
                return loss(y_pred, y_true, X=X, training=training)
            criterion = self.criterion_
            if not hasattr(criterion, "reduction"):
                raise ValueError(f"sample_weight needs a criterion with a 'reduction' "
                                 f"argument (as torch's losses); {type(criterion).__name__} "
                                 "has none")
            reduction, criterion.reduction = criterion.reduction, "none"
            try:
                per_value = loss(y_pred, y_true, X=X, training=training)
            finally:
                criterion.reduction = reduction
        per_crystal = per_value.reshape(y_pred.shape[0], -1).mean(dim=1)
        # the batch carries the weight of each atom's crystal: one per crystal back
        weights = weights.to(per_crystal.device, per_crystal.dtype)
        crystal_idx = X["crystal_idx"].to(per_crystal.device)
        weights = torch.zeros_like(per_crystal).scatter(0, crystal_idx, weights)
        return (per_crystal * weights).mean()

    def __sklearn_tags__(self):
        """X is a GraphCollection, not a 2-D array: scikit-learn's data-driven estimator
        checks cannot feed it (see tests/test_sklearn_checks.py)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    def _record_batch_size(self, batch: Any, training: bool) -> None:
        """The batch's crystals (skorch counted its atoms, its inputs being per atom),
        of the global batch when several processes train: they weigh its loss in the
        epoch's mean loss."""
        parallel = _distributed.state(self)
        if training and parallel is not None and parallel.global_batch is not None:
            crystals = parallel.global_batch[0]
        elif isinstance(batch, (tuple, list)) and isinstance(batch[0], dict) \
                and "crystal_idx" in batch[0]:
            crystals = len(batch[1])
        else:
            return
        self.history.record_batch(f"{'train' if training else 'valid'}_batch_size",
                                  int(crystals))

    # -- resuming (skorch's LoadInitState, skcgcnn.estimators.LoadTrainingState) ----
    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; at ``on_train_begin`` the ``LoadInitState`` callbacks
        run first, so that the learning-rate scheduler and the scoring callbacks (which
        come before the user's callbacks) find the restored history, and ``fit`` knows
        how many epochs it restored."""
        if method_name == "on_batch_end":
            self._record_batch_size(cb_kwargs.get("batch"), cb_kwargs.get("training"))
        elif method_name == "on_epoch_begin":
            adjust_threads()  # from the CPU other processes took in the last epoch
            if self.__dict__.pop("_check_length", False):  # the first epoch of fit
                warn_if_short(self, cb_kwargs.get("dataset_train"))
        if method_name != "on_train_begin":
            out = super().notify(method_name, **cb_kwargs)
            if method_name == "on_epoch_begin":
                _finetune.scale_scheduled_lr(self)  # init_lr_factor under OneCycleLR
            return out
        from skorch.callbacks import LoadInitState

        check_callbacks(self, has_validation=bool(self._validation_split()))

        before = self.history
        for _, cb in self.callbacks_:
            if isinstance(cb, LoadInitState):
                cb.on_train_begin(self, **cb_kwargs)
        self._restored_epochs = len(self.history) if self.history is not before else None
        return super().notify(method_name, **cb_kwargs)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's ``fit_loop``; in ``fit``, after a checkpoint's history of k epochs
        was restored when training began, it trains the ``max_epochs - k`` epochs left
        (``partial_fit`` keeps skorch's meaning: ``max_epochs`` more)."""
        restored = self.__dict__.pop("_restored_epochs", None)
        if epochs is None and restored is not None and self.__dict__.get("_in_fit"):
            epochs = max(self.max_epochs - restored, 0)
            if epochs == 0:
                logger.info("the restored history holds %d epochs, max_epochs is %d: "
                            "nothing left to train", restored, self.max_epochs)
            else:
                logger.info("resumed after epoch %d: training epochs %d-%d", restored,
                            restored + 1, self.max_epochs)
        with self._resolved_device():
            _distributed.init_from_env(self.device)
            settings = cpu_settings(self.device)
        with _distributed.data_parallel(self), settings:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def forward_iter(self, X, training=False, device="cpu"):
        """skorch's ``forward_iter``, with the CPU settings of :mod:`skcgcnn._cpu`
        (threads no more than the free cores, malloc keeping freed memory) while it
        runs."""
        with self._resolved_device():
            settings = cpu_settings(self.device)
        with settings:
            yield from super().forward_iter(X, training=training, device=device)

    def get_default_callbacks(self):
        """skorch's, with ``print_log`` an :class:`~skcgcnn.estimators.EpochTable` (the
        epoch table on stderr, coloured only on a terminal), then the recipe's:
        ``lr_scheduler`` (from ``lr_schedule``) and ``early_stopping`` (with
        ``early_stopping=True``)."""
        callbacks = [(name, EpochTable() if name == "print_log" else cb)
                     for name, cb in super().get_default_callbacks()]
        return callbacks + recipe_callbacks(self)

    # -- the validation split of early_stopping ----------------------------------------
    def _validation_split(self):
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) \
            else None
        parallel = _distributed.state(self)
        if seed is None and parallel is not None:  # the same split in every process
            seed = parallel.seed
        return validation_split(self, seed)

    def get_split_datasets(self, X, y=None, **fit_params):
        """skorch's, with the internal split of ``early_stopping=True`` (skorch's
        ``ValidSplit(validation_fraction)``) when ``train_split`` is None."""
        given = self.__dict__["train_split"]
        self.__dict__["train_split"] = self._validation_split()
        try:
            return super().get_split_datasets(X, y, **fit_params)
        finally:
            self.__dict__["train_split"] = given

    # -- skorch hooks ----------------------------------------------------------------
    def get_dataset(self, dataset, y=None):
        if isinstance(dataset, torch.utils.data.Dataset):
            return dataset
        weighted = self.__dict__.get("_sample_weight")  # (X, weights) during fit
        weights = weighted[1] if weighted is not None and weighted[0] is dataset else None
        return GraphDataset(self._check_X(dataset), y, sample_weight=weights,
                            reduce=self._reduces_atoms())

    def _reduces_atoms(self) -> bool:
        """Batches of one atom per class of equivalent atoms (exact, and 2.2x fewer
        atoms on MP crystals; skcgcnn.graph._orbits) with ``reduce_atoms``: where the
        network can weigh atoms (skcgcnn's CGCNN with the fused kernel), and not while
        several processes train (their batch norms take no weights)."""
        reduce = self.__dict__.get("reduce_atoms", True)  # pickled before it existed
        if not isinstance(reduce, (bool, np.bool_)):
            raise ValueError(f"reduce_atoms must be True or False, got {reduce!r}")
        module = self.__dict__.get("module_")
        return bool(reduce) and isinstance(module, CGCNN) and module.weighs_atoms \
            and not _distributed.is_distributed() \
            and "atom_weight" in inspect.signature(module.forward).parameters

    # -- sample weights --------------------------------------------------------------
    def _take_sample_weight(self, X: GraphCollection, y: np.ndarray, sample_weight: Any):
        """``(X, y, weights)`` for a weighted fit: rows of weight 0 left out (they would
        still move the batch-norm statistics), the other weights divided by their mean;
        ``weights`` is None when they are all equal (the unweighted fit, exactly)."""
        if sample_weight is None:
            return X, y, None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, one weight per crystal; got shape "
                             f"{w.shape}")
        if len(w) != len(X) and X.input_positions is not None and len(w) == X.n_inputs:
            w = w[X.input_positions]  # one per input structure, as y: keep those with a graph
        if len(w) != len(X):
            raise ValueError(f"sample_weight has {len(w)} values but X has {len(X)} "
                             "crystals; give one weight per crystal")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"sample_weight must be finite and >= 0; rows {rows} are not "
                             f"({w[rows].tolist()})")
        keep = w > 0
        if not keep.any():
            raise ValueError("every sample_weight is 0: there is nothing to fit")
        if not keep.all():
            logger.info("leaving out the %d row(s) of sample_weight 0", int((~keep).sum()))
            rows = np.flatnonzero(keep)
            X, y, w = X[rows], y[rows], w[rows]
        if np.ptp(w) == 0:
            return X, y, None
        return X, y, (w / w.mean()).astype(np.float32)

    def _fit_weighted(self, X, y, weights, **fit_params):
        """``_fit_with_seed``, with ``weights`` (or None) given to the training data."""
        if "sample_weight" in fit_params:
            raise TypeError("sample_weight was given twice")
        from ._card import ids_digest

        # for the model card: which crystals the model was fitted on
        self.n_train_ = len(X)
        self.training_ids_digest_ = ids_digest(X.ids)
        self.__dict__["_sample_weight"] = (X, weights) if weights is not None else None
        try:
            return self._fit_with_seed(X, y, **fit_params)
        finally:
            self.__dict__.pop("_sample_weight", None)

    # -- skorch's save_params / load_params ----------------------------------------------
    def save_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    use_safetensors=False, f_fitted=None, **kwargs):
        """skorch's ``save_params``, and with ``f_fitted`` a JSON file of what ``fit``
        learned besides the weights (module arguments from the data, graph settings,
        target scaling or class labels), which ``load_params(f_fitted=...)`` needs to
        give a fitted estimator.  :func:`skcgcnn.estimators.save_model` writes all of it
        into one file."""
        if not _distributed.is_writer():  # several processes: process 0 writes
            return
        if f_fitted is not None:
            from . import _fitted

            self._require_fitted()
            _fitted.write(self, f_fitted)
        if any(f is not None for f in (f_params, f_optimizer, f_criterion, f_history,
                                       *kwargs.values())):
            super().save_params(f_params=f_params, f_optimizer=f_optimizer,
                                f_criterion=f_criterion, f_history=f_history,
                                use_safetensors=use_safetensors, **kwargs)

    def load_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    checkpoint=None, use_safetensors=False, f_fitted=None, **kwargs):
        """skorch's ``load_params``; ``f_fitted`` (written by ``save_params(f_fitted=...)``)
        first restores what ``fit`` learned and builds the module to its shape.

        Raises
        ------
        NotFittedError
            When the estimator was never fitted and no ``f_fitted`` is given: the weights
            alone do not make a model that can predict.
        """
        if f_fitted is not None:
            from . import _fitted

            state = _fitted.read(f_fitted)
            if self.__sklearn_is_fitted__():
                if dict(state["module_kwargs"]) != dict(self.module_kwargs_):
                    raise ValueError(
                        f"the f_fitted file describes another network ({state['module_kwargs']}) "
                        f"than this fitted {type(self).__name__} ({self.module_kwargs_})")
                _fitted.apply(self, state)
            else:
                _fitted.apply(self, state)
                self.initialize()
        elif not hasattr(self, "module_kwargs_"):
            raise NotFittedError(
                f"{type(self).__name__}.load_params: this estimator was not fitted, and the "
                "saved weights alone leave it unable to predict (the target scaling, class "
                "labels and data-dependent module arguments are not in them). Save with "
                "save_params(..., f_fitted='fitted.json') and load with load_params(..., "
                "f_fitted='fitted.json'), or use skcgcnn.save_model / skcgcnn.load_model")
        return super().load_params(f_params=f_params, f_optimizer=f_optimizer,
                                   f_criterion=f_criterion, f_history=f_history,
                                   checkpoint=checkpoint, use_safetensors=use_safetensors,
                                   **kwargs)

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        kwargs.update(getattr(self, "module_kwargs_", {}))
        self.module_ = self.initialized_instance(self.module, kwargs)
        _finetune.copy_weights(self)  # init: the pretrained body, freeze
        return self

    def _set_training(self, training=True):
        """skorch's; the layers of ``freeze`` stay in eval mode (their batch norms'
        running statistics do not move)."""
        super()._set_training(training)
        if training:
            _finetune.keep_frozen_in_eval(self)

    def torch_compile(self, module, name):
        """skorch's ``compile=True``: the CGCNN module's convolutions are compiled in place
        (:func:`skcgcnn._compile.compile_convolutions`, ``compile__*`` passed on), so
        the module and its ``state_dict`` keys stay as they are and a failed compile
        falls back to eager execution.  The criterion (an elementwise loss) is left as
        it is."""
        if not self.compile or name != "module":
            return module
        from .._compile import compile_convolutions

        return compile_convolutions(module, **self.get_params_for("compile"))

    def initialize_optimizer(self, *args, **kwargs):
        chosen = self.optimizer
        if isinstance(chosen, str):
            if chosen.lower() not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch "
                                 f"optimizer class, got {chosen!r}")
            chosen = OPTIMIZERS[chosen.lower()]
        accepts_momentum = "momentum" in inspect.signature(chosen).parameters
        named = _finetune.learnable(self, self.get_all_learnable_params())
        opt_args, opt_kwargs = self.get_params_for_optimizer("optimizer", named)
        opt_args = _finetune.param_groups(self, opt_args, opt_kwargs.get("lr", self.lr))
        if not accepts_momentum and opt_kwargs.get("momentum") == DEFAULT_MOMENTUM:
            opt_kwargs.pop("momentum")  # the SGD default does not apply to Adam & co.
        self.optimizer_ = chosen(*opt_args, **opt_kwargs)
        return self

    def _fit_with_seed(self, X, y, **fit_params):
        seed = _seed_of(self.random_state)
        self.__dict__["_in_fit"] = True  # fit, not partial_fit: see fit_loop
        self.__dict__["_check_length"] = True  # see notify
        try:
            with self._resolved_device():
                # under torchrun: the process group (and this process's GPU) before
                # the module is built on the device
                _distributed.init_from_env(self.device)
                if seed is None:
                    return super().fit(X, y, **fit_params)
                devices = [torch.cuda.current_device()] if (
                    str(self.device).startswith("cuda") and torch.cuda.is_available()) \
                    else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    return super().fit(X, y, **fit_params)
        finally:
            self.__dict__.pop("_in_fit", None)
            self.__dict__.pop("_check_length", None)

    # -- learned representations (used by skcgcnn.explain) ----------------------------
    def check_graphs(self, X: Any) -> GraphCollection:
        """``X`` checked for this fitted model: a GraphCollection with an atom-feature
        table, built with the graph settings of ``fit``.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        TypeError, ValueError
            For anything else, or graphs built otherwise than the fit's.
        """
        self._require_fitted()
        X = self._check_X(X)
        self._check_compatible(X)
        return X

    def embed_atoms(self, X: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """The learned atom feature vectors of the crystals of ``X``, batch by batch.

        The module runs in eval mode without gradients, ``batch_size`` crystals at a
        time, in the order of ``X``.  ``X`` is checked (:meth:`check_graphs`) before
        the first batch.

        Yields
        ------
        atoms : Tensor of shape (n_atoms, atom_fea_len)
            The output of the last convolution, on the module's device.
        crystal_idx : Tensor of shape (n_atoms,), int64
            The crystal of the batch each atom belongs to.
        n_crystals : int
            Crystals in the batch.
        """
        X = self.check_graphs(X)
        return self._embed_atoms(X)

    def _embed_atoms(self, X: GraphCollection):
        module = self.module_.eval()
        device = next(module.parameters()).device
        with torch.no_grad():
            for start in range(0, len(X), self.batch_size):
                rows = np.arange(start, min(start + self.batch_size, len(X)))
                t = graphs_to_tensors(X, rows, device)
                atoms = module.atom_embeddings(t["atom_fea"], t["nbr_idx"], t["nbr_dist"])
                yield atoms, t["crystal_idx"], len(rows)

    def predict_crystal_features(self, X: GraphCollection) -> np.ndarray:
        """Pooled crystal feature vectors (input of ``conv_to_fc``), shape (n, F)."""
        from ..model import mean_pool

        out = [mean_pool(atoms, crystal_idx, n).cpu().numpy()
               for atoms, crystal_idx, n in self.embed_atoms(X)]
        return np.concatenate(out) if out else np.zeros((0, 0))
