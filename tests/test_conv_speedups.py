"""The fused gated convolution's paths (skcgcnn.model.fused: row tables in training, the
edge tensor, bn1 folded at evaluation, the opt-in torch.compile; issue 16) against the
reference layer (skcgcnn.model.reference, the paper's equation in plain torch)."""
from __future__ import annotations

import copy
import logging
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from skcgcnn import _compile
from skcgcnn._compile import compile_convolutions
from skcgcnn.model import CGCNN, PATHS, ConvLayer, Edges, GaussianExpansion, ReferenceConvLayer

from .test_graph import bcc_iron, perovskite, rock_salt
from .test_model import assert_same_step, batch


def reference_of(layer: ConvLayer) -> ReferenceConvLayer:
    """The reference layer with ``layer``'s parameters, buffers, dtype and mode."""
    twin = ReferenceConvLayer(layer.atom_fea_len, layer.nbr_fea_len).to(
        layer.fc_full.weight.dtype)
    twin.load_state_dict(layer.state_dict())
    return twin.train(layer.training)


def masked(b):
    """The batch with the last neighbour slot of every other atom masked (edge-list path)."""
    idx, dist = b["nbr_idx"].clone(), b["nbr_dist"].clone()
    idx[::2, -1] = -1
    dist[::2, -1] = 0.0
    return idx, dist


def gated_layer(seed=0):
    """A float64 ConvLayer(92, 41) with batch-norm parameters and running statistics
    away from their initial values (they matter at evaluation)."""
    torch.manual_seed(seed)
    layer = ConvLayer(92, 41).double()
    with torch.no_grad():
        for bn in (layer.bn1, layer.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return layer


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gated_layer_equals_the_reference(dense, training):
    """"row_tables" in training, "folded" at evaluation, with and without masked slots."""
    b = batch([rock_salt(), bcc_iron(), perovskite()], dtype=torch.float64)
    idx, dist = (b["nbr_idx"], b["nbr_dist"]) if dense else masked(b)
    layer = gated_layer().train(training)
    twin = reference_of(layer)
    expansion = GaussianExpansion().double()
    v = b["atom_fea"].clone().requires_grad_()
    w = b["atom_fea"].clone().requires_grad_()
    edges = Edges(idx, dist)
    assert edges.dense == dense
    assert layer.path(edges, expansion) == ("row_tables" if training else "folded")
    out = layer(v, edges, expansion)
    want = twin(w, Edges(idx, dist), expansion)
    assert_same_step(layer, twin, out, want, [v], [w])


def test_edge_tensor_path_equals_the_reference():
    """bn1 a SyncBatchNorm (as several processes train; in one process it normalises as
    BatchNorm1d): batch statistics on the (E, 2F) tensor."""
    b = batch([rock_salt(), bcc_iron(), perovskite()], dtype=torch.float64)
    idx, dist = masked(b)
    layer = gated_layer()
    twin = reference_of(layer)
    sync = nn.SyncBatchNorm(2 * 92).double()
    sync.load_state_dict(layer.bn1.state_dict())
    layer.bn1 = sync
    expansion = GaussianExpansion().double()
    v = b["atom_fea"].clone().requires_grad_()
    w = b["atom_fea"].clone().requires_grad_()
    edges = Edges(idx, dist)
    assert layer.path(edges, expansion) == "edge_tensor"
    assert_same_step(layer, twin, layer(v, edges, expansion),
                     twin(w, Edges(idx, dist), expansion), [v], [w])


def test_the_path_follows_the_state_and_the_batch():
    b = batch([rock_salt(), perovskite()], dtype=torch.float64)
    layer, expansion = gated_layer(), GaussianExpansion().double()
    assert layer.path(Edges(b["nbr_idx"], b["nbr_dist"]), expansion) == "row_tables"
    asking = Edges(b["nbr_idx"], b["nbr_dist"].clone().requires_grad_())
    assert layer.path(asking, expansion) == "edge_tensor"  # a gradient for the distances
    empty = Edges(torch.zeros(0, 12, dtype=torch.long), torch.zeros(0, 12))
    assert layer.path(empty, expansion) == "edge_tensor"   # a process's empty share
    layer.eval()
    assert layer.path(asking, expansion) == "folded"       # running statistics
    layer.bn1.running_mean = layer.bn1.running_var = None
    assert layer.path(asking, expansion) == "edge_tensor"  # none: batch statistics
    compiled = compile_convolutions(CGCNN(n_conv=1)).convs[0]
    assert compiled.path(Edges(b["nbr_idx"], b["nbr_dist"]), expansion) == "compiled"
    assert set(PATHS) == {"row_tables", "edge_tensor", "folded", "compiled"}


def test_evaluation_folds_bn1_in_float32_within_rounding():
    """float32 "folded" against float64 (the same path): the folding loses no precision."""
    b = batch([rock_salt(), bcc_iron(), perovskite()])
    torch.manual_seed(1)
    net = CGCNN()
    net(**b)  # one training step's worth of running statistics
    net.eval()
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        got = net(**b)
        want = ref(**{k: (t.double() if t.is_floating_point() else t) for k, t in b.items()})
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# -- torch.compile, opt-in --------------------------------------------------------------
def test_compile_falls_back_to_eager_without_a_compiler(monkeypatch, caplog):
    monkeypatch.setattr(_compile, "cxx_available", lambda: False)
    b = batch([rock_salt(), perovskite()])
    torch.manual_seed(0)
    net = CGCNN()
    twin = compile_convolutions(copy.deepcopy(net))
    with caplog.at_level(logging.WARNING, logger="skcgcnn._compile"):
        out = twin(**b)
    assert "no C++ compiler" in caplog.text
    assert all(conv.compiled_forward.failed for conv in twin.convs)
    torch.testing.assert_close(out, net(**b), rtol=0, atol=0)
    assert twin.state_dict().keys() == net.state_dict().keys()


def test_compile_falls_back_when_compiling_fails(caplog):
    b = batch([rock_salt()])
    torch.manual_seed(0)
    net = CGCNN(n_conv=1)
    twin = compile_convolutions(copy.deepcopy(net), backend="no-such-backend")
    with caplog.at_level(logging.WARNING, logger="skcgcnn._compile"):
        out = twin(**b)
    assert "runs eagerly" in caplog.text and twin.convs[0].compiled_forward.failed
    torch.testing.assert_close(out, net(**b), rtol=0, atol=0)


def test_compiled_module_pickles_and_copies():
    net = compile_convolutions(CGCNN(n_conv=1))
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        wrapper = twin.convs[0].compiled_forward
        assert wrapper.compiled is None and wrapper.eager.__self__ is twin.convs[0]


@pytest.mark.skipif(not _compile.cxx_available(), reason="no C++ compiler for inductor")
def test_inductor_compiled_step_equals_eager():
    """Really compiled (tens of seconds): forward, gradients and BN statistics agree."""
    b = batch([rock_salt(), bcc_iron(), perovskite()])
    torch.manual_seed(0)
    net = CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=16)
    twin = compile_convolutions(copy.deepcopy(net))
    out, want = twin(**b), net(**b)
    assert not any(conv.compiled_forward.failed for conv in twin.convs)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    want.sum().backward()
    for (name, p), q in zip(twin.named_parameters(), net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, p), q in zip(twin.named_buffers(), net.buffers()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_estimator_compile_keeps_the_module_and_its_keys(monkeypatch, caplog):
    from skcgcnn import CGCNNRegressor
    from skcgcnn.graph import GraphCollection, build_graph
    from skcgcnn.atom_features import get_atom_features

    monkeypatch.setattr(_compile, "cxx_available", lambda: False)  # no compile time
    graphs = GraphCollection.from_graphs(
        [build_graph(s) for s in (rock_salt(), bcc_iron(), perovskite())] * 4,
        atom_features=get_atom_features("cgcnn"))
    y = np.arange(12, dtype=float)
    kw = dict(max_epochs=2, batch_size=4, random_state=0, module__atom_fea_len=8,
              module__h_fea_len=8)
    with caplog.at_level(logging.WARNING, logger="skcgcnn._compile"):
        compiled = CGCNNRegressor(compile=True, **kw).fit(graphs, y)
    plain = CGCNNRegressor(**kw).fit(graphs, y)
    assert type(compiled.module_) is CGCNN
    assert compiled.module_.state_dict().keys() == plain.module_.state_dict().keys()
    assert compiled.module_.convs[0].compiled_forward is not None
    assert plain.module_.convs[0].compiled_forward is None
    np.testing.assert_array_equal(compiled.predict(graphs), plain.predict(graphs))


def test_edges_expand_each_distinct_distance_once():
    """The edge product runs over the distinct distances: far fewer rows than edges on a
    symmetric crystal, and the per-edge expansion is exactly the plain one."""
    b = batch([rock_salt(), bcc_iron(), perovskite()])
    edges = Edges(b["nbr_idx"], b["nbr_dist"])
    expansion = GaussianExpansion()
    rows, inverse = edges.distinct(expansion)
    assert len(rows) * 4 < len(edges.dist) and inverse.shape == edges.dist.shape
    assert torch.equal(edges.expanded(expansion), expansion(edges.dist))
    assert edges.distinct(expansion)[0] is rows  # once per batch


def test_gated_layer_under_bf16_autocast_follows_float32():
    b = batch([rock_salt(), bcc_iron(), perovskite()])
    torch.manual_seed(0)
    layer = ConvLayer(92, 41)
    expansion = GaussianExpansion()
    v = b["atom_fea"].clone().requires_grad_()
    w = b["atom_fea"].clone().requires_grad_()
    want = layer(v, Edges(b["nbr_idx"], b["nbr_dist"]), expansion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(w, Edges(b["nbr_idx"], b["nbr_dist"]), expansion)
    assert not torch.equal(got.float(), want)  # the edge work ran in bf16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
    want.sum().backward()
    got.float().sum().backward()
    assert w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
    torch.testing.assert_close(w.grad, v.grad, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("training", [True, False])
def test_gradient_reaches_the_distances_when_asked(training):
    """Distances that require a gradient keep one row per edge, so it flows to them
    ("edge_tensor" in training, "folded" at evaluation), as in the reference."""
    b = batch([rock_salt(), perovskite()], dtype=torch.float64)
    layer = gated_layer().train(training)
    twin = reference_of(layer)
    expansion = GaussianExpansion().double()
    dist = b["nbr_dist"].clone().requires_grad_()
    twin_dist = b["nbr_dist"].clone().requires_grad_()
    edges = Edges(b["nbr_idx"], dist)
    assert layer.path(edges, expansion) == ("edge_tensor" if training else "folded")
    assert_same_step(layer, twin, layer(b["atom_fea"], edges, expansion),
                     twin(b["atom_fea"], Edges(b["nbr_idx"], twin_dist), expansion),
                     [dist], [twin_dist])
    assert dist.grad.abs().sum() > 0
