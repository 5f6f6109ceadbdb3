"""Splitting a model into its graph steps and its network: one rule for every caller."""
from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline

__all__ = ["split_pipeline"]


def split_pipeline(model: Any) -> tuple[Any | None, Any]:
    """``(graph_steps, network)`` of a model: for a Pipeline, what comes before its last
    step (the step itself when there is one, e.g. the StructureGraphTransformer, else
    a Pipeline of them) and its last step; for anything else ``(None, model)``."""
    if not isinstance(model, Pipeline):
        return None, model
    head = model.steps[0][1] if len(model.steps) == 2 else model[:-1]
    return head, model.steps[-1][1]
