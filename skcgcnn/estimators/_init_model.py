"""``init=``: the fitted model that fine-tuning starts from, found and checked at ``fit``.

:func:`prepare` (called by the regressor's ``fit``) checks ``init``, ``freeze`` and
``init_lr_factor``, resolves ``init`` (:func:`resolve_init`), checks X against the
pretrained model's graphs and keeps its weights for
:func:`skcgcnn.estimators._finetune.copy_weights`.

A saved model's path or a pretrained model's name is loaded by
:data:`skcgcnn.estimators._loader.load_init`, which the ``skcgcnn.estimators`` package
sets: loading builds estimators (``_persistence``, ``skcgcnn.pretrained``), so the
modules that define them cannot import the loading code.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

from . import _loader
from ._base import _CGCNNMixin
from ._finetune import HEAD, _init_of
from ._split import split_pipeline

logger = logging.getLogger(__name__)

#: What ``freeze`` may be.
FREEZE = (None, "embedding", "conv")
#: Module arguments the new estimator decides (they set the head's shape or use, or how
#: the same network is computed: kernel).
_HEAD_ARGS = ("n_out", "classification", "pooling", "dropout", "kernel")

__all__ = ["FREEZE", "HEAD", "body_kwargs", "check_graphs", "clone_sharing_init", "prepare",
           "resolve_init"]


def _check_params(est: Any) -> None:
    name = type(est).__name__
    freeze = est.__dict__.get("freeze")
    if freeze not in FREEZE:
        raise ValueError(f"{name}(freeze={freeze!r}): use one of {list(FREEZE)}")
    factor = est.__dict__.get("init_lr_factor", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
            or not math.isfinite(factor) or factor < 0:
        raise ValueError(f"{name}(init_lr_factor={factor!r}): give a finite number >= 0 "
                         "(the pretrained body's learning rate is lr * init_lr_factor)")
    if freeze is not None and _init_of(est) is None:
        raise ValueError(f"{name}(freeze={freeze!r}) freezes pretrained layers: give the "
                         "fitted model to start from as init (an estimator or a path "
                         "saved with skcgcnn.save_model)")


def resolve_init(init: Any) -> Any:
    """The fitted estimator ``init`` names: itself, the last step of a fitted Pipeline,
    a pretrained model shipped with skcgcnn by name (:func:`skcgcnn.list_pretrained`),
    or the model saved at a path by :func:`skcgcnn.save_model`."""
    model = _loader.load_init(init) if isinstance(init, (str, os.PathLike)) else init
    model = split_pipeline(model)[1]
    if not isinstance(model, _CGCNNMixin):
        raise TypeError(f"init must be a fitted CGCNNRegressor or CGCNNClassifier (the "
                        f"path of one saved with skcgcnn.save_model, or the name of a "
                        f"pretrained model), not "
                        f"{type(model).__name__}")
    if not model.__sklearn_is_fitted__():
        raise ValueError(f"init: this {type(model).__name__} is not fitted; fit it first "
                         "(fine-tuning starts from its learned weights)")
    return model


def body_kwargs(pretrained: Any) -> dict:
    """The pretrained network's module arguments, less those of the head."""
    kwargs = dict(pretrained.get_params_for("module"))
    kwargs.update(pretrained.module_kwargs_)
    return {key: value for key, value in kwargs.items() if key not in _HEAD_ARGS}


def check_graphs(pretrained: Any, X: Any) -> None:
    """ValueError when X was built otherwise than the pretrained model's graphs."""
    try:
        pretrained._check_compatible(X)
    except ValueError as exc:
        settings = dict(getattr(pretrained, "graph_params_", {}))
        table = settings.pop("atom_features", None)
        settings.pop("atom_features_digest", None)
        args = ", ".join(f"{key}={value!r}" for key, value in settings.items())
        raise ValueError(
            f"init: X cannot be used to fine-tune the pretrained model: {exc} "
            f"To fine-tune, build X with StructureGraphTransformer({args}) and the "
            f"pretrained model's atom features ({table!r}), i.e. "
            "StructureGraphTransformer(**pretrained.graph_params_) with its table") from exc


def prepare(est: Any, X: Any, module_kwargs: dict) -> dict:
    """At ``fit``: the parameters checked and, with ``init``, the pretrained model
    loaded, X checked against its graphs, its weights kept for :func:`copy_weights`;
    returns ``module_kwargs`` with the pretrained body's arguments, which win over
    ``module__*``."""
    _check_params(est)
    est.__dict__.pop("_pretrained_state", None)
    init = _init_of(est)
    if init is None:
        return module_kwargs
    pretrained = resolve_init(init)
    check_graphs(pretrained, X)
    body = body_kwargs(pretrained)
    own = est.get_params_for("module")
    overridden = {key: own[key] for key in body if key in own and own[key] != body[key]}
    if overridden:
        logger.info("init: the pretrained network's %s replace module__%s",
                    {key: body[key] for key in overridden}, overridden)
    state = pretrained.module_.state_dict()
    est.__dict__["_pretrained_state"] = {key: value.detach().clone()
                                         for key, value in state.items()}
    return {**module_kwargs, **body}


def clone_sharing_init(est: Any, clone: Any) -> Any:
    """``clone()`` (scikit-learn's clone of ``est``) with a fitted ``init`` shared, not
    cloned: a clone of the pretrained model would be unfitted."""
    init = est.__dict__.get("init")
    if init is None or isinstance(init, (str, os.PathLike)):
        return clone()
    est.__dict__["init"] = None
    try:
        new = clone()
    finally:
        est.__dict__["init"] = init
    new.__dict__["init"] = init
    return new
