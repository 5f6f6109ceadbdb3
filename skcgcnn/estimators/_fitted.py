"""What ``fit`` learns besides the weights, as a JSON file for skorch's save/load_params.

skorch's ``save_params`` writes the module, optimizer, criterion and history; a CGCNN
estimator also needs what ``fit`` took from the data: the module arguments (atom-feature
length, outputs, distance expansion), the graph settings, and the target scaling or the
class labels.  ``save_params(f_fitted=...)`` writes them, ``load_params(f_fitted=...)``
restores them (and rebuilds the module to their shape) before loading the weights.
JSON holds numbers, strings and lists only: reading it runs no code.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from sklearn.preprocessing import LabelEncoder, StandardScaler

FORMAT = "skcgcnn-fitted-state"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def fitted_state(net: Any) -> dict:
    """The attributes ``fit`` learned from the data, as plain values."""
    state = {"format": FORMAT, "version": 1, "estimator": type(net).__name__,
             "module_kwargs": _plain(dict(net.module_kwargs_)),
             "graph_params": _plain(dict(getattr(net, "graph_params_", None) or {}))}
    if hasattr(net, "target_scaler_"):
        scaler = net.target_scaler_
        state.update(target_mean=_plain(scaler.mean_), target_scale=_plain(scaler.scale_),
                     n_outputs=int(net.n_outputs_), y_ndim=int(net.y_ndim_))
    if hasattr(net, "label_encoder_"):
        classes = net.label_encoder_.classes_
        state.update(classes=_plain(classes), classes_dtype=classes.dtype.str)
    return state


def write(net: Any, f: Any) -> None:
    """Write :func:`fitted_state` of ``net`` to a path or a text file object."""
    text = json.dumps(fitted_state(net), indent=1)
    if isinstance(f, (str, os.PathLike)):
        with open(f, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        f.write(text)


def read(f: Any) -> dict:
    """The state written by :func:`write` (a path or a text file object)."""
    if isinstance(f, (str, os.PathLike)):
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        where = repr(os.fspath(f))
    else:
        text, where = f.read(), "the f_fitted file"
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not a fitted-state file written by "
                         "save_params(f_fitted=...): it is not JSON") from exc
    if not (isinstance(state, dict) and state.get("format") == FORMAT):
        raise ValueError(f"{where} is not a fitted-state file written by "
                         "save_params(f_fitted=...)")
    return state


def apply(net: Any, state: dict) -> None:
    """Set the fitted attributes of ``net`` from ``state``."""
    if state["estimator"] != type(net).__name__:
        raise ValueError(f"the fitted state is a {state['estimator']}'s; load it into a "
                         f"{state['estimator']}, not a {type(net).__name__}")
    net.module_kwargs_ = dict(state["module_kwargs"])
    if state.get("graph_params"):
        net.graph_params_ = dict(state["graph_params"])
    if "target_mean" in state:
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(state["target_mean"], dtype=np.float64)
        scaler.scale_ = np.asarray(state["target_scale"], dtype=np.float64)
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        scaler.n_samples_seen_ = 0
        net.target_scaler_ = scaler
        net.n_outputs_ = int(state["n_outputs"])
        net.y_ndim_ = int(state["y_ndim"])
    if "classes" in state:
        classes = np.asarray(state["classes"], dtype=np.dtype(state["classes_dtype"]))
        net.label_encoder_ = LabelEncoder().fit(classes)
