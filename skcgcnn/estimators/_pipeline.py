"""make_cgcnn_pipeline: StructureGraphTransformer followed by a CGCNN estimator."""
from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline

from ._classifier import CGCNNClassifier
from ._regressor import CGCNNRegressor
from ._split import split_pipeline

__all__ = ["make_cgcnn_pipeline", "split_pipeline"]


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
