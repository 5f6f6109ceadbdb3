"""Imports of optional dependencies with an error that names the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType

_EXTRA = {
    "matminer": "baselines",
    "mp_api": "mp",
    "optuna": "tune",
    "optuna_integration": "tune",
    "ase": "ase",
    "mapie": "uncertainty",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "dask": "dask",
    "distributed": "dask",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the skcgcnn extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA.get(top, "all")
        raise ImportError(
            f"{module} is needed for this feature but is not installed; "
            f"install it with: pip install 'skcgcnn[{extra}]'"
        ) from exc
