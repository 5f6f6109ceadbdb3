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
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import LabelEncoder, StandardScaler

from ._distributed import is_writer

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


class _FittedParams:
    """skorch's ``save_params`` / ``load_params`` with ``f_fitted``: what ``fit`` learned
    besides the weights, in the file of :func:`write`."""

    def save_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    use_safetensors=False, f_fitted=None, **kwargs):
        """skorch's ``save_params``, and with ``f_fitted`` a JSON file of what ``fit``
        learned besides the weights (module arguments from the data, graph settings,
        target scaling or class labels), which ``load_params(f_fitted=...)`` needs to
        give a fitted estimator.  :func:`skcgcnn.estimators.save_model` writes all of it
        into one file."""
        if not is_writer():  # several processes: process 0 writes
            return
        if f_fitted is not None:
            self._require_fitted()
            write(self, f_fitted)
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
            state = read(f_fitted)
            if self.__sklearn_is_fitted__():
                if dict(state["module_kwargs"]) != dict(self.module_kwargs_):
                    raise ValueError(
                        f"the f_fitted file describes another network ({state['module_kwargs']}) "
                        f"than this fitted {type(self).__name__} ({self.module_kwargs_})")
                apply(self, state)
            else:
                apply(self, state)
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
