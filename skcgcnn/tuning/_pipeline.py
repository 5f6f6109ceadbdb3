"""A trial's parameters as a CGCNN Pipeline, and the space as ``OptunaSearchCV`` distributions."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._optional import require
from ._space import ESTIMATOR_KEYS, CGCNN_GROUPS_CHOICE, SearchSpace


def pipeline_from_params(params: Mapping[str, Any], space: SearchSpace | None = None,
                         **estimator_params: Any) -> Any:
    """An unfitted CGCNN Pipeline for a trial's parameters (e.g. ``study.best_params``).

    Parameters
    ----------
    params : mapping
        Trial parameters as :meth:`SearchSpace.suggest` names them.
    space : SearchSpace, optional
        The space the study searched (for the fixed values); default ``SearchSpace()``.
    **estimator_params
        More arguments of :class:`CGCNNRegressor` (``max_epochs``, ``random_state``, ...).

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``make_cgcnn_pipeline(graph_params=..., **params)``.
    """
    from ..estimators import make_cgcnn_pipeline

    cfg = (space or SearchSpace()).config(params)
    return make_cgcnn_pipeline(graph_params=cfg.graph_params,
                               **{**cfg.estimator_params, **estimator_params})


def pipeline_distributions(space: SearchSpace | None = None,
                           atom_feature_choices: Sequence[str] | None = None,
                           estimator_params: Mapping[str, Any] | None = None) -> dict:
    """The search space as Optuna distributions over ``make_cgcnn_pipeline`` parameters.

    For optuna-integration's ``OptunaSearchCV``, which sets parameters of the Pipeline
    itself (``graph__radius``, ``cgcnn__module__n_conv``, ...).  Subsets of CGCNN
    groups are left out (a Pipeline parameter cannot be assembled from several
    distributions); graphs are rebuilt for every fit.  ``estimator_params``: the
    Pipeline's fixed estimator parameters, for :meth:`SearchSpace.validate` (an ``init``
    for a space that searches ``freeze`` or ``init_lr_factor``).

    Examples
    --------
    >>> dists = pipeline_distributions(SearchSpace(n_conv=(1, 2), radius=8.0))
    >>> dists["cgcnn__module__n_conv"]
    IntDistribution(high=2, log=False, low=1, step=1)
    >>> "graph__radius" in dists
    False
    """
    require("optuna")
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    space = space or SearchSpace()
    space.validate(estimator_params)
    names = {"atom_features": "graph__atom_features", "radius": "graph__radius",
             "max_num_nbr": "graph__max_num_nbr",
             **{name: f"cgcnn__{key}" for name, key in ESTIMATOR_KEYS.items()}}
    out: dict[str, Any] = {}
    for name in space._choice_fields():
        choices = space._choices(name)
        if name == "atom_features":
            choices = [c for c in (atom_feature_choices or choices)
                       if c != CGCNN_GROUPS_CHOICE]
        if len(choices) > 1:
            out[names[name]] = CategoricalDistribution(choices)
    for name, (kind, log) in space._range_fields().items():
        value = getattr(space, name)
        if isinstance(value, (list, tuple)) and value[0] != value[1]:
            out[names[name]] = (IntDistribution(int(value[0]), int(value[1])) if kind == "int"
                                else FloatDistribution(float(value[0]), float(value[1]),
                                                       log=log))
    return out
