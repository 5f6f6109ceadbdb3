"""Fine-tuning in a study: a pretrained ``init`` for every trial, ``freeze`` and
``init_lr_factor`` searched.

``tune(estimator_params={"init": model})`` gives every trial (and the refit) the same
fixed :class:`~skcgcnn.estimators.CGCNNRegressor` parameters.  With an ``init`` the
network's shape is the pretrained one's (its module arguments replace ``module__*``) and
the graphs must be built as its were, so the space fixes those fields;
:func:`fine_tuning_space` builds such a space from the model itself.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from ..atom_features import CGCNN_GROUPS, NAMED_SETS
from ._space import (ARCHITECTURE_FIELDS, CGCNN_GROUPS_CHOICE, FREEZE_CHOICES,  # noqa: F401
                     GRAPH_FIELDS, SearchSpace, _resolve_table, check_fixed_params)

#: Estimator parameters that :func:`tune` sets for every trial itself, and where to
#: set them instead.
_RESERVED = {"max_epochs": "tune(max_epochs=...) or SearchSpace(max_epochs=...)",
             "random_state": "tune(random_state=...)", "device": "tune(device=...)",
             "verbose": "tune(verbose=...)", "train_split": "tune's own validation rows",
             "callbacks": "tune's own validation MAE and pruning callbacks"}
#: ``init_lr_factor`` of :func:`fine_tuning_space` unless given: the body from a
#: hundredth of the head's learning rate to the same.
DEFAULT_INIT_LR_FACTOR = (0.01, 1.0)


def check_estimator_params(estimator_params: Mapping[str, Any] | None) -> dict:
    """``tune``'s fixed estimator parameters as a dict; refuse those it sets itself."""
    if estimator_params is None:
        return {}
    if not isinstance(estimator_params, Mapping):
        raise ValueError(f"estimator_params={estimator_params!r}: give a dict of "
                         "CGCNNRegressor parameters, e.g. {'init': 'model.pt'}")
    params = dict(estimator_params)
    for key in params:
        if key in _RESERVED or key.startswith("callbacks__"):
            raise ValueError(f"estimator_params[{key!r}]: tune sets it for every trial; use "
                             f"{_RESERVED.get(key, _RESERVED['callbacks'])}")
    return params


def describe(params: Mapping[str, Any]) -> dict:
    """Fixed estimator parameters as a study's settings record them (JSON values; an
    object by its type's name)."""
    def one(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return f"<{type(value).__name__}>"

    return {key: one(value) for key, value in sorted(params.items())}


def _atom_features_of(name: Any) -> Any:
    """The atom-feature spec of a fitted model's table name, or None when its name says
    too little (a custom table)."""
    if name in NAMED_SETS:
        return name
    if isinstance(name, str) and name.startswith("cgcnn[") and name.endswith("]"):
        groups = tuple(name[len("cgcnn["):-1].split(","))
        if groups and all(g in CGCNN_GROUPS for g in groups):
            return groups
    return None


def fine_tuning_space(init: Any, **fields: Any) -> SearchSpace:
    """A :class:`SearchSpace` for fine-tuning ``init``: its graphs and network, searching
    ``freeze`` and ``init_lr_factor`` besides the recipe.

    Parameters
    ----------
    init : fitted CGCNNRegressor or Pipeline, path or str
        What ``CGCNNRegressor(init=...)`` takes: a fitted estimator or Pipeline, a file
        saved with :func:`skcgcnn.save_model`, or a pretrained model's name.
    **fields
        Other :class:`SearchSpace` fields (they win), e.g. ``lr=(1e-4, 1e-2)``.

    Returns
    -------
    SearchSpace
        ``atom_features``, ``radius``, ``max_num_nbr``, ``dmin``, ``step`` fixed to the
        graphs the model was fitted on; ``n_conv``, ``atom_fea_len``, ``h_fea_len``,
        ``n_h``, ``conv`` to its network; ``freeze`` among ``(None, "embedding",
        "conv")``, ``init_lr_factor`` in ``(0.01, 1.0)`` (log); the rest as
        ``SearchSpace()``.  Pass the same ``init`` to ``tune(estimator_params=...)``.

    Examples
    --------
    >>> space = fine_tuning_space("model.pt", lr=(1e-4, 1e-2))  # doctest: +SKIP
    >>> tune(X, y, space=space, estimator_params={"init": "model.pt"})  # doctest: +SKIP
    """
    from ..estimators._init_model import body_kwargs, resolve_init

    pretrained = resolve_init(init)
    graph = dict(getattr(pretrained, "graph_params_", None) or {})
    # the module's own defaults for the arguments the estimator did not set
    signature = inspect.signature(type(pretrained.module_).__init__).parameters
    body = {name: p.default for name, p in signature.items()
            if p.default is not inspect.Parameter.empty}
    body.update(body_kwargs(pretrained))
    base: dict[str, Any] = {name: body[name] for name in ARCHITECTURE_FIELDS if name in body}
    base.update({name: graph[name] for name in ("radius", "max_num_nbr", "dmin", "step")
                 if name in graph})
    atom = _atom_features_of(graph.get("atom_features"))
    if atom is not None:
        base["atom_features"] = atom
    base.update(freeze=FREEZE_CHOICES, init_lr_factor=DEFAULT_INIT_LR_FACTOR)
    base.update(fields)
    missing = [n for n in ("atom_features", "radius", "max_num_nbr") if n not in base]
    if missing:
        where = os.fspath(init) if isinstance(init, (str, os.PathLike)) else \
            type(pretrained).__name__
        raise ValueError(
            f"fine_tuning_space: {where} does not say its {', '.join(missing)} (atom "
            f"features {graph.get('atom_features')!r}); give them, e.g. "
            f"fine_tuning_space(init, {missing[0]}=...), as the model was fitted with")
    return SearchSpace(**base)


def check_init_graphs(init: Any, space: SearchSpace, choices: list, cache: Any,
                      tables: dict) -> None:
    """Before the study: the graphs of the space's fixed settings are ones ``init`` can
    be fine-tuned on (else the estimator's error, which names the settings to use)."""
    from ..estimators._init_model import check_graphs, resolve_init

    pretrained = resolve_init(init)
    graphs, _ = cache.get(float(space._choices("radius")[0]),
                          int(space._choices("max_num_nbr")[0]))
    try:
        check_graphs(pretrained, graphs.with_atom_features(_resolve_table(choices[0], tables)))
    except ValueError as exc:
        raise ValueError(f"the SearchSpace's graphs do not fit init (fine_tuning_space(init) "
                         f"takes them from the model): {exc}") from exc
