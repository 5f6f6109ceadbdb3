"""What an exported ONNX file says about itself: its inputs, and the metadata to build them.

The ONNX graph of :func:`skcgcnn.export.export_onnx` takes the arrays of
:meth:`skcgcnn.graph.GraphCollection.collate`, with the distances as distinct values and
an index into them (:func:`inputs_of`), and the atoms per crystal; it answers
predictions in the target's units.  How those arrays are built from a structure is kept
in the file's ``metadata_props``, one JSON value per key (:data:`KEYS`):

``skcgcnn.format``
    :data:`FORMAT`, the version of this layout.
``skcgcnn.graph``
    ``radius``, ``max_num_nbr``, ``dmin``, ``step`` (the graphs) and ``var`` (the width
    of the Gaussian expansion, which happens inside the graph).
``skcgcnn.atom_features``
    ``name``, ``feature_names``, ``elements`` (atomic numbers) and ``vectors`` (one
    row per element): the atom-feature table.
``skcgcnn.target``
    ``mean`` and ``scale`` of the target scaler (already applied in the graph),
    ``n_outputs`` and ``y_ndim`` (1: predictions of shape (n,)).
``skcgcnn.model``
    The package version and, when the model has one, its model card.

This module knows numpy only: the predictor reads the file with it, without torch.
"""
from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import numpy as np

from .._optional import require
from ..atom_features import MAX_Z, AtomFeatureTable

#: Version tag of the layout above, in ``metadata_props["skcgcnn.format"]``.
FORMAT = "skcgcnn-onnx-1"

#: The ONNX graph's inputs, in order, with their dtypes and shapes (N atoms, M
#: neighbours per atom, B crystals).
INPUTS = (("atom_fea", "float32", "(N, n_atom_features)"),
          ("nbr_idx", "int64", "(N, M), -1 where an atom has fewer neighbours"),
          ("dist_idx", "int64", "(N, M), the row of distances of each neighbour"),
          ("distances", "float32", "(D,), the distinct neighbour distances in Å"),
          ("crystal_idx", "int64", "(N,), the crystal of each atom, 0 to B-1"),
          ("n_atoms", "int64", "(B,), atoms per crystal"))

#: Its one output: (B, n_outputs) float64, in the target's units (the sums over atoms
#: and the target scaling are done in float64).
OUTPUT = "prediction"

KEYS = ("skcgcnn.format", "skcgcnn.graph", "skcgcnn.atom_features", "skcgcnn.target",
        "skcgcnn.model")


class OnnxFileError(ValueError):
    """An ONNX file that was not written by :func:`skcgcnn.export.export_onnx`."""


def require_onnx(module: str) -> ModuleType:
    """Import ``module`` (onnx, onnxscript, onnxruntime) or raise an ImportError that
    names the ``onnx`` extra."""
    return require(module)


def inputs_of(batch: dict[str, np.ndarray], n_atoms: np.ndarray) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs (:data:`INPUTS`) from a batch of
    :meth:`~skcgcnn.graph.GraphCollection.collate` and the atoms per crystal: the
    neighbour distances become their distinct values and an index into them."""
    distances, dist_idx = np.unique(batch["nbr_dist"], return_inverse=True)
    return {"atom_fea": np.ascontiguousarray(batch["atom_fea"], dtype=np.float32),
            "nbr_idx": np.ascontiguousarray(batch["nbr_idx"], dtype=np.int64),
            "dist_idx": dist_idx.reshape(batch["nbr_dist"].shape).astype(np.int64),
            "distances": distances.astype(np.float32),
            "crystal_idx": np.ascontiguousarray(batch["crystal_idx"], dtype=np.int64),
            "n_atoms": np.asarray(n_atoms, dtype=np.int64)}


def table_metadata(table: AtomFeatureTable) -> dict:
    """An atom-feature table as the ``skcgcnn.atom_features`` entry."""
    elements = table.elements
    return {"name": str(table.name), "feature_names": [str(n) for n in table.feature_names],
            "elements": elements.tolist(),
            "vectors": table.table[elements].astype(np.float32).tolist()}


def table_from_metadata(entry: dict) -> AtomFeatureTable:
    """The atom-feature table of a ``skcgcnn.atom_features`` entry (the same float32
    values: they were written as Python floats of float32 numbers)."""
    vectors = np.asarray(entry["vectors"], dtype=np.float32)
    elements = np.asarray(entry["elements"], dtype=np.int64)
    table = np.zeros((MAX_Z + 1, vectors.shape[1]), dtype=np.float32)
    available = np.zeros(MAX_Z + 1, dtype=bool)
    table[elements] = vectors
    available[elements] = True
    return AtomFeatureTable(entry["name"], table, available, list(entry["feature_names"]))


def encode(metadata: dict[str, Any]) -> dict[str, str]:
    """``{key: value}`` -> ``{key: JSON text}`` for ``metadata_props``."""
    return {key: json.dumps(value, default=str) for key, value in metadata.items()}


def decode(props: dict[str, str], path: str = "the ONNX file") -> dict[str, Any]:
    """The skcgcnn metadata of an ONNX file's ``metadata_props`` (as onnxruntime's
    ``custom_metadata_map`` gives them), checked.

    Raises
    ------
    OnnxFileError
        When the file lacks them or has another format version.
    """
    if props.get("skcgcnn.format") is None:
        raise OnnxFileError(
            f"{path} has no skcgcnn metadata: it was not written by skcgcnn.export."
            "export_onnx ('skcgcnn export MODEL --format onnx'); export the model again")
    try:
        metadata = {key: json.loads(props[key]) for key in KEYS if key in props}
    except json.JSONDecodeError as exc:
        raise OnnxFileError(f"{path}: its skcgcnn metadata is not valid JSON ({exc})") from exc
    if metadata["skcgcnn.format"] != FORMAT:
        raise OnnxFileError(
            f"{path} has skcgcnn ONNX format {metadata['skcgcnn.format']!r}; this skcgcnn "
            f"reads {FORMAT!r}: export the model again with this version")
    missing = [key for key in KEYS[:4] if key not in metadata]
    if missing:
        raise OnnxFileError(f"{path} lacks the metadata {missing}; export the model again")
    return metadata


__all__ = ["FORMAT", "INPUTS", "KEYS", "OUTPUT", "OnnxFileError", "decode", "encode",
           "inputs_of", "require_onnx", "table_from_metadata", "table_metadata"]
