"""What every CGCNN estimator is: the skorch glue around the CGCNN module.

``CGCNNRegressor.fit(X, y)`` (and the classifier's) checks X and y, fits the target
scaling (or the labels), takes the module arguments from the data (``_checks``), and
calls ``_fit_weighted`` (``_weights``), which calls :meth:`_CGCNNMixin._fit_with_seed`:
torch seeded from ``random_state`` around skorch's ``NeuralNet.fit``.  skorch then calls
back into the hooks below, in this order:

1. ``initialize`` -> ``initialize_module`` (the network, with ``init``'s weights:
   ``_finetune``), ``initialize_optimizer``, ``torch_compile``;
2. ``fit_loop`` (CPU settings; distributed: ``_distributed``; resume: the epochs left,
   ``_resume``) -> ``get_split_datasets`` (the ``early_stopping`` split) ->
   ``get_dataset`` (a :class:`~skcgcnn.estimators.GraphDataset`);
3. ``notify("on_train_begin")`` (callbacks checked; ``LoadInitState`` first:
   ``_resume``), then per epoch ``get_iterator`` (``_distributed``,
   ``_device_batches``), ``train_step`` -> ``infer`` (``_device_batches``,
   ``_weights``) -> ``get_loss`` (``_weighted_loss``: ``_distributed``, ``_weights``).

Each concern's hooks live in their own mixin, which :class:`_CGCNNMixin` lists in the
order skorch's calls pass through them.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any

import numpy as np
import torch

from .._cpu import adjust_threads, cpu_settings
from .._defaults import MOMENTUM, resolve_device
from ..model import CGCNN
from . import _distributed, _finetune
from ._checks import _InputChecks, _seed_of
from ._data import GraphDataset
from ._device_batches import _DeviceBatchHooks
from ._distributed import _DistributedHooks
from ._embeddings import _Embeddings
from ._fitted import _FittedParams
from ._recipe import (EpochTable, check_callbacks, recipe_callbacks, validation_split,
                      warn_if_short)
from ._resume import _ResumeHooks
from ._weights import _SampleWeights

logger = logging.getLogger(__name__)

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
#: SGD's momentum unless one is given (the original's, :data:`skcgcnn._defaults.MOMENTUM`).
DEFAULT_MOMENTUM = MOMENTUM


class _CGCNNMixin(_DistributedHooks, _ResumeHooks, _DeviceBatchHooks, _SampleWeights,
                  _FittedParams, _Embeddings, _InputChecks):
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

    def _fit_with_seed(self, X, y, **fit_params):
        """skorch's ``fit``, torch seeded from ``random_state`` without touching the
        global generator (``fork_rng``); under torchrun the process group (and this
        process's GPU) is started before the module is built on the device."""
        seed = _seed_of(self.random_state)
        self.__dict__["_in_fit"] = True  # fit, not partial_fit: see fit_loop
        self.__dict__["_check_length"] = True  # see notify
        try:
            with self._resolved_device():
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

    def initialize(self):
        with self._resolved_device():
            return super().initialize()

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's ``fit_loop``, with the CPU settings of :mod:`skcgcnn._cpu` (threads
        no more than the free cores, malloc keeping freed memory) while it runs."""
        with self._resolved_device():
            settings = cpu_settings(self.device)
        with settings:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def forward_iter(self, X, training=False, device="cpu"):
        """skorch's ``forward_iter``, with the CPU settings of :mod:`skcgcnn._cpu`."""
        with self._resolved_device():
            settings = cpu_settings(self.device)
        with settings:
            yield from super().forward_iter(X, training=training, device=device)

    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``: the crystals of each batch recorded, the CPU threads
        adjusted and a short fit warned about at each epoch's start, the callbacks
        checked before training begins, and ``init_lr_factor`` applied to the
        one-cycle schedule's rates once the epoch's callbacks began."""
        if method_name == "on_batch_end":
            self._record_batch_size(cb_kwargs.get("batch"), cb_kwargs.get("training"))
        elif method_name == "on_epoch_begin":
            adjust_threads()  # from the CPU other processes took in the last epoch
            if self.__dict__.pop("_check_length", False):  # the first epoch of fit
                warn_if_short(self, cb_kwargs.get("dataset_train"))
        elif method_name == "on_train_begin":
            check_callbacks(self, has_validation=bool(self._validation_split()))
        out = super().notify(method_name, **cb_kwargs)
        if method_name == "on_epoch_begin":
            _finetune.scale_scheduled_lr(self)  # init_lr_factor under OneCycleLR
        return out

    def _record_batch_size(self, batch: Any, training: bool) -> None:
        """The batch's crystals (skorch counted its atoms, its inputs being per atom),
        of the global batch when several processes train: they weigh its loss in the
        epoch's mean loss."""
        crystals = self._batch_crystals(batch, training)
        if crystals is None and isinstance(batch, (tuple, list)) \
                and isinstance(batch[0], dict) and "crystal_idx" in batch[0]:
            crystals = len(batch[1])
        if crystals is not None:
            self.history.record_batch(f"{'train' if training else 'valid'}_batch_size",
                                      int(crystals))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self._weighted_loss(super().get_loss, y_pred, y_true, X, training)

    def __sklearn_tags__(self):
        """X is a GraphCollection, not a 2-D array: scikit-learn's data-driven estimator
        checks cannot feed it (see tests/test_sklearn_checks.py)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

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

    def get_dataset(self, dataset, y=None):
        if isinstance(dataset, torch.utils.data.Dataset):
            return dataset
        return GraphDataset(self._check_X(dataset), y, sample_weight=self._weights_of(dataset),
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
