from __future__ import annotations

import numpy as np
import pytest
import torch

from skcgcnn.graph import build_graph, GraphCollection
from skcgcnn.atom_features import get_atom_features
from skcgcnn.estimators import graphs_to_tensors
from skcgcnn.model import CGCNN, ConvLayer, Edges, GaussianExpansion, SimpleConvLayer, mean_pool

from ._shared import SAMPLE_REGRESSION, load_structures, needs_shared
from .test_graph import bcc_iron, perovskite, rock_salt


def batch(structures, dtype=torch.float32):
    graphs = GraphCollection.from_graphs([build_graph(s) for s in structures],
                                         atom_features=get_atom_features("cgcnn"))
    out = graphs_to_tensors(graphs)
    assert out["nbr_idx"].dtype == torch.int64
    out["atom_fea"] = out["atom_fea"].to(dtype)
    out["nbr_dist"] = out["nbr_dist"].to(dtype)
    return out


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
