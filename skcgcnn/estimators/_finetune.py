"""Fine-tuning a fitted model, ``CGCNNRegressor(init=..., freeze=..., init_lr_factor=...)``:
the weights.

``fit`` builds the network with the pretrained model's module arguments
(:mod:`skcgcnn.estimators._init_model` finds the model and checks it), copies its
weights in except the output head (``fc_out``, fresh for the new targets), freezes the
layers ``freeze`` names (no gradient, left out of the optimiser, and their batch norms
kept in eval mode so that their running statistics do not move) and trains the
pretrained body at ``lr * init_lr_factor`` while the head keeps ``lr``.  This module
knows no estimator class (``_base`` calls it).
"""
from __future__ import annotations

import math
from typing import Any

import torch

#: The output layer of :class:`skcgcnn.model.CGCNN`: freshly initialised for new targets.
HEAD = "fc_out"


def _init_of(est: Any) -> Any:
    return est.__dict__.get("init")  # the classifier (and older pickles) have none


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
