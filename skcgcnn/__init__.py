"""skcgcnn: Crystal Graph Convolutional Neural Networks inside scikit-learn.

The public names are imported lazily so that ``import skcgcnn`` stays fast and the
optional parts (matminer, optuna, mp-api) are only needed where they are used.
"""
from __future__ import annotations

import importlib
import os

# OpenMP worker threads that sleep rather than spin while waiting: spinning threads make
# torch several times slower on a small machine as soon as another process wants a core.
# Only a default (a value you set wins), and only effective before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "as_structures": "skcgcnn.structures",
    "StructureError": "skcgcnn.structures",
    "StructureGraphTransformer": "skcgcnn.transformers",
    "GraphCollection": "skcgcnn.graph",
    "build_graph": "skcgcnn.graph",
    "get_atom_features": "skcgcnn.atom_features",
    "AtomFeatureTable": "skcgcnn.atom_features",
    "CGCNN": "skcgcnn.model",
    "CGCNNRegressor": "skcgcnn.estimators",
    "CGCNNClassifier": "skcgcnn.estimators",
    "load_cgcnn_checkpoint": "skcgcnn.estimators",
    "save_model": "skcgcnn.estimators",
    "load_model": "skcgcnn.estimators",
    "make_cgcnn_pipeline": "skcgcnn.estimators",
    "atom_contributions": "skcgcnn.explain",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skcgcnn' has no attribute {name!r}")
