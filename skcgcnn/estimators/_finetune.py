"""Fine-tuning a fitted model: ``CGCNNRegressor(init=..., freeze=..., init_lr_factor=...)``.

``fit`` builds the network with the pretrained model's module arguments, copies its
weights in except the output head (``fc_out``, fresh for the new targets), freezes the
layers ``freeze`` names (no gradient, left out of the optimiser, and their batch norms
kept in eval mode so that their running statistics do not move) and trains the
pretrained body at ``lr * init_lr_factor`` while the head keeps ``lr``.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: What ``freeze`` may be.
FREEZE = (None, "embedding", "conv")
#: The output layer of :class:`skcgcnn.model.CGCNN`: freshly initialised for new targets.
HEAD = "fc_out"
#: Module arguments the new estimator decides (they set the head's shape or use, or how
#: the same network is computed: kernel).
_HEAD_ARGS = ("n_out", "classification", "pooling", "dropout", "kernel")


def _init_of(est: Any) -> Any:
    return est.__dict__.get("init")  # the classifier (and older pickles) have none


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
    from ..pretrained import is_pretrained_name, load_pretrained
    from ._pipeline import split_pipeline

    model = init
    if is_pretrained_name(init):
        model = load_pretrained(init)
    elif isinstance(init, (str, os.PathLike)):
        from ._persistence import load_model

        if not os.path.exists(init):
            from ..pretrained import list_pretrained

            raise FileNotFoundError(
                f"init={os.fspath(init)!r} is neither a file nor the name of a pretrained "
                f"model (shipped: {list_pretrained()}); give a path saved with "
                "skcgcnn.save_model, a fitted estimator or one of those names")
        model = load_model(init)
    model = split_pipeline(model)[1]
    from ._base import _CGCNNMixin

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


def _frozen_modules(est: Any, module: torch.nn.Module) -> list[torch.nn.Module]:
    freeze = est.__dict__.get("freeze")
    if freeze is None or _init_of(est) is None:
        return []
    frozen = [module.embedding]
    if freeze == "conv":
        frozen.extend(module.convs)
    return frozen


def copy_weights(est: Any) -> None:
    """After the module is built in ``fit``: the pretrained weights copied in except the
    head's, and the layers of ``freeze`` frozen."""
    state = est.__dict__.pop("_pretrained_state", None)
    if state is None:
        return
    module = est.module_
    body = {key: value for key, value in state.items() if not key.startswith(HEAD + ".")}
    try:
        missing, unexpected = module.load_state_dict(body, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"init: the pretrained weights do not fit this network: "
                         f"{str(exc).splitlines()[0]} (use the pretrained model's module "
                         "class)") from exc
    missing = [key for key in missing if not key.startswith(HEAD + ".")]
    if missing or unexpected:
        raise ValueError(f"init: the pretrained network has other layers than this one "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]}); use the "
                         "pretrained model's module class")
    for part in _frozen_modules(est, module):
        for param in part.parameters():
            param.requires_grad_(False)


def learnable(est: Any, named: Any) -> list:
    """The named parameters the optimiser gets: the frozen ones left out."""
    return [(name, param) for name, param in named if param.requires_grad]


def param_groups(est: Any, opt_args: tuple, lr: float) -> tuple:
    """With ``init``: each parameter group split into the head's (at its rate) and the
    pretrained body's, at ``init_lr_factor`` times it (the group keeps the factor as
    ``lr_factor``)."""
    if _init_of(est) is None or not opt_args:
        return opt_args
    factor = est.__dict__.get("init_lr_factor", 1.0)
    head = {id(param) for param in getattr(est.module_, HEAD).parameters()}
    groups = list(opt_args[0])
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    split = []
    for group in groups:
        params = list(group["params"])
        rest = {key: value for key, value in group.items() if key != "params"}
        own = [p for p in params if id(p) in head]
        body = [p for p in params if id(p) not in head]
        if own:
            split.append({**rest, "params": own})
        if body:
            split.append({**rest, "params": body, "lr": rest.get("lr", lr) * factor,
                          "lr_factor": factor})
    return (split, *opt_args[1:])


def scale_scheduled_lr(est: Any) -> None:
    """After the epoch's callbacks began: torch's ``OneCycleLR`` gives every group the
    same peak ``lr``; the body's groups get ``lr_factor`` times its rates (once)."""
    scheduler = getattr(dict(getattr(est, "callbacks_", [])).get("lr_scheduler"),
                        "lr_scheduler_", None)
    if not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        return
    for group in est.optimizer_.param_groups:
        factor = group.get("lr_factor", 1.0)
        # torch sets max_lr when it builds the schedule from its start (not on resuming)
        if factor == 1.0 or not math.isclose(group.get("max_lr", math.nan), est.lr):
            continue
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if key in group:
                group[key] *= factor


def keep_frozen_in_eval(est: Any) -> None:
    """In training mode, the frozen layers stay in eval mode: their batch norms use and
    keep their running statistics."""
    module = est.__dict__.get("module_")
    if module is None:
        return
    for part in _frozen_modules(est, module):
        part.eval()


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
