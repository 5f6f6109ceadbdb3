"""export_onnx: a fitted CGCNN regressor (Pipeline or estimator) -> an ONNX file.

torch 2.13's ``torch.onnx.export`` runs the dynamo exporter by default (``dynamo=True``
since torch 2.9): ``torch.export`` captures the graph, onnxscript translates it, and the
dynamic axes are given as ``dynamic_shapes`` with :class:`torch.export.Dim` (the old
``dynamic_axes`` belongs to the TorchScript exporter, ``dynamo=False``, which is
deprecated).  What is exported is :class:`~skcgcnn.export._network.ExportableCGCNN`, the
network at evaluation in operations that ONNX has, with the target scaler's inverse
inside; the graph settings and the atom-feature table go into the file's
``metadata_props`` (:mod:`skcgcnn.export._metadata`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any

import numpy as np

from ._metadata import (FORMAT, INPUTS, OUTPUT, encode, inputs_of, require_onnx,
                        table_metadata)

logger = logging.getLogger(__name__)

#: What :func:`export_onnx` exports, for its error messages.
SUPPORTED = ("a fitted CGCNNRegressor (mean or sum pooling, gated or simple "
             "convolutions, one or several targets, any loss but 'gaussian_nll'), alone "
             "or as the last step of a Pipeline after a StructureGraphTransformer (as "
             "skcgcnn.load_model and skcgcnn.load_pretrained return them)")

#: The ONNX opset written (ScatterElements with reduction "add" needs 16 or later).
OPSET = 18


def _unsupported(what: str) -> TypeError:
    return TypeError(f"cannot export {what} to ONNX; export_onnx supports {SUPPORTED}")


def _split(model: Any, transformer: Any) -> tuple[Any, Any]:
    """(transformer, estimator) of a Pipeline or a bare estimator, checked."""
    from ..estimators import CGCNNClassifier, CGCNNRegressor, split_pipeline
    from ..transformers import StructureGraphTransformer

    head, est = split_pipeline(model)
    if head is not None:
        if not isinstance(head, StructureGraphTransformer):
            raise _unsupported(f"a Pipeline of {[type(s).__name__ for _, s in model.steps]}")
        transformer = head if transformer is None else transformer
        model = est
    if isinstance(model, CGCNNClassifier):
        raise _unsupported("a CGCNNClassifier (classifiers are not supported yet)")
    if type(model).__name__ == "CGCNNEnsembleRegressor":
        raise _unsupported("a CGCNNEnsembleRegressor (export its members_ one by one)")
    if not isinstance(model, CGCNNRegressor):
        raise _unsupported(f"a {type(model).__name__}")
    if getattr(model, "module_", None) is None or not hasattr(model, "target_scaler_"):
        raise ValueError("this CGCNNRegressor is not fitted: fit it (or load a fitted "
                         "one with skcgcnn.load_model) before export_onnx")
    if model._has_variance_head():  # noqa: SLF001 (the regressor's own test)
        raise _unsupported("a CGCNNRegressor with a variance head (loss='gaussian_nll'): "
                           "its predicted std is not exported")
    if transformer is None:
        transformer = _transformer_of(model)
    return transformer, model


def _transformer_of(est: Any) -> Any:
    """The transformer that built a bare estimator's graphs, from its ``graph_params_``,
    when its atom features are a named set whose table it recorded."""
    from ..atom_features import NAMED_SETS
    from ..estimators._checks import _atom_features_digest
    from ..transformers import StructureGraphTransformer

    params = dict(getattr(est, "graph_params_", {}))
    name = params.get("atom_features")
    transformer = None
    if name in NAMED_SETS:
        transformer = StructureGraphTransformer(
            radius=params["radius"], max_num_nbr=params["max_num_nbr"], dmin=params["dmin"],
            step=params["step"], atom_features=name).fit()
        if _atom_features_digest(transformer.atom_features_) != \
                params.get("atom_features_digest"):
            transformer = None
    if transformer is None:
        raise ValueError(
            f"this CGCNNRegressor does not say which atom features built its graphs "
            f"(atom_features={name!r}): export the Pipeline that holds its "
            "StructureGraphTransformer, or pass transformer=...")
    return transformer


def _check_network(net: Any) -> None:
    from torch import nn

    from ..model import CGCNN, SimpleConvLayer
    from ._network import is_gated

    if not isinstance(net, CGCNN) or net.classification:
        raise _unsupported(f"a network of type {type(net).__name__}")
    for i, conv in enumerate(net.convs):
        if not (is_gated(conv) or isinstance(conv, SimpleConvLayer)):
            raise _unsupported(f"a CGCNN whose convolution {i} is a {type(conv).__name__}")
        norms = [m for m in conv.modules() if isinstance(m, nn.BatchNorm1d)]
        if any(bn.running_mean is None for bn in norms):
            raise _unsupported(f"a CGCNN whose convolution {i} has batch norms without "
                               "running statistics (track_running_stats=False)")


def _check_transformer(transformer: Any, est: Any) -> None:
    """The transformer builds the graphs the estimator was fitted on."""
    from ..transformers import StructureGraphTransformer

    if not isinstance(transformer, StructureGraphTransformer) \
            or not hasattr(transformer, "atom_features_"):
        raise ValueError(f"transformer must be a fitted StructureGraphTransformer, got "
                         f"{transformer!r}")
    fitted = getattr(est, "graph_params_", {})
    given = transformer.get_params()
    differ = [f"{key}: transformer {given[key]!r}, model {fitted[key]!r}"
              for key in ("radius", "max_num_nbr", "dmin", "step")
              if key in fitted and float(given[key]) != float(fitted[key])]
    width = est.module_.embedding.in_features
    if transformer.atom_features_.n_features != width:
        differ.append(f"atom features: transformer {transformer.atom_features_.n_features} "
                      f"long, model {width}")
    if differ:
        raise ValueError("the transformer does not build the graphs the model was fitted "
                         f"on ({'; '.join(differ)}): pass the model's own transformer")


def _example(transformer: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A small batch of 2 crystals and 7 atoms, one neighbour slot masked, as the ONNX
    inputs and its neighbour distances: what the exporter traces (sizes other than 0
    and 1, so that no axis is taken as fixed)."""
    rng = np.random.default_rng(0)
    m = int(transformer.max_num_nbr)
    n_atoms = np.array([3, 4], dtype=np.int64)
    crystal_idx = np.repeat(np.arange(2, dtype=np.int64), n_atoms)
    starts = np.repeat(np.array([0, 3]), n_atoms)
    nbr_idx = (starts[:, None] + rng.integers(0, n_atoms[crystal_idx][:, None], (7, m)))
    nbr_idx[0, -1] = -1
    nbr_dist = rng.uniform(1.0, float(transformer.radius), (7, m)).astype(np.float32)
    nbr_dist[0, -1] = 0.0
    table = transformer.atom_features_
    atom_fea = table(table.elements[rng.integers(0, len(table.elements), 7)])
    feed = inputs_of({"atom_fea": atom_fea, "nbr_idx": nbr_idx, "nbr_dist": nbr_dist,
                      "crystal_idx": crystal_idx}, n_atoms)
    return feed, nbr_dist


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines, its notes on torchvision and its warnings about
    axis names go to the debug log, not the console."""
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            logger.debug("torch.onnx: %s", w.message)
    finally:
        noisy.setLevel(level)


def export_onnx(model: Any, path: str | os.PathLike, transformer: Any = None,
                opset: int = OPSET, check: bool = True) -> str:
    """Write a fitted CGCNN regressor to an ONNX file that onnxruntime runs without torch.

    The graph takes the arrays of :meth:`skcgcnn.graph.GraphCollection.collate`, the
    neighbour distances as their distinct values and an index into them, and the atoms
    per crystal (names, dtypes and shapes in :data:`skcgcnn.export.INPUTS`), with
    dynamic axes over atoms, distinct distances and crystals (and so over the edges,
    ``n_atoms x max_num_nbr``).  It answers ``prediction``, float64 of shape
    ``(n_crystals, n_targets)`` in the target's units: the target scaler's inverse is
    inside.  The graph settings and the atom-feature table needed to build the inputs
    are in the file's ``metadata_props`` (:mod:`skcgcnn.export._metadata`);
    :class:`~skcgcnn.export.OnnxPredictor` reads them.

    Parameters
    ----------
    model : Pipeline or CGCNNRegressor
        A fitted Pipeline (StructureGraphTransformer, CGCNNRegressor), as
        :func:`skcgcnn.load_model` and :func:`skcgcnn.load_pretrained` return, or a
        fitted CGCNNRegressor.
    path : str or path-like
        The ONNX file to write (weights inside it, no external data file).
    transformer : StructureGraphTransformer, optional
        The transformer that builds the model's graphs; by default the Pipeline's,
        or for a bare estimator one made from its ``graph_params_`` (named
        atom-feature sets only).
    opset : int, default=18
        The ONNX opset version.
    check : bool, default=True
        Run the exported graph under onnxruntime on a small batch and raise if it
        differs from the torch model by more than 1e-4.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    TypeError
        For a model that cannot be exported (a classifier, an ensemble, a variance
        head; the message says what is supported).
    ImportError
        When onnx, onnxscript or onnxruntime is missing (``pip install 'skcgcnn[onnx]'``).
    RuntimeError
        With ``check``, when onnxruntime's output differs from torch's (the file is
        removed).

    Examples
    --------
    >>> import skcgcnn
    >>> from skcgcnn.export import OnnxPredictor, export_onnx
    >>> model = skcgcnn.load_pretrained("mp-formation-energy")  # doctest: +SKIP
    >>> export_onnx(model, "mp-formation-energy.onnx")  # doctest: +SKIP
    'mp-formation-energy.onnx'
    >>> OnnxPredictor("mp-formation-energy.onnx").predict(structures)  # doctest: +SKIP
    """
    onnx = require_onnx("onnx")
    require_onnx("onnxscript")
    import torch

    from .. import __version__
    from ._network import ExportableCGCNN

    transformer, est = _split(model, transformer)
    net = est.module_
    _check_network(net)
    _check_transformer(transformer, est)
    expansion = net.expansion
    graph = {**{k: transformer.get_params()[k] for k in ("radius", "max_num_nbr", "dmin",
                                                         "step")},
             "var": float(expansion.var)}
    graph = {k: (int(v) if k == "max_num_nbr" else float(v)) for k, v in graph.items()}
    wrapper = ExportableCGCNN(net, est.target_scaler_.mean_, est.target_scaler_.scale_)
    was_training = net.training
    net.eval()
    wrapper.eval()
    example, nbr_dist = _example(transformer)
    names = [name for name, _, _ in INPUTS]
    args = tuple(torch.from_numpy(example[name]) for name in names)
    atoms, crystals = torch.export.Dim("atoms"), torch.export.Dim("crystals")
    distinct = torch.export.Dim("distances")
    axes = {"distances": distinct, "n_atoms": crystals}
    dynamic = {name: {0: axes.get(name, atoms)} for name in names}
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=dynamic,
                                        input_names=names, output_names=[OUTPUT],
                                        opset_version=opset, verbose=False)
            expected = _torch_prediction(net, est, example, nbr_dist)
    finally:
        net.train(was_training)
    proto = program.model_proto
    card = getattr(est, "model_card_", None)
    metadata = {
        "skcgcnn.format": FORMAT, "skcgcnn.graph": graph,
        "skcgcnn.atom_features": table_metadata(transformer.atom_features_),
        "skcgcnn.target": {"mean": est.target_scaler_.mean_.tolist(),
                           "scale": est.target_scaler_.scale_.tolist(),
                           "n_outputs": int(est.n_outputs_), "y_ndim": int(est.y_ndim_)},
        "skcgcnn.model": {"skcgcnn_version": __version__, "torch_version": torch.__version__,
                          "model_card": card},
    }
    for key, value in encode(metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = ("CGCNN regressor exported by skcgcnn: inputs "
                        + ", ".join(f"{n} {t} {s}" for n, t, s in INPUTS)
                        + f"; output {OUTPUT} float64 (B, n_targets) in the target's units")
    onnx.save(proto, os.fspath(path))
    if getattr(est, "domain_", None) is not None:
        logger.warning("the model's applicability domain is not exported: the ONNX "
                       "predictions carry no OutsideDomainWarning")
    if check:
        _check_file(path, example, expected)
    logger.info("wrote %s (ONNX opset %d)", path, opset)
    return os.fspath(path)


def _torch_prediction(net: Any, est: Any, example: dict, nbr_dist: np.ndarray
                      ) -> np.ndarray:
    """The torch model's predictions on the example batch, in the target's units."""
    import torch

    scaled = net(*(torch.from_numpy(a) for a in (example["atom_fea"], example["nbr_idx"],
                                                  nbr_dist, example["crystal_idx"])))
    return est.target_scaler_.inverse_transform(
        scaled.numpy().astype(np.float64).reshape(len(example["n_atoms"]), -1))


def _check_file(path: Any, example: dict, expected: np.ndarray) -> None:
    """onnxruntime's output on the example batch against torch's; a file that differs
    is removed."""
    ort = require_onnx("onnxruntime")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], example)[0].astype(np.float64)
    diff = float(np.abs(got - expected).max())
    if not diff <= 1e-4:
        os.remove(path)
        raise RuntimeError(f"the exported graph {path} differs from the torch model by "
                           f"{diff:.3g} on a test batch; please report this as a bug")
    logger.debug("%s: onnxruntime against torch on a test batch: %.3g", path, diff)


__all__ = ["OPSET", "SUPPORTED", "export_onnx"]
