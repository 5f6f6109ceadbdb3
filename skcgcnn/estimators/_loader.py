"""Where ``init=`` finds the model that a saved path or a pretrained name stands for.

Loading a model builds estimators (``_persistence``, :mod:`skcgcnn.pretrained`), so the
modules that define the estimators cannot import the loading code without an import
circle.  They call :func:`load_init`, and the ``skcgcnn.estimators`` package, which
every estimator module is imported under, sets the function it calls
(:func:`set_init_loader`) to :func:`skcgcnn.pretrained.load_model_or_pretrained`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

_LOADER: Callable[[str | os.PathLike], Any] | None = None


def set_init_loader(loader: Callable[[str | os.PathLike], Any]) -> None:
    """Make ``loader`` (path or name -> fitted model) what :func:`load_init` calls."""
    global _LOADER
    _LOADER = loader


def load_init(init: str | os.PathLike) -> Any:
    """The fitted model (estimator or Pipeline) that the path or name ``init`` names."""
    if _LOADER is None:  # the package sets it on import, before any estimator module
        raise RuntimeError("no init loader: import skcgcnn.estimators")
    return _LOADER(init)
