"""The gated convolution's edge batch norm on the row tables (skcgcnn.model._edge_norm,
the "row_tables" path) against the computation on the (E, 2F) edge tensor
("edge_tensor"), in float64, with atom weights."""
import copy

import pytest
import torch
from torch import nn

from skcgcnn.model import ConvLayer, Edges, GaussianExpansion, _edge_norm
from skcgcnn.model._batch_norm import weighted_batch_norm
from skcgcnn.model._edge_norm import gated_edge_conv
from skcgcnn.model.fused import assemble_edges, gated_sum

F, G = 4, 41


def random_edges(n_atoms=30, m=5, masked=False, weighted=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    nbr_idx = torch.randint(0, n_atoms, (n_atoms, m), generator=gen)
    # distances on a coarse grid, so that some repeat (distinct rows < edges)
    nbr_dist = 1.0 + torch.randint(0, 40, (n_atoms, m), generator=gen).double() * 0.15
    if masked:
        nbr_idx[::4, -2:] = -1
        nbr_idx[5] = -1  # an atom without neighbours
    weight = torch.randint(1, 5, (n_atoms,), generator=gen).double() if weighted else None
    return Edges(nbr_idx, nbr_dist, weight)


def plain(self_rows, nbr_rows, w_dist, gamma, beta, edges, expansion):
    """assemble -> weighted batch norm -> gate and sum, as the edge-tensor path."""
    rows, inverse = edges.distinct(expansion)
    dist_rows = rows.to(w_dist.dtype) @ w_dist.t()
    z = assemble_edges(self_rows, nbr_rows, dist_rows, edges.src, edges.dst, inverse,
                       edges.n_atoms, edges.dense)
    weight = (torch.ones(len(edges.src), dtype=z.dtype) if edges.atom_weight is None
              else edges.atom_weight.index_select(0, edges.src))
    y, mean, var = weighted_batch_norm(z, weight, gamma, beta, 1e-5)
    return gated_sum(y, edges.src, edges.n_atoms, edges.dense), mean, var


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunk", [_edge_norm.CHUNK_EDGES, 7])
def test_equals_the_batch_norm_on_the_edge_tensor(monkeypatch, masked, weighted, chunk):
    monkeypatch.setattr(_edge_norm, "CHUNK_EDGES", chunk)  # 7: many chunks
    monkeypatch.setattr(_edge_norm, "_chunked", lambda device: True)
    edges = random_edges(masked=masked, weighted=weighted)
    assert edges.dense is not masked
    expansion = GaussianExpansion()
    gen = torch.Generator().manual_seed(1)
    n = edges.n_atoms
    leaves = [torch.randn(n, 2 * F, generator=gen, dtype=torch.float64) + 3.0,
              torch.randn(n, 2 * F, generator=gen, dtype=torch.float64) - 2.0,
              torch.randn(2 * F, G, generator=gen, dtype=torch.float64),
              torch.rand(2 * F, generator=gen, dtype=torch.float64) + 0.5,
              torch.randn(2 * F, generator=gen, dtype=torch.float64)]
    leaves = [t.requires_grad_() for t in leaves]
    twins = [t.detach().clone().requires_grad_() for t in leaves]
    groups = edges.groups(expansion, torch.float64)
    if chunk == 7:
        assert len(groups.chunks()) > 5
    got, mean, var = gated_edge_conv(*leaves[:3], groups, *leaves[3:], 1e-5)
    want, want_mean, want_var = plain(*twins, edges, expansion)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mean, want_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, want_var, rtol=1e-10, atol=1e-12)
    out_grad = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    got.backward(out_grad)
    want.backward(out_grad)
    for name, a, b in zip(["self", "nbr", "w_dist", "gamma", "beta"], leaves, twins):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11, msg=name)
    assert groups.total == (len(edges.src) if edges.atom_weight is None
                            else edges.atom_weight.index_select(0, edges.src).sum())


def test_far_distances_leave_whole_blocks_of_the_expansion_zero():
    """The products with X go by row blocks over their nonzero columns; a block whose
    distances all lie beyond the last centre has none."""
    edges = random_edges(weighted=False, seed=3)
    far = edges.dist > 4.0
    edges.dist[far] += 40.0  # Gaussians beyond 40 A: exactly 0 (the cutoff)
    expansion = GaussianExpansion()
    groups = edges.groups(expansion, torch.float64)
    assert any(cols.stop == cols.start for _, cols in groups.x_blocks)
    weight = torch.randn(2 * F, G, dtype=torch.float64)
    x = groups.get("x", torch.float64)
    out = groups.x_times(weight, torch.full((len(x), 2 * F), float("nan"),
                                            dtype=torch.float64))
    torch.testing.assert_close(out, x @ weight.t(), rtol=1e-12, atol=1e-12)
    values = torch.randn(len(x), 2 * F, dtype=torch.float64)
    torch.testing.assert_close(groups.times_x(values), values.t() @ x, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
def test_conv_layer_default_path_equals_the_edge_tensor_path(affine):
    """ConvLayer in training: the row-table path (default) and edge_forward without
    groups agree in outputs, gradients and bn1's running statistics."""
    torch.manual_seed(0)
    layer = ConvLayer(F, G).double()
    if not affine:
        layer.bn1 = nn.BatchNorm1d(2 * F, affine=False).double()
    twin = copy.deepcopy(layer)
    edges = random_edges()
    expansion = GaussianExpansion()
    atom_fea = torch.randn(edges.n_atoms, F, dtype=torch.float64, requires_grad=True)
    got = layer(atom_fea, edges, expansion)
    rows, inverse = edges.distinct(expansion)
    want = twin.edge_forward(atom_fea, edges.src, edges.dst, rows, inverse, edges.n_atoms,
                             edges.dense, edges.atom_weight)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(got)
    (got * grad).sum().backward()
    (want * grad).sum().backward()
    for (name, p), q in zip(layer.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-11, msg=name)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(layer.bn1, name), getattr(twin.bn1, name),
                                   rtol=1e-12, atol=1e-12, msg=name)


def test_bfloat16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    layer = ConvLayer(16, G)
    edges = random_edges(n_atoms=60, m=8)
    edges.dist = edges.dist.float()
    edges.atom_weight = edges.atom_weight.float()
    expansion = GaussianExpansion()
    atom_fea = torch.randn(edges.n_atoms, 16)
    want = copy.deepcopy(layer)(atom_fea, edges, expansion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(atom_fea, edges, expansion)
    got.float().sum().backward()
    assert torch.isfinite(layer.fc_full.weight.grad).all()
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_chunks_only_where_they_pay(monkeypatch):
    """By chunks on the CPU with one thread or spinning OpenMP threads; in one pass with
    several sleeping threads (each operation wakes them) and on other devices."""
    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        torch.set_num_threads(1)
        assert _edge_norm._chunked(torch.device("cpu"))
        torch.set_num_threads(2)
        assert not _edge_norm._chunked(torch.device("cpu"))
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        assert _edge_norm._chunked(torch.device("cpu"))
        assert not _edge_norm._chunked(torch.device("cuda"))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(_edge_norm, "_chunked", lambda device: False)
    monkeypatch.setattr(_edge_norm, "CHUNK_EDGES", 7)
    edges = random_edges()
    assert edges.groups(GaussianExpansion()).chunks() == [
        (slice(0, edges.n_atoms), slice(0, len(edges.src)))]
