"""Crystal graphs: neighbour search, compact storage and batching, graph files.

* :func:`build_graph` -- the graph of one structure (``_neighbors``);
* :class:`GraphCollection` -- the graphs of many, in flat arrays (``_collection``);
* :func:`save_graphs` / :func:`load_graphs` -- graph files that run no code (``_io``;
  ``load_graphs`` sits beside the class it builds, in ``_collection``);
* :func:`build_graphs` -- the one parallel map over structures (``_parallel``);
* :class:`GraphCache` -- graphs of one set of structures built once per graph-parameter
  set, shared between processes through files (``_cache``).

This subpackage knows numpy and pymatgen only; the scikit-learn transformer over it is
:class:`skcgcnn.transformers.StructureGraphTransformer`.
"""
from __future__ import annotations

import importlib

from ..structures import StructureError
from ._collection import GraphCollection, load_graphs
from ._neighbors import (MAX_ATOMIC_NUMBER, NUMERICAL_TOL, FewNeighborsWarning, build_graph,
                         graph_from_arrays, neighbor_arrays, structure_arrays)
from ._parallel import build_graphs

# Graph files and the graph cache are imported on first use: the transformer and the
# estimators need neither.
_LAZY = {"GraphCache": "_cache", "structures_fingerprint": "_cache",
         "GraphBundle": "_io", "GraphFileError": "_io", "UntrustedGraphFileError": "_io",
         "save_graphs": "_io"}

__all__ = ["FewNeighborsWarning", "GraphBundle", "GraphCache", "GraphCollection",
           "GraphFileError", "MAX_ATOMIC_NUMBER", "NUMERICAL_TOL", "StructureError",
           "UntrustedGraphFileError", "build_graph", "build_graphs", "graph_from_arrays",
           "load_graphs", "neighbor_arrays", "save_graphs", "structure_arrays",
           "structures_fingerprint"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
