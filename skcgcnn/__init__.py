"""skcgcnn: Crystal Graph Convolutional Neural Networks inside scikit-learn.

The public names are imported lazily so that ``import skcgcnn`` stays fast and the
optional parts (matminer, optuna, mp-api) are only needed where they are used.
Importing skcgcnn changes nothing in the process (no environment variables, no allocator
settings); :func:`set_cpu_performance_defaults` does, when asked (the command line asks).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

__version__ = "0.1.0"

logger = logging.getLogger(__name__)

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
    "CGCNNEnsembleRegressor": "skcgcnn.estimators",
    "CGCNNEmbedder": "skcgcnn.estimators",
    "ApplicabilityDomain": "skcgcnn.estimators",
    "OutsideDomainWarning": "skcgcnn.estimators",
    "UncertaintyFeatures": "skcgcnn.estimators",
    "load_cgcnn_checkpoint": "skcgcnn.estimators",
    "save_model": "skcgcnn.estimators",
    "load_model": "skcgcnn.estimators",
    "make_cgcnn_pipeline": "skcgcnn.estimators",
    "atom_contributions": "skcgcnn.explain",
    "load_pretrained": "skcgcnn.pretrained",
    "list_pretrained": "skcgcnn.pretrained",
}

__all__ = sorted(_LAZY) + ["__version__", "set_cpu_performance_defaults"]


def set_cpu_performance_defaults() -> dict[str, object]:
    """Apply CPU speed settings to the whole process (opt-in; not needed for speed).

    The estimators' ``fit`` and ``predict`` set the CPU up themselves for their own
    duration (:mod:`skcgcnn._cpu`: no more torch threads than free cores, malloc keeping
    freed memory), so a plain script is as fast without this call.  The ``skcgcnn``
    command line still calls it when it starts.  It changes the whole process, which is
    why importing skcgcnn does not do it:

    * ``OMP_WAIT_POLICY=PASSIVE`` (only if the variable is not set: a value you set
      wins): OpenMP threads sleep instead of spinning while they wait.  Spinning threads
      make torch several times slower on a small machine as soon as another process wants
      a core.  OpenMP reads the variable when it starts, at ``import torch``: called
      later, it only reaches the processes started afterwards (they inherit the
      environment), and a warning says so.
    * On Linux with glibc, ``mallopt(M_MMAP_MAX, 0)`` and a high ``M_TRIM_THRESHOLD``:
      malloc serves large blocks from its heap and keeps freed memory for reuse, instead
      of a fresh ``mmap`` (and page faults) for each of the tens-of-MB tensors of every
      batch, which made element-wise operations 3-4 times slower.  The process keeps the
      memory it has freed.  Set ``SKCGCNN_NO_MALLOPT=1`` to leave malloc alone.

    Neither changes any result, only speed and memory use.

    Returns
    -------
    applied : dict
        ``"OMP_WAIT_POLICY"``: the value now in the environment; ``"mallopt"``: whether
        the malloc settings are in force.

    Examples
    --------
    >>> import skcgcnn
    >>> skcgcnn.set_cpu_performance_defaults()  # doctest: +SKIP
    {'OMP_WAIT_POLICY': 'PASSIVE', 'mallopt': True}
    """
    from ._malloc import keep_freed_memory

    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        if "torch" in sys.modules:
            logger.warning(
                "OMP_WAIT_POLICY=PASSIVE was set after torch was imported: it applies to "
                "processes started from now on, not to this one; call "
                "skcgcnn.set_cpu_performance_defaults() before importing torch")
    return {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"], "mallopt": keep_freed_memory()}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skcgcnn' has no attribute {name!r}")
