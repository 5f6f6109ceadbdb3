"""Export to ONNX, and predictions under onnxruntime without torch.

* :func:`export_onnx` -- a fitted CGCNN regressor (a Pipeline as
  :func:`skcgcnn.load_model` or :func:`skcgcnn.load_pretrained` returns it) -> an ONNX
  file, the network at evaluation with the target scaler's inverse inside, the graph
  settings and the atom-feature table in its metadata (``_exporter``, ``_network``);
* :class:`OnnxPredictor` -- structures -> predictions with onnxruntime, the graphs
  built by the package's numpy code (``_predictor``);
* :data:`INPUTS` -- the ONNX graph's inputs, for running it from another language;
  the metadata layout is :mod:`skcgcnn.export._metadata`'s.

Importing this package imports neither torch nor onnx: :func:`export_onnx` imports
torch, onnx and onnxscript when called, :class:`OnnxPredictor` onnxruntime only
(``pip install 'skcgcnn[onnx]'``).  The command line is ``skcgcnn export MODEL
--format onnx``.
"""
from __future__ import annotations

from . import _exporter, _metadata
from ._exporter import export_onnx
from ._metadata import OnnxFileError
from ._predictor import OnnxPredictor

#: Version tag of the layout of an exported file's ``metadata_props``.
FORMAT = _metadata.FORMAT

#: The ONNX graph's inputs, in order: ``(name, dtype, shape)``, with N atoms, M
#: neighbours per atom, D distinct neighbour distances and B crystals.
INPUTS = _metadata.INPUTS

#: The name of the ONNX graph's output, (B, n_targets) float64 in the target's units.
OUTPUT = _metadata.OUTPUT

#: What :func:`export_onnx` exports (the end of its refusals).
SUPPORTED = _exporter.SUPPORTED

__all__ = ["FORMAT", "INPUTS", "OUTPUT", "OnnxFileError", "OnnxPredictor", "SUPPORTED",
           "export_onnx"]
