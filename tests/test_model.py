from __future__ import annotations

import numpy as np
import pytest
import torch

from skcgcnn.graph import build_graph, GraphCollection
from skcgcnn.atom_features import get_atom_features
from skcgcnn.estimators import graphs_to_tensors
from skcgcnn.model import (CGCNN, ConvLayer, Edges, GaussianExpansion, ReferenceConvLayer,
                           SimpleConvLayer, mean_pool)

from ._shared import (EXPECTED, PRETRAINED, SAMPLE_REGRESSION, load_structures,
                      needs_shared)
from .test_graph import bcc_iron, perovskite, rock_salt


def batch(structures, dtype=torch.float32):
    graphs = GraphCollection.from_graphs([build_graph(s) for s in structures],
                                         atom_features=get_atom_features("cgcnn"))
    out = graphs_to_tensors(graphs)
    assert out["nbr_idx"].dtype == torch.int64
    out["atom_fea"] = out["atom_fea"].to(dtype)
    out["nbr_dist"] = out["nbr_dist"].to(dtype)
    return out


def assert_same_step(net, twin, out, want, inputs=(), twin_inputs=(), rtol=1e-10):
    """``out`` and ``want`` equal, and after a backward of ``sum(out^2)`` (of
    ``sum(want^2)``) the gradients of ``inputs`` (``twin_inputs``) and of the parameters,
    and the buffers (running statistics), of ``net`` and ``twin``, in float64."""
    torch.testing.assert_close(out, want, rtol=rtol, atol=rtol)
    out.square().sum().backward()
    want.square().sum().backward()
    for a, b in zip(inputs, twin_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=100 * rtol, atol=rtol)
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=100 * rtol, atol=rtol, msg=name)
    for (name, p), q in zip(net.named_buffers(), twin.buffers()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=rtol / 100, msg=name)


ORIGINAL_KEYS = {
    "embedding.weight": (64, 92), "embedding.bias": (64,),
    "convs.0.fc_full.weight": (128, 169), "convs.0.fc_full.bias": (128,),
    "convs.0.bn1.weight": (128,), "convs.0.bn1.running_var": (128,),
    "convs.0.bn2.weight": (64,), "convs.0.bn2.num_batches_tracked": (),
    "conv_to_fc.weight": (128, 64), "fc_out.weight": (1, 128), "fc_out.bias": (1,),
}


def test_parameter_names_and_shapes_follow_the_original():
    state = CGCNN().state_dict()
    for key, shape in ORIGINAL_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert {k.split(".")[1] for k in state if k.startswith("convs.")} == {"0", "1", "2"}
    assert not any("expansion" in k for k in state)  # the centres are not persistent
    assert sum(p.numel() for p in CGCNN().parameters()) == 80833
    deep = CGCNN(n_h=3, n_conv=2).state_dict()
    assert "fcs.1.weight" in deep and "convs.2.fc_full.weight" not in deep


def test_repr_names_the_layers():
    text = repr(CGCNN(n_conv=2))
    assert "ConvLayer" in text and "fc_full" in text and "conv_to_fc" in text
    assert "SimpleConvLayer" in repr(CGCNN(conv="simple"))


def test_gaussian_expansion():
    exp = GaussianExpansion(0.0, 8.0, 0.2)
    out = exp(torch.tensor([0.0, 1.0]))
    assert out.shape == (2, 41)
    assert out[0, 0] == 1.0 and abs(out[1, 5] - 1.0) < 1e-6
    np.testing.assert_allclose(out[1, 4].item(), np.exp(-1.0), rtol=1e-6)
    assert out[0, -1] == 0.0  # exp(-1600): below the cut-off, exactly 0


def test_output_shapes_and_classification():
    b = batch([rock_salt(), bcc_iron(), perovskite()])
    assert CGCNN()(**b).shape == (3, 1)
    assert CGCNN(n_out=4)(**b).shape == (3, 4)
    clf = CGCNN(n_out=2, classification=True).eval()
    probs = clf(**b).exp()
    np.testing.assert_allclose(probs.sum(1).detach().numpy(), 1.0, rtol=1e-6)


def test_mean_pool():
    fea = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    np.testing.assert_allclose(mean_pool(fea, torch.tensor([0, 0, 1])).numpy(),
                               [[2.0, 3.0], [10.0, 0.0]])


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="conv must be one of"):
        CGCNN(conv="fancy")
    with pytest.raises(ValueError, match=r"kernel must be one of \['fused', 'reference'\]"):
        CGCNN(kernel="cuda")
    with pytest.raises(ValueError, match="n_conv must be an integer >= 1"):
        CGCNN(n_conv=0)


def test_edge_list_path_equals_the_dense_one():
    """A batch with one masked slot takes the scatter path; the rest must not change."""
    torch.manual_seed(0)
    net = CGCNN().double().eval()
    b = batch([rock_salt(), bcc_iron(), perovskite()], dtype=torch.float64)
    dense = net(**b)
    with_far = {**b, "nbr_idx": torch.cat([b["nbr_idx"], torch.full((15, 1), -1)], dim=1),
                "nbr_dist": torch.cat([b["nbr_dist"], torch.zeros(15, 1,
                                                                 dtype=torch.float64)], dim=1)}
    torch.testing.assert_close(net(**with_far), dense, rtol=1e-12, atol=1e-12)


def test_masked_neighbours_do_not_contribute():
    b = batch([rock_salt()])
    layer = ConvLayer(92, 41).eval()
    expansion = GaussianExpansion()
    full = layer(b["atom_fea"], Edges(b["nbr_idx"], b["nbr_dist"]), expansion)
    # pointing a masked slot anywhere must not change anything
    masked_idx = b["nbr_idx"].clone()
    masked_idx[:, 11] = -1
    dist = b["nbr_dist"].clone()
    dist[:, 11] = 0.0
    a = layer(b["atom_fea"], Edges(masked_idx, dist), expansion)
    dist[:, 11] = 3.0
    c = layer(b["atom_fea"], Edges(masked_idx, dist), expansion)
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, full)


def test_simple_convolution_equals_its_equation():
    b = batch([bcc_iron(), perovskite()])
    torch.manual_seed(0)
    layer = SimpleConvLayer(92, 41).eval()
    expansion = GaussianExpansion()
    out = layer(b["atom_fea"], Edges(b["nbr_idx"], b["nbr_dist"]), expansion)
    v, u = b["atom_fea"], expansion(b["nbr_dist"])
    z = torch.cat([v[b["nbr_idx"]], u], dim=2)                   # (N, M, F + G)
    summed = layer.bn(torch.nn.functional.linear(z, layer.fc_nbr.weight).sum(1))
    expected = torch.nn.functional.softplus(layer.fc_self(v) + summed)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_shared
def test_prediction_invariant_under_symmetry_operations():
    torch.manual_seed(1)
    net = CGCNN().eval()
    _, structures, _ = load_structures(str(SAMPLE_REGRESSION))
    s = structures[2]
    reference = net(**batch([s])).item()
    rot = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.5],
                                                [-0.2, 0.5, 0]], dtype=torch.float64)).numpy()
    from pymatgen.core import Lattice, Structure

    variants = [Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)]
    moved = s.copy()
    moved.translate_sites(list(range(len(s))), [0.4, 0.1, -0.3])
    variants.append(moved)
    order = np.random.default_rng(1).permutation(len(s))
    variants.append(Structure(s.lattice, [s.species[i] for i in order], s.frac_coords[order]))
    variants.append(s * (2, 2, 2))
    for v in variants:
        assert abs(net(**batch([v])).item() - reference) < 1e-4


# -- the kernels: fused (default) and reference --------------------------------------------
def test_kernels_pick_the_layer_and_share_the_state_dict():
    fused, reference = CGCNN(), CGCNN(kernel="reference")
    assert all(type(c) is ConvLayer for c in fused.convs)
    assert all(type(c) is ReferenceConvLayer for c in reference.convs)
    assert all(type(c) is SimpleConvLayer
               for c in CGCNN(conv="simple", kernel="reference").convs)
    assert fused.weighs_atoms and not reference.weighs_atoms
    state = fused.state_dict()
    assert list(reference.state_dict()) == list(state)  # the original's names, in order
    reference.load_state_dict(state)
    assert "ReferenceConvLayer" in repr(reference)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_network_equals_the_reference_network(training, masked):
    """The whole network in float64, from the same weights: outputs, every gradient and
    the running statistics after a step (training), and the outputs at evaluation."""
    b = batch([rock_salt(), bcc_iron(), perovskite()], dtype=torch.float64)
    if masked:  # the edge-list path: some slots masked
        b["nbr_idx"] = b["nbr_idx"].clone()
        b["nbr_idx"][::3, -2:] = -1
    torch.manual_seed(0)
    net = CGCNN(n_conv=2, n_h=2).double()
    net(**b)  # running statistics away from their initial values
    reference = CGCNN(n_conv=2, n_h=2, kernel="reference").double()
    reference.load_state_dict(net.state_dict())
    net.train(training)
    reference.train(training)
    assert_same_step(net, reference, net(**b), reference(**b))


def test_reference_kernel_refuses_atom_weights():
    b = batch([rock_salt()])
    with pytest.raises(ValueError, match="take no atom weights.*reduce_atoms=False"):
        CGCNN(kernel="reference")(**b, atom_weight=torch.ones(len(b["atom_fea"])))


@needs_shared
def test_reference_kernel_reproduces_the_original_checkpoint():
    """The checkpoint parity of tests/test_estimators.py, through the reference kernel:
    ``module__kernel="reference"`` rebuilds the network, the checkpoint's weights load."""
    from skcgcnn import load_cgcnn_checkpoint

    from .test_estimators import check_parity, read_expected

    model = "formation-energy-per-atom"
    pipe = load_cgcnn_checkpoint(PRETRAINED / f"{model}.pth.tar")
    state = pipe[-1].module_.state_dict()
    pipe[-1].set_params(module__kernel="reference")
    assert type(pipe[-1].module_.convs[0]) is ReferenceConvLayer
    pipe[-1].module_.load_state_dict(state)
    pipe[-1].module_.eval()
    ids, structures, _ = load_structures(str(SAMPLE_REGRESSION))
    check_parity(ids, structures, pipe.predict(structures),
                 read_expected(EXPECTED / model / "sample_regression.csv"))
