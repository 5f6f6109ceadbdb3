"""Crystal graphs: neighbour search, compact storage and batching, graph files.

* :func:`build_graph` -- the graph of one structure (``_neighbors``);
* :class:`GraphCollection` -- the graphs of many, in flat arrays (``_collection``);
* :func:`save_graphs` / :func:`load_graphs` -- graph files that run no code (``_io``);
* :func:`build_graphs` -- the one parallel map over structures (``_parallel``);
* :class:`GraphCache` -- graphs of one set of structures built once per graph-parameter
  set, shared between processes through files (``_cache``).

This subpackage knows numpy and pymatgen only; the scikit-learn transformer over it is
:class:`skcgcnn.transformers.StructureGraphTransformer`.
"""
from ..structures import StructureError
from ._cache import GraphCache, structures_fingerprint
from ._collection import GraphCollection
from ._io import (GraphBundle, GraphFileError, UntrustedGraphFileError, load_graphs,
                  save_graphs)
from ._neighbors import (MAX_ATOMIC_NUMBER, NUMERICAL_TOL, FewNeighborsWarning, build_graph,
                         graph_from_arrays, neighbor_arrays, structure_arrays)
from ._parallel import build_graphs

__all__ = ["FewNeighborsWarning", "GraphBundle", "GraphCache", "GraphCollection",
           "GraphFileError", "MAX_ATOMIC_NUMBER", "NUMERICAL_TOL", "StructureError",
           "UntrustedGraphFileError", "build_graph", "build_graphs", "graph_from_arrays",
           "load_graphs", "neighbor_arrays", "save_graphs", "structure_arrays",
           "structures_fingerprint"]
