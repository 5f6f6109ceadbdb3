"""Persistence: skcgcnn's own tensors-only model files and the original CGCNN checkpoints.

:func:`save_model` / :func:`load_model` write and read a file that loads with
``torch.load(weights_only=True)``; :func:`load_cgcnn_checkpoint` reads the original
program's ``.pth.tar`` files (their pickled extras only with ``trusted=True``).
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

from .._defaults import GRAPH_PARAMS, resolve_device
from ._base import OPTIMIZERS
from ._card import build_model_card, format_model_card, summarize_model_card
from ._checks import _GRAPH_KEYS, _atom_features_digest
from ._classifier import CGCNNClassifier
from ._distributed import is_writer
from ._domain import domain_payload, restore_domain
from ._ensemble import CGCNNEnsembleRegressor
from ._pipeline import split_pipeline
from ._regressor import CGCNNRegressor

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "is_torch_file", "load_cgcnn_checkpoint", "save_model",
           "load_model"]


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
    params = dict(GRAPH_PARAMS)
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
    from ..atom_features import get_atom_features
    from ..transformers import StructureGraphTransformer

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
    est.module_.to(resolve_device(est.device))
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


def _estimator_payload(est: Any) -> dict:
    """What a fitted CGCNNRegressor / CGCNNClassifier needs to predict, as tensors and
    plain values."""
    payload = {
        "kind": "classification" if isinstance(est, CGCNNClassifier) else "regression",
        "estimator_params": _simple_params(est.get_params(deep=False)),
        "module_kwargs": dict(est.module_kwargs_),
        "graph_params": dict(getattr(est, "graph_params_", None) or {}),
        "state_dict": {k: v.detach().cpu() for k, v in est.module_.state_dict().items()},
    }
    if isinstance(est, CGCNNRegressor):
        payload["target_mean"] = torch.from_numpy(est.target_scaler_.mean_)
        payload["target_scale"] = torch.from_numpy(est.target_scaler_.scale_)
        payload["y_ndim"] = int(est.y_ndim_)
        if getattr(est, "domain_", None) is not None:
            payload["domain"] = domain_payload(est.domain_)
    else:
        classes = est.label_encoder_.classes_
        payload["classes"] = classes.tolist()
    return payload


def save_model(model: Any, path: str | os.PathLike, card: dict | None = None) -> None:
    """Save a fitted CGCNN Pipeline (or bare estimator) in a tensors-only file.

    The file holds the network weights, target scaling, class labels, the
    transformer's parameters, the atom-feature table and the estimator's simple
    parameters (numbers, strings); it loads with ``torch.load(weights_only=True)``
    through :func:`load_model`.  A :class:`CGCNNEnsembleRegressor` is saved as one
    model holding every member.  Callbacks and other Python objects are not saved:
    pickle the estimator (``pickle``/``joblib``) when you need them.

    A fitted applicability domain (``domain_``) is saved with its training embeddings.
    The file also holds a model card (:mod:`skcgcnn.estimators._card`): graph settings,
    atom-feature table name and digest, number and id digest of the training crystals,
    last-epoch losses, the recipe, package versions, and the entries of ``card``.

    Parameters
    ----------
    model : fitted Pipeline, CGCNNRegressor, CGCNNClassifier or CGCNNEnsembleRegressor
    path : str or path-like
    card : dict, optional
        Entries to add to the model card, plain values only: e.g.
        ``{"target_names": ["E_form"], "target_units": ["eV/atom"],
        "test_metrics": {"mae": 0.05}, "description": "..."}``.
    """
    transformer, est = split_pipeline(model)
    if not isinstance(est, (CGCNNRegressor, CGCNNClassifier, CGCNNEnsembleRegressor)):
        raise TypeError("save_model takes a CGCNNRegressor/CGCNNClassifier/"
                        "CGCNNEnsembleRegressor or a Pipeline ending in one")
    est._require_fitted()
    if not is_writer():  # several processes (torchrun): process 0 writes the file
        return
    table = getattr(transformer, "atom_features_", None)
    if isinstance(est, CGCNNEnsembleRegressor):
        payload = {"kind": "regression-ensemble",
                   "estimator_params": _simple_params(est.get_params(deep=False)),
                   "graph_params": dict(est.graph_params_),
                   "seeds": [int(seed) for seed in est.seeds_],
                   "members": [_estimator_payload(member) for member in est.estimators_]}
        if getattr(est, "domain_", None) is not None:
            payload["domain"] = domain_payload(est.domain_)
    else:
        payload = _estimator_payload(est)
    payload.update({
        "format": _FORMAT,
        "version": 1,
        "card": build_model_card(est, payload["estimator_params"], card),
        "transformer_params": None if transformer is None else _simple_params(
            {k: v for k, v in transformer.get_params().items() if k != "atom_features"}),
    })
    if table is not None:
        payload["atom_table"] = torch.from_numpy(table.table)
        payload["atom_available"] = torch.from_numpy(table.available)
        payload["atom_names"] = list(table.feature_names)
        payload["atom_table_name"] = table.name
    torch.save(payload, os.fspath(path))


def _estimator_from_payload(payload: dict, device: str) -> Any:
    """The fitted CGCNNRegressor / CGCNNClassifier of :func:`_estimator_payload`."""
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
    est.module_.to(resolve_device(est.device))
    restore_domain(est, payload)
    return est


def _ensemble_from_payload(payload: dict, device: str) -> CGCNNEnsembleRegressor:
    """The fitted CGCNNEnsembleRegressor saved by :func:`save_model`."""
    params = dict(payload["estimator_params"])
    params["device"] = device
    ens = CGCNNEnsembleRegressor(**params)
    ens.estimators_ = [_estimator_from_payload(member, device)
                       for member in payload["members"]]
    ens.seeds_ = np.asarray(payload["seeds"])
    ens.n_outputs_ = ens.estimators_[0].n_outputs_
    ens.graph_params_ = dict(payload["graph_params"])
    restore_domain(ens, payload)
    return ens


def load_model(path: str | os.PathLike, trusted: bool = False, device: str = "cpu") -> Any:
    """Load a model saved by :func:`save_model`, or an original CGCNN ``.pth.tar``.

    Returns a fitted Pipeline (or estimator, when a bare estimator was saved).  The
    estimator's ``model_card_`` is the card saved with it (files saved before cards
    were have none); its summary is logged at INFO level and the whole card at DEBUG, and
    :func:`~skcgcnn.estimators.format_model_card` renders it.
    """
    from ..atom_features import AtomFeatureTable
    from ..transformers import StructureGraphTransformer

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
    if payload["kind"] == "regression-ensemble":
        est = _ensemble_from_payload(payload, device)
    else:
        est = _estimator_from_payload(payload, device)
    if payload.get("card"):
        est.model_card_ = payload["card"]
        # its essentials at INFO, the whole card (a long one: splits, recorded
        # predictions) at DEBUG
        logger.info("loaded %s: %s", path, "; ".join(summarize_model_card(payload["card"])))
        logger.debug("model card of %s\n%s", path, format_model_card(payload["card"]))
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
