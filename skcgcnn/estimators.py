"""CGCNNRegressor and CGCNNClassifier: the CGCNN network behind skorch.

The estimators are thin skorch subclasses.  What they add to skorch:

* a dataset and collate function for :class:`~skcgcnn.graph.GraphCollection` inputs
  (X must come from :class:`~skcgcnn.transformers.StructureGraphTransformer`);
* module parameters that come from the data (atom-feature length, distance
  expansion, number of outputs), set when the module is initialised;
* target standardisation (regression) fitted on the rows passed to ``fit`` only,
  with ``predict`` in the original units;
* the original ``main.py`` defaults: SGD (lr 0.01, momentum 0.9), batch 256, the
  learning rate multiplied by 0.1 at epoch 100, 30 epochs;
* ``random_state`` without touching the global random generators;
* loading of the original CGCNN checkpoints and a safe save format of their own.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import pickle
import re
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.multiclass import type_of_target
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import LRScheduler
from skorch.dataset import Dataset as SkorchDataset

from .graph import GraphCollection
from .model import CGCNN

logger = logging.getLogger(__name__)

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
DEFAULT_MOMENTUM = 0.9

__all__ = ["CGCNNRegressor", "CGCNNClassifier", "GraphDataset", "collate_graphs",
           "make_cgcnn_pipeline", "load_cgcnn_checkpoint", "save_model", "load_model"]


# -- data ---------------------------------------------------------------------------
class _Row:
    """One crystal of a collection, as a dataset item (collated by ``collate_graphs``)."""

    __slots__ = ("graphs", "row")

    def __init__(self, graphs: GraphCollection, row: int):
        self.graphs = graphs
        self.row = row


class GraphDataset(SkorchDataset):
    """A skorch Dataset over a :class:`GraphCollection` and optional targets.

    Items are light references to crystals; :func:`collate_graphs` builds a batch
    from them with vectorised numpy (no Python loop over atoms).
    """

    def __init__(self, X: GraphCollection, y: Any = None):
        self.X = X
        self.y = y
        self._len = len(X)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        yi = 0.0 if self.y is None else self.y[i]
        return _Row(self.X, int(i)), yi


def collate_graphs(batch: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Collate ``(crystal, target)`` items into the module's inputs and the targets.

    Returns
    -------
    X : dict with ``atom_fea`` (N, n_features) float32, ``nbr_idx`` (N, M) int64
        (-1 = no neighbour), ``nbr_dist`` (N, M) float32, ``crystal_idx`` (N,) int64
    y : Tensor of shape (B, ...) -- the targets of the batch
    """
    graphs = batch[0][0].graphs
    rows = np.fromiter((item[0].row for item in batch), dtype=np.int64, count=len(batch))
    arrays = graphs.collate(rows)
    X = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
    X["nbr_idx"] = X["nbr_idx"].long()
    y = torch.as_tensor(np.asarray([item[1] for item in batch]))
    return X, y


def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


def _resolve_device(device: str | None) -> str | None:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _seed_of(random_state: Any) -> int | None:
    if random_state is None:
        return None
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2 ** 31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2 ** 31 - 1))
    raise ValueError(f"random_state must be None, an int or a numpy RandomState/Generator, "
                     f"got {random_state!r}")


_GRAPH_KEYS = ("radius", "max_num_nbr", "dmin", "step")


def _atom_features_digest(table: Any) -> str:
    """A digest of an atom-feature table's values (equal tables, equal digests)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(table.table, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(table.available, dtype=bool).tobytes())
    return digest.hexdigest()


def _graph_params_of(X: GraphCollection) -> dict:
    """The settings a collection's graphs were built with, as the model records them."""
    params = {"radius": float(X.radius), "max_num_nbr": int(X.max_num_nbr),
              "dmin": float(X.dmin), "step": float(X.step)}
    if X.atom_features is not None:
        params["atom_features"] = str(getattr(X.atom_features, "name", "?"))
        params["atom_features_digest"] = _atom_features_digest(X.atom_features)
    return params


def _setting(key: str, params: dict) -> str:
    if key == "atom_features_digest":  # the values differ: show the tables' names
        return repr(params.get("atom_features", "?"))
    return repr(params[key])


# -- shared behaviour ---------------------------------------------------------------
class _CGCNNMixin:
    """What CGCNNRegressor and CGCNNClassifier share."""

    _classification = False

    # `device` may be "auto": skorch reads self.device in many places (initialize,
    # infer, get_loss, the scoring callbacks' cached predictions), so fit, predict and
    # those entry points run with the resolved value; the parameter stays as given.
    @contextlib.contextmanager
    def _resolved_device(self):
        given = self.__dict__.get("device")
        self.__dict__["device"] = _resolve_device(given)
        try:
            yield
        finally:
            self.__dict__["device"] = given

    def initialize(self):
        with self._resolved_device():
            return super().initialize()

    def infer(self, x, **fit_params):
        with self._resolved_device():
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        with self._resolved_device():
            return super().get_loss(y_pred, y_true, X=X, training=training)

    # -- resuming (skorch's LoadInitState, skcgcnn.training_state.LoadTrainingState) ----
    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; at ``on_train_begin`` the ``LoadInitState`` callbacks
        run first, so that the learning-rate scheduler and the scoring callbacks (which
        come before the user's callbacks) find the restored history, and ``fit`` knows
        how many epochs it restored."""
        if method_name != "on_train_begin":
            return super().notify(method_name, **cb_kwargs)
        from skorch.callbacks import LoadInitState

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
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def get_default_callbacks(self):
        return list(super().get_default_callbacks()) + [
            ("lr_scheduler", LRScheduler(policy=torch.optim.lr_scheduler.MultiStepLR,
                                         milestones=[100], gamma=0.1)),
        ]

    # -- validation ----------------------------------------------------------------
    def _check_X(self, X: Any, all_skipped_ok: bool = False) -> GraphCollection:
        """X as a GraphCollection; with ``all_skipped_ok`` (prediction), also the output of
        a transformer that skipped every structure it was given (NaN rows follow)."""
        if isinstance(X, GraphCollection):
            if X.atom_features is None:
                raise ValueError("X has no atom-feature table; build it with "
                                 "StructureGraphTransformer")
            all_skipped = X.input_positions is not None and X.n_inputs > 0
            if len(X) == 0 and not (all_skipped_ok and all_skipped):
                raise ValueError(
                    f"Found array with 0 sample(s): X holds no crystal graphs, but "
                    f"{type(self).__name__} needs at least one (with on_error='skip', "
                    "every structure may have been left out: see the transformer's errors_)")
            return X
        raise TypeError(
            f"{type(self).__name__} takes the GraphCollection made by "
            f"StructureGraphTransformer, not {type(X).__name__}; put "
            "StructureGraphTransformer() before it in a Pipeline, or call "
            "StructureGraphTransformer().fit_transform(structures) first")

    def _check_y(self, X: GraphCollection, y: Any) -> np.ndarray:
        if y is None:
            raise ValueError(f"{type(self).__name__}.fit needs targets y")
        y = np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"y must be an array with one row per crystal, got {y!r}")
        if y.shape[0] != len(X) and X.input_positions is not None \
                and y.shape[0] == X.n_inputs:
            # a Pipeline whose StructureGraphTransformer skipped structures: y still has
            # a row per input structure; keep the rows of the structures with a graph
            logger.info("fitting on the %d of %d rows whose structures have a graph "
                        "(StructureGraphTransformer skipped positions %s)", len(X),
                        X.n_inputs, X.skipped_positions[:10].tolist())
            return y[X.input_positions]
        if y.shape[0] != len(X):
            raise ValueError(f"y has {y.shape[0]} rows but X has {len(X)} crystals; they "
                             "must match (with on_error='skip', keep y[transformer."
                             "kept_indices_])")
        return y

    @staticmethod
    def _align(X: Any, values: np.ndarray) -> np.ndarray:
        """One row per input of the transformer that made X: NaN rows for the structures
        it skipped (``X.input_positions``); ``values`` unchanged when none were."""
        positions = getattr(X, "input_positions", None)
        if positions is None:
            return values
        out = np.full((X.n_inputs,) + values.shape[1:], np.nan)
        out[positions] = values
        return out

    def _refuse_skipped(self, X: Any, what: str) -> None:
        """A clear error for methods that cannot give skipped structures a NaN row."""
        skipped = X.skipped_positions if isinstance(X, GraphCollection) else []
        if len(skipped):
            raise ValueError(
                f"{type(self).__name__}.{what} cannot answer for the {len(skipped)} "
                f"structure(s) that StructureGraphTransformer(on_error='skip') left out "
                f"(input positions {skipped[:10].tolist()}); remove them from the input "
                "(see the transformer's errors_), or use predict_proba / the regressor's "
                "predict, which give NaN rows for them")

    def _data_kwargs(self, X: GraphCollection, n_out: int) -> dict:
        return {"orig_atom_fea_len": X.atom_features.n_features, "n_out": n_out,
                "classification": self._classification, "radius": X.radius,
                "dmin": X.dmin, "step": X.step}

    def _check_compatible(self, X: GraphCollection) -> None:
        """Refuse graphs built with other settings than the fit's (predictions would move
        without notice: a model fitted on 12 neighbours sums over 12)."""
        kw = self.module_kwargs_
        if X.atom_features.n_features != kw["orig_atom_fea_len"]:
            raise ValueError(
                f"X has {X.atom_features.n_features} atom features but the model was "
                f"fitted on {kw['orig_atom_fea_len']}; build X with the same atom_features")
        fitted = getattr(self, "graph_params_", None)
        if fitted is None:  # models saved before graph_params_ existed
            fitted = {"radius": kw["radius"], "dmin": kw["dmin"], "step": kw["step"]}
        given = _graph_params_of(X)
        # tables are compared by their values (a name such as "cgcnn" and the path of
        # the same atom_init.json are the same features)
        differ = [key for key in (*_GRAPH_KEYS, "atom_features_digest")
                  if key in fitted and key in given and given[key] != fitted[key]]
        if not differ:
            return
        listing = "; ".join(
            f"{'atom features' if key == 'atom_features_digest' else key}: X "
            f"{_setting(key, given)}, model {_setting(key, fitted)}" for key in differ)
        settings = ", ".join(f"{key}={fitted[key]!r}" for key in _GRAPH_KEYS if key in fitted)
        raise ValueError(
            f"X was built with other graph settings than the model was fitted on ({listing}); "
            "the predictions would not mean anything. Build X with "
            f"StructureGraphTransformer({settings}) and the model's atom features (in a "
            "Pipeline the fitted transformer does this), or fit the model again on graphs "
            "built with the new settings")

    def _check_predict_X(self, X: Any) -> Any:
        """X for prediction: graphs (checked against the fit), or a torch Dataset as
        skorch passes during training (e.g. to EpochScoring with cached predictions)."""
        if isinstance(X, torch.utils.data.Dataset):
            return X
        X = self._check_X(X, all_skipped_ok=True)
        self._check_compatible(X)
        return X

    def _require_fitted(self) -> None:
        if not hasattr(self, "module_kwargs_") or not getattr(self, "initialized_", False):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit first")

    # -- skorch hooks ----------------------------------------------------------------
    def get_dataset(self, dataset, y=None):
        if isinstance(dataset, torch.utils.data.Dataset):
            return dataset
        return GraphDataset(self._check_X(dataset), y)

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        kwargs.update(getattr(self, "module_kwargs_", {}))
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def initialize_optimizer(self, *args, **kwargs):
        chosen = self.optimizer
        if isinstance(chosen, str):
            if chosen.lower() not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch "
                                 f"optimizer class, got {chosen!r}")
            chosen = OPTIMIZERS[chosen.lower()]
        accepts_momentum = "momentum" in inspect.signature(chosen).parameters
        named = self.get_all_learnable_params()
        opt_args, opt_kwargs = self.get_params_for_optimizer("optimizer", named)
        if not accepts_momentum and opt_kwargs.get("momentum") == DEFAULT_MOMENTUM:
            opt_kwargs.pop("momentum")  # the SGD default does not apply to Adam & co.
        self.optimizer_ = chosen(*opt_args, **opt_kwargs)
        return self

    def _fit_with_seed(self, X, y, **fit_params):
        if _resolve_device(self.device) in ("cpu", None):
            from ._malloc import keep_freed_memory

            keep_freed_memory()
        seed = _seed_of(self.random_state)
        self.__dict__["_in_fit"] = True  # fit, not partial_fit: see fit_loop
        try:
            with self._resolved_device():
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

    def predict_crystal_features(self, X: GraphCollection) -> np.ndarray:
        """Pooled crystal feature vectors (input of ``conv_to_fc``), shape (n, F)."""
        from .model import mean_pool

        self._require_fitted()
        X = self._check_X(X)
        self._check_compatible(X)
        out = []
        self.module_.eval()
        with torch.no_grad():
            for start in range(0, len(X), self.batch_size):
                b = X.collate(np.arange(start, min(start + self.batch_size, len(X))))
                t = {k: torch.as_tensor(v).to(_resolve_device(self.device)) for k, v in b.items()}
                t["nbr_idx"] = t["nbr_idx"].long()
                atoms = self.module_.atom_embeddings(t["atom_fea"], t["nbr_idx"],
                                                     t["nbr_dist"])
                out.append(mean_pool(atoms, t["crystal_idx"]).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


_COMMON_DOC = """
    Parameters
    ----------
    module : torch module class, default=skcgcnn.model.CGCNN
        Its data-dependent arguments (``orig_atom_fea_len``, ``n_out``, ``radius``,
        ``dmin``, ``step``) are set from the training data; the others are tunable
        as ``module__atom_fea_len`` (64), ``module__n_conv`` (3), ``module__h_fea_len``
        (128), ``module__n_h`` (1) and ``module__conv`` ("gated" or "simple").
    max_epochs : int, default=30
    lr : float, default=0.01
    batch_size : int, default=256
    optimizer : torch optimizer class or {"sgd", "adam", "adamw"}, default=SGD
        SGD gets ``optimizer__momentum=0.9``; for optimizers without momentum that
        default is dropped.
    train_split : callable or None, default=None
        skorch's validation split (e.g. ``skorch.dataset.ValidSplit(0.2)``); None
        trains on every row passed to ``fit``.
    random_state : int, RandomState, Generator or None, default=None
        Seeds weight initialisation, shuffling and dropout inside ``fit`` (the global
        torch generator is restored afterwards).
    device : {"cpu", "cuda", "auto"} or None, default="cpu"
        "auto" takes the GPU when one is available.
    verbose : int, default=0
        skorch's epoch table when 1.
    **kwargs
        Any other skorch ``NeuralNet`` argument (``callbacks``, ``iterator_train__*``,
        ``optimizer__weight_decay``, ...).  The learning-rate schedule is the callback
        ``lr_scheduler`` (MultiStepLR, milestones [100], gamma 0.1), tunable as
        ``callbacks__lr_scheduler__milestones``.
"""


class CGCNNRegressor(_CGCNNMixin, NeuralNetRegressor):
    __doc__ = ("""CGCNN regression as a scikit-learn estimator (a skorch NeuralNetRegressor).

    X is the :class:`~skcgcnn.graph.GraphCollection` made by
    :class:`~skcgcnn.transformers.StructureGraphTransformer`; y is 1-D or 2-D
    (several targets).  Targets are standardised with a scikit-learn
    ``StandardScaler`` fitted on the rows passed to ``fit`` (the original CGCNN fitted
    its normaliser on a sample that included the test set); the loss is the MSE in
    standardised units and ``predict`` answers in the original units.
""" + _COMMON_DOC + """
    Attributes
    ----------
    module_ : CGCNN
    target_scaler_ : sklearn.preprocessing.StandardScaler
    module_kwargs_ : dict
        Module arguments taken from the data.
    graph_params_ : dict
        ``radius``, ``max_num_nbr``, ``dmin``, ``step`` and the atom features of the
        graphs seen by ``fit``; ``predict`` refuses graphs built otherwise.
    n_outputs_ : int
    history_ : skorch History (also ``history``)

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import StructureGraphTransformer, CGCNNRegressor
    >>> pipe = make_pipeline(StructureGraphTransformer(), CGCNNRegressor(max_epochs=50))
    >>> pipe.fit(structures, formation_energies)          # doctest: +SKIP
    >>> pipe.predict(new_structures)                       # doctest: +SKIP

    References
    ----------
    T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018).
    """)

    def __init__(self, module=CGCNN, *, criterion=torch.nn.MSELoss,
                 optimizer=torch.optim.SGD, lr=0.01, max_epochs=30, batch_size=256,
                 train_split=None, iterator_train__shuffle=True,
                 iterator_train__collate_fn=collate_graphs,
                 iterator_valid__collate_fn=collate_graphs,
                 optimizer__momentum=DEFAULT_MOMENTUM, random_state=None, device="cpu",
                 verbose=0, **kwargs):
        super().__init__(module, criterion=criterion, optimizer=optimizer, lr=lr,
                         max_epochs=max_epochs, batch_size=batch_size,
                         train_split=train_split,
                         iterator_train__shuffle=iterator_train__shuffle,
                         iterator_train__collate_fn=iterator_train__collate_fn,
                         iterator_valid__collate_fn=iterator_valid__collate_fn,
                         optimizer__momentum=optimizer__momentum, device=device,
                         verbose=verbose, **kwargs)
        self.random_state = random_state

    def fit(self, X, y, **fit_params):
        """Fit on graphs X and targets y of shape (n,) or (n, n_targets)."""
        X = self._check_X(X)
        y = self._check_y(X, y).astype(np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        bad = ~np.isfinite(y)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(y), -1).any(axis=1))
            raise ValueError(
                f"y has {rows.size} row(s) with NaN or infinite targets (first: "
                f"{rows[:5].tolist()}, ids {[X.ids[r] for r in rows[:5]]}); drop them "
                "before fitting")
        self.y_ndim_ = y.ndim
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self.target_scaler_ = StandardScaler().fit(y2)
        self.module_kwargs_ = self._data_kwargs(X, self.n_outputs_)
        self.graph_params_ = _graph_params_of(X)
        return self._fit_with_seed(X, y2.astype(np.float32), **fit_params)

    def _target_tensors(self, device):
        mean = torch.as_tensor(self.target_scaler_.mean_, dtype=torch.float32, device=device)
        scale = torch.as_tensor(self.target_scaler_.scale_, dtype=torch.float32,
                                device=device)
        return mean, scale

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = torch.as_tensor(y_true, device=y_pred.device, dtype=y_pred.dtype)
        mean, scale = self._target_tensors(y_pred.device)
        y_true = (y_true.reshape(y_pred.shape) - mean) / scale
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def predict(self, X):
        """Predictions in the original units: shape (n,) for 1-D y, else (n, n_targets).

        When X comes from a StructureGraphTransformer that skipped structures
        (``on_error="skip"``), there is one row per structure of its input, NaN for
        the skipped ones, so that a Pipeline's predictions stay aligned with its input.
        """
        self._require_fitted()
        X = self._check_predict_X(X)
        if len(X) == 0 and getattr(X, "input_positions", None) is not None:
            out = np.zeros((0, self.n_outputs_))  # every structure was skipped
        else:
            with self._resolved_device():
                scaled = super().predict_proba(X).reshape(len(X), -1)
            out = self.target_scaler_.inverse_transform(scaled.astype(np.float64))
        out = self._align(X, out)
        return out.ravel() if self.y_ndim_ == 1 else out

    def score(self, X, y, sample_weight=None):
        from sklearn.metrics import r2_score

        self._refuse_skipped(X, "score")
        return r2_score(y, self.predict(X), sample_weight=sample_weight)


class CGCNNClassifier(_CGCNNMixin, NeuralNetClassifier):
    __doc__ = ("""CGCNN classification as a scikit-learn estimator (a skorch NeuralNetClassifier).

    The network ends in log-softmax with dropout before the hidden layers, as the
    original; the loss is the negative log-likelihood and ``predict_proba`` returns
    probabilities.  Labels may be any values (encoded with a ``LabelEncoder``); a
    continuous target (``type_of_target(y) == "continuous"``, e.g. formation energies)
    is refused: use :class:`CGCNNRegressor` or turn it into classes first.
""" + _COMMON_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    module_ : CGCNN
    label_encoder_ : sklearn.preprocessing.LabelEncoder
    graph_params_ : dict
        The graph settings of ``fit``, as for :class:`CGCNNRegressor`.
    """)

    _classification = True

    def __init__(self, module=CGCNN, *, criterion=torch.nn.NLLLoss,
                 optimizer=torch.optim.SGD, lr=0.01, max_epochs=30, batch_size=256,
                 train_split=None, iterator_train__shuffle=True,
                 iterator_train__collate_fn=collate_graphs,
                 iterator_valid__collate_fn=collate_graphs,
                 optimizer__momentum=DEFAULT_MOMENTUM, predict_nonlinearity=_exp,
                 random_state=None, device="cpu", verbose=0, **kwargs):
        super().__init__(module, criterion=criterion, optimizer=optimizer, lr=lr,
                         max_epochs=max_epochs, batch_size=batch_size,
                         train_split=train_split,
                         iterator_train__shuffle=iterator_train__shuffle,
                         iterator_train__collate_fn=iterator_train__collate_fn,
                         iterator_valid__collate_fn=iterator_valid__collate_fn,
                         optimizer__momentum=optimizer__momentum,
                         predict_nonlinearity=predict_nonlinearity, device=device,
                         verbose=verbose, **kwargs)
        self.random_state = random_state

    @property
    def classes_(self):
        if hasattr(self, "label_encoder_"):
            return self.label_encoder_.classes_
        raise AttributeError("CGCNNClassifier has no classes_ before fit")

    def fit(self, X, y, **fit_params):
        X = self._check_X(X)
        y = self._check_y(X, y)
        if y.ndim != 1:
            raise ValueError(f"CGCNNClassifier takes 1-D labels, got shape {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y has NaN or infinite labels; drop those rows first")
        kind = type_of_target(y, input_name="y")
        if kind == "continuous":
            row = int(np.flatnonzero(y != np.round(y))[0])
            raise ValueError(
                f"CGCNNClassifier needs class labels but y is continuous (row {row}, id "
                f"{X.ids[row]!r}: {y[row].item()!r}; {len(np.unique(y))} distinct values); use "
                "CGCNNRegressor for a continuous target, or turn it into classes first "
                "(e.g. y < threshold)")
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"CGCNNClassifier needs binary or multiclass labels, but y is "
                             f"of type {kind!r} (sklearn.utils.multiclass.type_of_target)")
        self.label_encoder_ = LabelEncoder().fit(y)
        if len(self.label_encoder_.classes_) < 2:
            raise ValueError(f"classification needs at least two classes; y only holds "
                             f"{self.label_encoder_.classes_.tolist()}")
        self.module_kwargs_ = self._data_kwargs(X, len(self.label_encoder_.classes_))
        self.graph_params_ = _graph_params_of(X)
        encoded = self.label_encoder_.transform(y).astype(np.int64)
        return self._fit_with_seed(X, encoded, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion applied to the module's output as it is.

        The CGCNN module returns log-probabilities (log-softmax, as the original),
        which is what ``NLLLoss`` takes.  skorch's ``NeuralNetClassifier.get_loss``
        expects probabilities and takes their log before ``NLLLoss``: done on
        log-probabilities that gives NaN losses and a model that learns backwards, so
        this goes straight to ``NeuralNet.get_loss``.  (``CrossEntropyLoss`` gives the
        same loss here, as log-softmax of log-probabilities changes nothing.)
        """
        with self._resolved_device():
            return NeuralNet.get_loss(self, y_pred, y_true, X=X, training=training)

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes): the exp of the module's
        log-probabilities (``predict_nonlinearity``).

        When X comes from a StructureGraphTransformer that skipped structures
        (``on_error="skip"``), there is one row per structure of its input, NaN for
        the skipped ones.
        """
        self._require_fitted()
        X = self._check_predict_X(X)
        if len(X) == 0 and getattr(X, "input_positions", None) is not None:
            proba = np.zeros((0, len(self.classes_)), dtype=np.float32)
        else:
            with self._resolved_device():
                proba = super().predict_proba(X)
        return self._align(X, proba)

    def predict(self, X):
        """Class labels; as encoded integers when skorch scores a dataset during fit
        (its targets are the encoded labels too).

        Raises
        ------
        ValueError
            When X comes from a StructureGraphTransformer that skipped structures: a
            label cannot be NaN, so rather than return fewer rows than the input (which
            would shift every label after a skipped structure) this refuses; use
            ``predict_proba`` (NaN rows) or remove the bad structures.
        """
        self._refuse_skipped(X, "predict")
        encoded = self.predict_proba(X).argmax(axis=1)
        if isinstance(X, torch.utils.data.Dataset):
            return encoded
        return self.label_encoder_.inverse_transform(encoded)

    def score(self, X, y, sample_weight=None):
        from sklearn.metrics import accuracy_score

        self._refuse_skipped(X, "score")
        return accuracy_score(y, self.predict(X), sample_weight=sample_weight)


# -- pipelines ----------------------------------------------------------------------
def make_cgcnn_pipeline(task: str = "regression", graph_params: dict | None = None,
                        memory: Any = None, **estimator_params: Any) -> Pipeline:
    """``Pipeline([("graph", StructureGraphTransformer(**graph_params)), ("cgcnn", ...)])``.

    Parameters
    ----------
    task : {"regression", "classification"}
    graph_params : dict, optional
        Arguments of :class:`StructureGraphTransformer`.
    memory : str or joblib.Memory, optional
        Cache of the fitted transformer (graphs are not rebuilt for the same structures).
    **estimator_params
        Arguments of :class:`CGCNNRegressor` / :class:`CGCNNClassifier`.
    """
    from .transformers import StructureGraphTransformer

    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    est = (CGCNNRegressor if task == "regression" else CGCNNClassifier)(**estimator_params)
    return Pipeline([("graph", StructureGraphTransformer(**(graph_params or {}))),
                     ("cgcnn", est)], memory=memory)


# -- original checkpoints -----------------------------------------------------------
class CheckpointError(ValueError):
    """A file that is not a usable CGCNN checkpoint."""


def _legacy_globals() -> list:
    """What the original checkpoints pickle besides tensors, for ``safe_globals``."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    allowed: list = [argparse.Namespace, np.dtype, (scalar, "numpy.core.multiarray.scalar")]
    for name in ("Float64DType", "Float32DType", "Int64DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


# torch.save's legacy format (the original checkpoints) opens with a pickle of the
# magic number 0x1950a86a20f9469cfc6c: PROTO n, [FRAME 8 bytes,] LONG1 10 bytes
_LEGACY_TORCH = re.compile(rb"\x80[\x02-\x05](\x95.{8})?\x8a\x0a"
                           rb"\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", re.DOTALL)


def is_torch_file(path: str | os.PathLike) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or torch's legacy format."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(32)
    return zipfile.is_zipfile(path) or bool(_LEGACY_TORCH.match(head))


def _torch_load(path: str, trusted: bool) -> Any:
    if not is_torch_file(path):
        raise CheckpointError(f"{path!r} is not a torch checkpoint (neither a zip archive "
                              "nor a pickle stream)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path!r} is not a readable torch checkpoint: "
                                  f"{str(exc).splitlines()[0]}") from exc
        if not trusted:
            raise CheckpointError(
                f"{path!r} holds pickled Python objects beyond tensors (the original "
                "CGCNN stores an argparse Namespace and numpy scalars); they can run code "
                "when loaded. If you trust the file, pass trusted=True") from exc
    except Exception as exc:  # torch raises many kinds for a file that is no checkpoint
        raise CheckpointError(f"{path!r} is not a readable torch checkpoint: "
                              f"{type(exc).__name__}: {exc}") from exc
    # trusted: allow exactly the legacy objects, still through the weights-only loader
    with torch.serialization.safe_globals(_legacy_globals()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path!r} holds pickled objects other than those of the original CGCNN "
                f"checkpoints: {str(exc).splitlines()[-3:]}") from exc


def _graph_params_from_args(args: dict) -> dict:
    params = {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}
    for key in params:
        if key in args:
            params[key] = type(params[key])(args[key])
    # the public main.py: data_options = [root_dir, max_num_nbr, radius, dmin, step]
    options = list(args.get("data_options") or [])[1:]
    numeric = []
    for value in options:
        try:
            numeric.append(float(value))
        except (TypeError, ValueError):
            numeric = []
            break
    for key, value in zip(("max_num_nbr", "radius", "dmin", "step"), numeric):
        params[key] = int(value) if key == "max_num_nbr" else value
    return params


def load_cgcnn_checkpoint(path: str | os.PathLike, trusted: bool = False,
                          task: str | None = None, atom_features: Any = "cgcnn",
                          device: str = "cpu") -> Pipeline:
    """A fitted Pipeline from an original CGCNN ``.pth.tar`` checkpoint.

    The checkpoint's ``args`` give the task and layer sizes (and graph parameters
    where present; else the original defaults: radius 8 Å, 12 neighbours, dmin 0,
    step 0.2); its ``normalizer`` gives the target mean and standard deviation.

    Parameters
    ----------
    path : str or path-like
    trusted : bool, default=False
        The file is read with ``torch.load(weights_only=True)``.  Checkpoints that
        also hold pickled Python objects (an argparse Namespace, numpy scalars) are
        refused unless ``trusted=True``, which allows those types (and no others)
        in the weights-only loader.
    task : {"regression", "classification"}, optional
        When given, a checkpoint of the other kind is refused.
    atom_features : default="cgcnn"
        The atom-feature table the checkpoint was trained with (its length must match).
    device : str, default="cpu"

    Returns
    -------
    Pipeline
        ``[("graph", StructureGraphTransformer), ("cgcnn", CGCNNRegressor or CGCNNClassifier)]``
    """
    from .atom_features import get_atom_features
    from .transformers import StructureGraphTransformer

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    ckpt = _torch_load(path, trusted)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "args" not in ckpt:
        raise CheckpointError(f"{path!r} is not an original CGCNN checkpoint (it needs "
                              "'state_dict' and 'args'); for skcgcnn models use load_model")
    args = ckpt["args"]
    args = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    kind = args.get("task", "regression")
    if task is not None and kind != task:
        raise CheckpointError(f"{path!r} is a {kind} checkpoint, not {task}")
    state = ckpt["state_dict"]
    if "embedding.weight" not in state:
        raise CheckpointError(f"{path!r}: its state_dict is not a CGCNN network")
    table = get_atom_features(atom_features)
    n_in = state["embedding.weight"].shape[1]
    if table.n_features != n_in:
        raise CheckpointError(
            f"{path!r} expects {n_in} atom features but atom-feature set {table.name!r} "
            f"has {table.n_features}; pass the table it was trained with")
    graph_params = _graph_params_from_args(args)
    n_conv = len({k.split(".")[1] for k in state if k.startswith("convs.")})
    n_h = 1 + len({k.split(".")[1] for k in state if k.startswith("fcs.")})
    module_params = {"atom_fea_len": int(state["embedding.weight"].shape[0]),
                     "n_conv": n_conv, "h_fea_len": int(state["conv_to_fc.weight"].shape[0]),
                     "n_h": n_h}
    n_out = int(state["fc_out.weight"].shape[0])
    transformer = StructureGraphTransformer(atom_features=atom_features, **graph_params).fit()
    cls = CGCNNClassifier if kind == "classification" else CGCNNRegressor
    est = cls(device=device, **{f"module__{k}": v for k, v in module_params.items()})
    est.module_kwargs_ = {"orig_atom_fea_len": n_in, "n_out": n_out,
                          "classification": kind == "classification",
                          "radius": graph_params["radius"], "dmin": graph_params["dmin"],
                          "step": graph_params["step"]}
    est.graph_params_ = {**graph_params, "atom_features": table.name,
                         "atom_features_digest": _atom_features_digest(table)}
    if kind == "classification":
        est.label_encoder_ = LabelEncoder().fit(np.arange(n_out))
    else:
        norm = ckpt.get("normalizer", {"mean": 0.0, "std": 1.0})
        scaler = StandardScaler()
        scaler.mean_ = np.full(n_out, float(norm["mean"]))
        scaler.scale_ = np.full(n_out, float(norm["std"]))
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = n_out
        scaler.n_samples_seen_ = 0
        est.target_scaler_ = scaler
        est.n_outputs_ = n_out
        est.y_ndim_ = 1 if n_out == 1 else 2
    est.initialize()
    try:
        est.module_.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path!r}: its weights do not fit a CGCNN of "
                              f"{module_params}: {exc}") from exc
    est.module_.to(_resolve_device(est.device))
    est.module_.eval()
    return Pipeline([("graph", transformer), ("cgcnn", est)])


# -- skcgcnn's own models -----------------------------------------------------------
_FORMAT = "skcgcnn-model"
_SIMPLE = (bool, int, float, str, type(None))


def _simple_params(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, _SIMPLE) or (isinstance(value, (list, tuple)) and all(
                isinstance(v, _SIMPLE) for v in value)):
            out[key] = value
        elif isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            name = value.__name__.lower()
            if name in OPTIMIZERS:
                out[key] = name
    return out


def save_model(model: Any, path: str | os.PathLike) -> None:
    """Save a fitted CGCNN Pipeline (or bare estimator) in a tensors-only file.

    The file holds the network weights, target scaling, class labels, the
    transformer's parameters, the atom-feature table and the estimator's simple
    parameters (numbers, strings); it loads with ``torch.load(weights_only=True)``
    through :func:`load_model`.  Callbacks and other Python objects are not saved:
    pickle the estimator (``pickle``/``joblib``) when you need them.
    """
    if isinstance(model, Pipeline):
        transformer, est = model.steps[0][1], model.steps[-1][1]
    else:
        transformer, est = None, model
    if not isinstance(est, (CGCNNRegressor, CGCNNClassifier)):
        raise TypeError("save_model takes a CGCNNRegressor/CGCNNClassifier or a Pipeline "
                        "ending in one")
    est._require_fitted()
    table = getattr(transformer, "atom_features_", None)
    payload = {
        "format": _FORMAT,
        "version": 1,
        "kind": "classification" if isinstance(est, CGCNNClassifier) else "regression",
        "estimator_params": _simple_params(est.get_params(deep=False)),
        "module_kwargs": dict(est.module_kwargs_),
        "graph_params": dict(getattr(est, "graph_params_", None) or {}),
        "state_dict": {k: v.detach().cpu() for k, v in est.module_.state_dict().items()},
        "transformer_params": None if transformer is None else _simple_params(
            {k: v for k, v in transformer.get_params().items() if k != "atom_features"}),
    }
    if table is not None:
        payload["atom_table"] = torch.from_numpy(table.table)
        payload["atom_available"] = torch.from_numpy(table.available)
        payload["atom_names"] = list(table.feature_names)
        payload["atom_table_name"] = table.name
    if isinstance(est, CGCNNRegressor):
        payload["target_mean"] = torch.from_numpy(est.target_scaler_.mean_)
        payload["target_scale"] = torch.from_numpy(est.target_scaler_.scale_)
        payload["y_ndim"] = int(est.y_ndim_)
    else:
        classes = est.label_encoder_.classes_
        payload["classes"] = classes.tolist()
    torch.save(payload, os.fspath(path))


def load_model(path: str | os.PathLike, trusted: bool = False, device: str = "cpu") -> Any:
    """Load a model saved by :func:`save_model`, or an original CGCNN ``.pth.tar``.

    Returns a fitted Pipeline (or estimator, when a bare estimator was saved).
    """
    from .atom_features import AtomFeatureTable
    from .transformers import StructureGraphTransformer

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if not is_torch_file(path):
        raise CheckpointError(f"{path!r} is not a model file: skcgcnn models and original "
                              "CGCNN checkpoints are torch files")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path!r} is not a model file: "
                                  f"{str(exc).splitlines()[0]}") from exc
        payload = None  # an original checkpoint with pickled objects: see trusted=
    except Exception as exc:
        raise CheckpointError(f"{path!r} is not a model file: {type(exc).__name__}: "
                              f"{exc}") from exc
    if not (isinstance(payload, dict) and payload.get("format") == _FORMAT):
        return load_cgcnn_checkpoint(path, trusted=trusted, device=device)
    kind = payload["kind"]
    cls = CGCNNClassifier if kind == "classification" else CGCNNRegressor
    params = dict(payload["estimator_params"])
    params["device"] = device
    est = cls(**params)
    est.module_kwargs_ = dict(payload["module_kwargs"])
    if kind == "classification":
        est.label_encoder_ = LabelEncoder().fit(np.asarray(payload["classes"]))
    else:
        scaler = StandardScaler()
        scaler.mean_ = payload["target_mean"].numpy()
        scaler.scale_ = payload["target_scale"].numpy()
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        scaler.n_samples_seen_ = 0
        est.target_scaler_ = scaler
        est.n_outputs_ = len(scaler.mean_)
        est.y_ndim_ = payload["y_ndim"]
    if payload.get("graph_params"):
        est.graph_params_ = dict(payload["graph_params"])
    est.initialize()
    est.module_.load_state_dict(payload["state_dict"])
    est.module_.to(_resolve_device(est.device))
    if payload.get("transformer_params") is None:
        return est
    table = AtomFeatureTable(payload["atom_table_name"], payload["atom_table"].numpy(),
                             payload["atom_available"].numpy(), payload["atom_names"])
    if not payload.get("graph_params"):  # saved before graph_params were: its transformer's
        tp = payload["transformer_params"]
        est.graph_params_ = {key: tp[key] for key in _GRAPH_KEYS if key in tp}
        est.graph_params_.update(atom_features=table.name,
                                 atom_features_digest=_atom_features_digest(table))
    transformer = StructureGraphTransformer(atom_features=table,
                                            **payload["transformer_params"]).fit()
    return Pipeline([("graph", transformer), ("cgcnn", est)])
