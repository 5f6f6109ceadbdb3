"""Graph files; moved to :mod:`skcgcnn.graph` (``skcgcnn/graph/_io.py``), importable here too."""
from .graph._io import (FORMAT, VERSION, GraphBundle, GraphFileError,  # noqa: F401
                        UntrustedGraphFileError, load_graphs, save_graphs)
