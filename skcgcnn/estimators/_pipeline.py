"""make_cgcnn_pipeline: StructureGraphTransformer followed by a CGCNN estimator."""
from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline

from ._classifier import CGCNNClassifier
from ._regressor import CGCNNRegressor

__all__ = ["make_cgcnn_pipeline", "split_pipeline"]


def split_pipeline(model: Any) -> tuple[Any | None, Any]:
    """``(graph_steps, network)`` of a model: for a Pipeline, what comes before its last
    step (the step itself when there is one, e.g. the StructureGraphTransformer, else
    a Pipeline of them) and its last step; for anything else ``(None, model)``."""
    if not isinstance(model, Pipeline):
        return None, model
    head = model.steps[0][1] if len(model.steps) == 2 else model[:-1]
    return head, model.steps[-1][1]


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
    from ..transformers import StructureGraphTransformer

    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    est = (CGCNNRegressor if task == "regression" else CGCNNClassifier)(**estimator_params)
    return Pipeline([("graph", StructureGraphTransformer(**(graph_params or {}))),
                     ("cgcnn", est)], memory=memory)
