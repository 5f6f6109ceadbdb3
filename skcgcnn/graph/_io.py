"""Graph files: crystal graphs with their targets in one ``.npz`` that runs no code when read.

``skcgcnn featurize`` writes them and ``skcgcnn train --graphs`` reads them; in Python,
:func:`save_graphs` / :func:`load_graphs` (or ``GraphCollection.save`` /
``GraphCollection.load``).  The file is written with ``np.savez`` and read with
``np.load(allow_pickle=False)``, so it holds plain arrays only::

    atom_ptr, numbers, nbr_idx, nbr_dist   the GraphCollection's flat arrays
    targets          float64 (n_crystals, n_targets)
    atom_table       float32 (MAX_Z + 1, n_features)   the atom-feature table, when
    atom_available   bool    (MAX_Z + 1,)              the collection has one
    input_positions  int64   (n_crystals,)   when the transformer skipped structures
    metadata         uint8   UTF-8 JSON: format, version, ids, graph parameters,
                             atom-feature name and column names, target names, info

Ids are stored in the JSON, so they come back with their types (str, int or float).
Everything is checked on reading (shapes, dtypes, neighbour indices inside their
crystal) before a :class:`GraphCollection` is made.

The first graph files (format version 1) were pickles of a dict; reading one can run
code, so :func:`load_graphs` refuses them unless ``trusted=True``.

This module knows numpy only (and pickle, for the trusted old files): it builds the
collection class it is given (:func:`skcgcnn.graph.load_graphs` and
``GraphCollection.load`` give theirs), so that ``GraphCollection.save`` / ``load`` can
use it without an import circle.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import atomic_write
from ._neighbors import MAX_ATOMIC_NUMBER

if TYPE_CHECKING:
    from ._collection import GraphCollection

__all__ = ["FORMAT", "VERSION", "GraphBundle", "GraphFileError", "UntrustedGraphFileError",
           "read_graphs", "save_graphs"]

#: Format tag of graph files.
FORMAT = "skcgcnn-graphs"
#: Version written; version 1 was the pickle of the first ``skcgcnn featurize``.
VERSION = 2

_ARRAYS = {"atom_ptr": np.int64, "numbers": np.int16, "nbr_idx": np.int32,
           "nbr_dist": np.float32, "targets": np.float64}


class GraphFileError(ValueError):
    """A file that is not a readable graph file."""


class UntrustedGraphFileError(GraphFileError):
    """An old (pickle) graph file, read only with ``trusted=True``."""


@dataclass
class GraphBundle:
    """What a graph file holds.

    Attributes
    ----------
    graphs : GraphCollection
    targets : ndarray of shape (n_crystals, n_targets), float64
        NaN where a crystal has no value.
    target_names : list of str
    info : dict
        Free JSON data, e.g. ``source`` (the folder the graphs came from) and
        ``errors`` (the structures left out).
    """

    graphs: GraphCollection
    targets: np.ndarray
    target_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _json_id(value: Any, pos: int) -> Any:
    if isinstance(value, (np.integer, np.floating, np.str_)):
        value = value.item()
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    raise ValueError(f"id of crystal {pos} is {value!r} ({type(value).__name__}); a graph "
                     "file stores str, int or float ids: convert the ids first")


def save_graphs(path: str | os.PathLike, graphs: GraphCollection, targets: Any = None,
                target_names: list[str] | None = None, info: dict | None = None) -> None:
    """Write ``graphs`` (and their targets) to a graph file.

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced atomically; no suffix is added).
    graphs : GraphCollection
    targets : array-like of shape (n_crystals,) or (n_crystals, n_targets), optional
    target_names : list of str, optional
        One per target column (default: ``target0``, ``target1``, ...).
    info : dict, optional
        JSON-serialisable extra data (source, skipped structures, ...).
    """
    n = len(graphs)
    targets = np.zeros((n, 0)) if targets is None else np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n:
        raise ValueError(f"targets of shape {targets.shape} do not fit {n} crystals; give "
                         "one row per crystal")
    names = ([f"target{i}" for i in range(targets.shape[1])] if target_names is None
             else [str(t) for t in target_names])
    if len(names) != targets.shape[1]:
        raise ValueError(f"{len(names)} target names for {targets.shape[1]} target columns")
    table = graphs.atom_features
    metadata = {
        "format": FORMAT, "version": VERSION,
        "ids": [_json_id(v, i) for i, v in enumerate(graphs.ids)],
        "graph_params": graphs.graph_params,
        "atom_features": None if table is None else {
            "name": table.name, "feature_names": list(table.feature_names)},
        "target_names": names,
        "meta": graphs.meta,
        "n_inputs": graphs.n_inputs,
        "info": info or {},
    }
    try:
        text = json.dumps(metadata, allow_nan=True)
    except TypeError as exc:
        raise ValueError(f"cannot store the graph file's metadata as JSON ({exc}); pass "
                         "plain numbers, strings, lists and dicts in info") from exc
    arrays = {"atom_ptr": graphs.atom_ptr, "numbers": graphs.numbers,
              "nbr_idx": graphs.nbr_idx, "nbr_dist": graphs.nbr_dist, "targets": targets,
              "metadata": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    if table is not None:
        arrays["atom_table"] = table.table
        arrays["atom_available"] = table.available
    if graphs.input_positions is not None:
        arrays["input_positions"] = np.asarray(graphs.input_positions, dtype=np.int64)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def _is_pickle(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read_graphs(path: str | os.PathLike, collection: type[GraphCollection],
                trusted: bool = False) -> GraphBundle:
    """The graph file at ``path`` with its graphs as a ``collection`` (the class
    :class:`~skcgcnn.graph.GraphCollection`); see :func:`skcgcnn.graph.load_graphs`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no graph file at {path!r}")
    if zipfile.is_zipfile(path):
        return _load_npz(path, collection)
    if _is_pickle(path):
        if not trusted:
            raise UntrustedGraphFileError(
                f"{path!r} is a pickle (an old graph file, or not one at all); unpickling "
                "can run code, so it is not read. Write the graphs again with 'skcgcnn "
                "featurize', or, if you made the file yourself, pass trusted=True")
        return _load_pickle(path, collection)
    raise GraphFileError(f"{path!r} is not a graph file (neither an .npz archive nor an old "
                         "pickle graph file)")


def _load_npz(path: str, collection: type[GraphCollection]) -> GraphBundle:
    from ..atom_features import AtomFeatureTable

    try:
        with np.load(path, allow_pickle=False) as data:
            if "metadata" not in data.files:
                raise GraphFileError(f"{path!r} is an .npz archive but not a graph file "
                                     "(it has no metadata)")
            metadata = json.loads(data["metadata"].tobytes().decode("utf-8"))
            if not (isinstance(metadata, dict) and metadata.get("format") == FORMAT):
                raise GraphFileError(f"{path!r} is an .npz archive but not a graph file")
            if not isinstance(metadata.get("version"), int) or metadata["version"] > VERSION:
                raise GraphFileError(
                    f"{path!r} is a graph file of version {metadata.get('version')!r}; this "
                    f"skcgcnn reads versions up to {VERSION}: upgrade skcgcnn")
            missing = [k for k in _ARRAYS if k not in data.files]
            if missing:
                raise GraphFileError(f"{path!r} lacks the arrays {missing}")
            arrays = {k: data[k] for k in _ARRAYS}
            table = None
            spec = metadata.get("atom_features")
            if spec is not None:
                table = AtomFeatureTable(str(spec["name"]),
                                         np.asarray(data["atom_table"], dtype=np.float32),
                                         np.asarray(data["atom_available"], dtype=bool),
                                         [str(n) for n in spec["feature_names"]])
            positions = (np.asarray(data["input_positions"], dtype=np.int64)
                         if "input_positions" in data.files else None)
    except GraphFileError:
        raise
    except (OSError, EOFError, KeyError, TypeError, ValueError, UnicodeDecodeError,
            zipfile.BadZipFile) as exc:
        raise GraphFileError(f"{path!r} is not a readable graph file (damaged or "
                             f"truncated?): {type(exc).__name__}: {exc}") from exc
    params = metadata["graph_params"]
    ids = np.empty(len(metadata["ids"]), dtype=object)
    ids[:] = metadata["ids"]
    for key, dtype in _ARRAYS.items():
        if arrays[key].dtype != dtype:
            raise GraphFileError(f"{path!r}: array {key!r} is {arrays[key].dtype}, not "
                                 f"{np.dtype(dtype)}")
    graphs = collection(arrays["atom_ptr"], arrays["numbers"], arrays["nbr_idx"],
                        arrays["nbr_dist"], ids, float(params["radius"]),
                        int(params["max_num_nbr"]), float(params["dmin"]),
                        float(params["step"]), table, dict(metadata.get("meta") or {}))
    if positions is not None:
        n_inputs = metadata.get("n_inputs")
        if not (isinstance(n_inputs, int) and positions.shape == (len(graphs),) and (
                positions.size == 0 or (positions.min() >= 0 and positions.max() < n_inputs
                                        and (np.diff(positions) > 0).all()))):
            raise GraphFileError(f"{path!r}: its input positions do not fit its crystals")
        graphs.input_positions, graphs.n_inputs = positions, n_inputs
    _check(path, graphs, arrays["targets"], metadata["target_names"])
    return GraphBundle(graphs, arrays["targets"], list(metadata["target_names"]),
                       dict(metadata.get("info") or {}))


def _check(path: str, graphs: GraphCollection, targets: np.ndarray, names: list) -> None:
    """Shapes and indices that batching relies on; GraphFileError when one is off."""
    def bad(what: str) -> GraphFileError:
        return GraphFileError(f"{path!r} is not a consistent graph file: {what}")

    ptr, n_atoms, k = graphs.atom_ptr, len(graphs.numbers), graphs.max_num_nbr
    if ptr.ndim != 1 or len(ptr) < 1 or ptr[0] != 0 or ptr[-1] != n_atoms \
            or (np.diff(ptr) < 0).any():
        raise bad("atom_ptr does not index the atoms")
    if graphs.nbr_idx.shape != (n_atoms, k) or graphs.nbr_dist.shape != (n_atoms, k):
        raise bad(f"neighbour arrays are not of shape ({n_atoms}, {k})")
    if len(graphs.ids) != len(graphs):
        raise bad(f"{len(graphs.ids)} ids for {len(graphs)} crystals")
    if targets.ndim != 2 or targets.shape[0] != len(graphs) or len(names) != targets.shape[1]:
        raise bad(f"targets of shape {targets.shape} with {len(names)} names for "
                  f"{len(graphs)} crystals")
    if n_atoms and (graphs.numbers.min() < 1 or graphs.numbers.max() > MAX_ATOMIC_NUMBER):
        raise bad("atomic numbers outside 1-118")
    sizes = np.repeat(graphs.n_atoms, graphs.n_atoms)[:, None]
    if ((graphs.nbr_idx < -1) | (graphs.nbr_idx >= sizes)).any():
        raise bad("neighbour indices outside their crystal")
    table = graphs.atom_features
    if table is not None and (table.table.ndim != 2 or table.available.shape
                              != (table.table.shape[0],)
                              or len(table.feature_names) not in (0, table.table.shape[1])):
        raise bad("the atom-feature table's arrays do not fit together")


def _load_pickle(path: str, collection: type[GraphCollection]) -> GraphBundle:
    """An old (version 1) graph file: a pickled dict; only with trusted=True."""
    import pickle

    try:
        with open(path, "rb") as handle:
            bundle = pickle.load(handle)
    except Exception as exc:  # any unpickling failure means: not our file
        raise GraphFileError(f"{path!r} is not a graph file ({type(exc).__name__}: "
                             f"{exc})") from exc
    if not (isinstance(bundle, dict) and bundle.get("format") == FORMAT
            and isinstance(bundle.get("graphs"), collection)):
        raise GraphFileError(f"{path!r} is a pickle but not a graph file")
    graphs = bundle["graphs"]
    targets = np.asarray(bundle.get("targets", np.zeros((len(graphs), 0))), dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    names = [str(t) for t in bundle.get("target_names", [])]
    _check(path, graphs, targets, names)
    info = {"source": bundle.get("source"),
            "errors": [list(e) for e in bundle.get("errors", [])]}
    return GraphBundle(graphs, targets, names, info)
