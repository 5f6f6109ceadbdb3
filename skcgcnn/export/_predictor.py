"""OnnxPredictor: predictions of an exported model under onnxruntime, without torch.

The graphs are built by the package's own numpy code,
:class:`~skcgcnn.transformers.StructureGraphTransformer` (neighbour search, cut at
``max_num_nbr``, the same ties) with the settings and atom-feature table stored in the
file, and batched by :meth:`skcgcnn.graph.GraphCollection.collate`; the Gaussian
expansion and the target scaler's inverse are inside the ONNX graph.  Nothing here
imports torch.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._metadata import OUTPUT, decode, inputs_of, require_onnx, table_from_metadata

logger = logging.getLogger(__name__)


class OnnxPredictor:
    """Predict crystal properties with a model written by :func:`~skcgcnn.export.export_onnx`.

    Opens the file with onnxruntime and builds a
    :class:`~skcgcnn.transformers.StructureGraphTransformer` from its metadata; torch
    is not imported.

    Parameters
    ----------
    path : str or path-like
        An ONNX file written by :func:`~skcgcnn.export.export_onnx` (``skcgcnn export
        MODEL --format onnx``).
    batch_size : int, default=256
        Crystals per onnxruntime call.
    n_threads : int, default=None
        onnxruntime's intra-op threads (None: its default, one per core).
    n_jobs : int, default=None
        Worker processes for the graphs, as the transformer's ``n_jobs``.
    on_error : {"raise", "skip"}, default="raise"
        A structure that cannot be turned into a graph raises, or (``"skip"``) gets a
        NaN prediction and is listed in ``errors_``.

    Attributes
    ----------
    metadata_ : dict
        The file's skcgcnn metadata (:mod:`skcgcnn.export._metadata`).
    graph_params_ : dict
        ``radius``, ``max_num_nbr``, ``dmin``, ``step`` and ``var``.
    target_ : dict
        ``mean`` and ``scale`` of the target scaler (applied inside the graph),
        ``n_outputs`` and ``y_ndim``.
    transformer_ : StructureGraphTransformer
        The fitted transformer that builds the inputs.
    session_ : onnxruntime.InferenceSession
        The session that runs the graph.
    errors_ : list of (int, object, str)
        Position, id and reason of each structure the last ``predict`` skipped.

    Examples
    --------
    >>> from skcgcnn.export import OnnxPredictor
    >>> predictor = OnnxPredictor("mp-formation-energy.onnx")  # doctest: +SKIP
    >>> predictor.predict([structure])  # doctest: +SKIP
    array([-1.23...])
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 256,
                 n_threads: int | None = None, n_jobs: int | None = None,
                 on_error: str = "raise"):
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        ort = require_onnx("onnxruntime")
        from ..transformers import StructureGraphTransformer

        self.path = os.fspath(path)
        self.batch_size = int(batch_size)
        options = ort.SessionOptions()
        if n_threads is not None:
            options.intra_op_num_threads = int(n_threads)
            options.inter_op_num_threads = 1
        try:
            self.session_ = ort.InferenceSession(self.path, sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"cannot read {self.path!r} as an ONNX model: {exc}") from exc
        props = self.session_.get_modelmeta().custom_metadata_map
        self.metadata_ = decode(dict(props), repr(self.path))
        self.graph_params_ = dict(self.metadata_["skcgcnn.graph"])
        self.target_ = dict(self.metadata_["skcgcnn.target"])
        table = table_from_metadata(self.metadata_["skcgcnn.atom_features"])
        graph = self.graph_params_
        self.transformer_ = StructureGraphTransformer(
            radius=graph["radius"], max_num_nbr=graph["max_num_nbr"], dmin=graph["dmin"],
            step=graph["step"], atom_features=table, n_jobs=n_jobs,
            on_error=on_error).fit()
        self.errors_: list[tuple[int, Any, str]] = []

    def __repr__(self) -> str:
        return f"OnnxPredictor({self.path!r})"

    def transform(self, X: Any) -> Any:
        """The crystal graphs of ``X``, as the exported model's transformer builds them.

        Parameters
        ----------
        X : list, ndarray or pandas Series of Structure, ASE Atoms or CIF paths

        Returns
        -------
        GraphCollection
        """
        graphs = self.transformer_.transform(X)
        self.errors_ = list(self.transformer_.errors_)
        return graphs

    def batches(self, graphs: Any) -> Iterator[dict[str, np.ndarray]]:
        """The ONNX inputs of ``graphs``, ``batch_size`` crystals at a time.

        Parameters
        ----------
        graphs : GraphCollection

        Yields
        ------
        dict of str to ndarray
            ``atom_fea``, ``nbr_idx``, ``dist_idx``, ``distances``, ``crystal_idx``
            and ``n_atoms`` (:data:`skcgcnn.export.INPUTS`).
        """
        for start in range(0, len(graphs), self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, len(graphs)))
            yield inputs_of(graphs.collate(rows),
                            graphs.atom_ptr[rows + 1] - graphs.atom_ptr[rows])

    def predict_graphs(self, graphs: Any) -> np.ndarray:
        """Predictions for built graphs, shape (n_crystals, n_targets).

        Parameters
        ----------
        graphs : GraphCollection
            Graphs of :meth:`transform`.

        Returns
        -------
        ndarray of shape (n_crystals, n_targets), float64
        """
        parts = [self.session_.run([OUTPUT], feed)[0] for feed in self.batches(graphs)]
        width = int(self.target_["n_outputs"])
        if not parts:
            return np.zeros((0, width))
        return np.concatenate(parts).astype(np.float64).reshape(-1, width)

    def predict(self, X: Any) -> np.ndarray:
        """Predict the property of crystals, in the target's units.

        Parameters
        ----------
        X : list, ndarray or pandas Series of Structure, ASE Atoms or CIF paths

        Returns
        -------
        ndarray of shape (n,) for a model fitted on 1-D y, else (n, n_targets)
            One row per input; NaN for a structure skipped with ``on_error="skip"``.
        """
        graphs = self.transform(X)
        values = self.predict_graphs(graphs)
        if graphs.input_positions is not None:
            full = np.full((graphs.n_inputs, values.shape[1]), np.nan)
            full[graphs.input_positions] = values
            values = full
        return values.ravel() if int(self.target_["y_ndim"]) == 1 else values


__all__ = ["OnnxPredictor"]
