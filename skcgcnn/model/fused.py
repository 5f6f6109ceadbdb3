"""The gated convolution, fast: eq. 5 of :mod:`skcgcnn.model` rewritten for speed.

:class:`ConvLayer` has the parameters of the original (and of
:class:`~skcgcnn.model.reference.ReferenceConvLayer`) and gives its outputs, gradients
and running statistics up to float rounding; tests/test_conv_speedups.py and
tests/test_edge_norm.py compare them in float64.  What changes is how ``z W + b`` and
what follows are computed (issue 16):

* ``fc_full`` is one Linear(2F + G -> 2F) on ``z_ij = v_i ⊕ v_j ⊕ u_ij``; split by the
  blocks of its weight, ``z_ij W + b = S[i] + A[j] + T[d_ij]``, a sum of three row
  tables: ``S = v W_i + b`` per atom as centre, ``A = v W_j`` per atom as neighbour and
  ``T = u W_u`` per *distinct* distance of the batch (symmetry-equivalent atoms share
  their distances: about 8x fewer rows than edges on Materials Project crystals).
* :func:`assemble_edges` sums the three rows of each edge in one pass (and scatters the
  gradient back into the tables); :func:`gated_sum` computes
  ``sum_j sigmoid(y_f) * softplus(y_c)`` and writes its gradient into one (E, 2F)
  buffer.  Both are exact: the same kernels on the same operands as autograd, only
  the bookkeeping differs.
* With batch statistics, ``bn1``'s mean cancels ``b``: the bias is kept in the graph
  with a gradient of exactly 0 (for DDP), not the float noise that AdamW would turn
  into steps of full size.

Which computation runs is decided by :meth:`ConvLayer.path`, from the layer's state and
the batch only, in this order:

1. ``"compiled"`` -- :func:`skcgcnn._compile.compile_convolutions` (an estimator's
   ``compile=True``) was applied: :meth:`ConvLayer.edge_forward` runs under
   ``torch.compile``, which computes "folded" or "edge_tensor" by the rules below; where
   compiling fails, the eager path of those rules runs from then on.
2. ``"folded"`` -- ``bn1`` normalises with running statistics (evaluation mode): it is
   an affine map, folded into ``fc_full``; then :func:`assemble_edges` and
   :func:`gated_sum`.
3. ``"row_tables"`` -- ``bn1`` normalises with batch statistics (training), is a plain
   ``nn.BatchNorm1d``, the batch has edges and the distances ask for no gradient: the
   default in training.  ``bn1``, the gate and the sum run on the row tables, a chunk of
   edges at a time (:func:`~skcgcnn.model._edge_norm.gated_edge_conv`), with no
   (E, 2F) batch-norm passes.
4. ``"edge_tensor"`` -- batch statistics otherwise: distances that require a gradient
   (one table row per edge keeps them in the graph), a SyncBatchNorm (several
   processes), an empty batch.  :func:`assemble_edges`, ``bn1`` on the (E, 2F) tensor
   (:func:`~skcgcnn.model._batch_norm.batch_norm`), :func:`gated_sum`.

``bn2`` (over atoms) is :func:`~skcgcnn.model._batch_norm.batch_norm` on every path.
With atom weights (batches of one atom per class of equivalent atoms) the edges count
their centre's weight in ``bn1`` and the atoms theirs in ``bn2``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as fn

from ._batch_norm import batch_norm, update_running_stats, uses_batch_stats
from ._edge_norm import EdgeGroups, gated_edge_conv
from ._edges import Edges, GaussianExpansion

#: What :meth:`ConvLayer.path` answers, in the order of the rules above.
PATHS = ("compiled", "folded", "row_tables", "edge_tensor")


class ConvLayer(nn.Module):
    """The gated crystal-graph convolution (paper eq. 5, tutorial eq. 2), fast.

    forward(atom_fea (N, F), edges: Edges, expansion: GaussianExpansion) -> (N, F).
    Masked neighbours are absent from ``edges``: they count neither in the sum nor in
    ``bn1``'s batch statistics.  The computation is one of :data:`PATHS`, chosen by
    :meth:`path` (see :mod:`skcgcnn.model.fused`); :meth:`edge_forward` is what
    :func:`skcgcnn._compile.compile_convolutions` compiles (opt-in).
    """

    #: takes atom weights (batches of one atom per class of equivalent atoms)
    weighs_atoms = True
    #: set by compile_convolutions; a class attribute, so older pickles still load
    compiled_forward = None

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.nbr_fea_len = nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.sigmoid = nn.Sigmoid()
        self.softplus1 = nn.Softplus()
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.softplus2 = nn.Softplus()

    def path(self, edges: Edges, expansion: GaussianExpansion) -> str:
        """The computation :meth:`forward` takes on ``edges`` now, one of :data:`PATHS`."""
        if self.compiled_forward is not None:
            return "compiled"
        return self._eager_path(edges, expansion)

    def _eager_path(self, edges: Edges, expansion: GaussianExpansion) -> str:
        if not uses_batch_stats(self.bn1):
            return "folded"
        expanded, _ = edges.distinct(expansion)
        if type(self.bn1) is nn.BatchNorm1d and len(edges.src) \
                and not expanded.requires_grad:
            return "row_tables"
        return "edge_tensor"

    def forward(self, atom_fea: Tensor, edges: Edges, expansion: GaussianExpansion) -> Tensor:
        expanded, inverse = edges.distinct(expansion)
        groups = (edges.groups(expansion, atom_fea.dtype)
                  if self._eager_path(edges, expansion) == "row_tables" else None)
        args = (atom_fea, edges.src, edges.dst, expanded, inverse, edges.n_atoms,
                edges.dense, edges.atom_weight)
        if self.compiled_forward is not None:  # compiled on the edge tensor; its eager
            return self.compiled_forward(*args, groups=groups)  # fallback as below
        return self.edge_forward(*args, groups=groups)

    def edge_forward(self, atom_fea: Tensor, src: Tensor, dst: Tensor, expanded: Tensor,
                     inverse: Tensor, n_atoms: int, dense: bool,
                     atom_weight: Tensor | None = None,
                     groups: EdgeGroups | None = None) -> Tensor:
        """The layer on flat edges: ``src``, ``dst``, ``inverse`` (E,) and the expanded
        distinct distances ``expanded`` (D, G); edge e's distance is row ``inverse[e]``;
        ``atom_weight`` (N,): how many atoms each one stands for (None: one each).
        "folded" with running statistics; with batch statistics "row_tables" when
        ``groups`` (the same edges grouped, :meth:`Edges.groups`) is given, else
        "edge_tensor"."""
        f = self.atom_fea_len
        w, b = self.fc_full.weight, self.fc_full.bias
        folded = not uses_batch_stats(self.bn1)
        if folded:  # BN(x W^T + b) = x (s W)^T + s (b - mu) + beta, s = gamma / sigma
            bn = self.bn1
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight
            b = (b - bn.running_mean) * scale + (bn.bias if bn.affine else 0.0)
            w = w * scale.unsqueeze(1)
        else:  # batch statistics cancel the bias: kept in the graph, gradient exactly 0
            b = b.detach() + 0.0 * b
        self_part = fn.linear(atom_fea, w[:, :f], b)                 # S (N, 2F)
        nbr_part = fn.linear(atom_fea, w[:, f:2 * f])                  # A (N, 2F)
        if groups is not None and not folded:  # "row_tables"
            bn = self.bn1
            summed, mean, var = gated_edge_conv(self_part, nbr_part, w[:, 2 * f:], groups,
                                                bn.weight if bn.affine else None,
                                                bn.bias if bn.affine else None, bn.eps)
            update_running_stats(bn, mean, var, groups.total)
        else:  # "folded", "edge_tensor"
            dist_part = fn.linear(expanded.to(atom_fea.dtype), w[:, 2 * f:])  # T (D, 2F)
            gated = assemble_edges(self_part, nbr_part, dist_part, src, dst, inverse,
                                   n_atoms, dense)                     # (E, 2F)
            if not folded:
                edge_weight = (None if atom_weight is None
                               else atom_weight.index_select(0, src))
                gated = batch_norm(gated, self.bn1, edge_weight)
            summed = gated_sum(gated, src, n_atoms, dense)            # (N, F)
        summed = batch_norm(summed, self.bn2, atom_weight)
        return self.softplus2(atom_fea + summed)


# -- the passes over the (E, 2F) edge tensor, with hand-written backwards ---------------
class _AssembleEdges(torch.autograd.Function):
    @staticmethod
    def forward(ctx, self_rows, nbr_rows, dist_rows, src, dst, inverse, n_atoms, dense):
        dtype = nbr_rows.dtype
        table = torch.cat([nbr_rows, dist_rows.to(dtype), self_rows.to(dtype)])
        n_dist = len(dist_rows)
        # a bag of three table rows per edge, summed in one pass
        bags = torch.stack([dst, inverse + n_atoms, src + (n_atoms + n_dist)], dim=1)
        edges = fn.embedding_bag(bags, table, mode="sum")
        ctx.save_for_backward(src, dst, inverse)
        ctx.sizes = (n_atoms, n_dist, dense)
        return edges

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        src, dst, inverse = ctx.saved_tensors
        n_atoms, n_dist, dense = ctx.sizes
        width = grad.shape[1]
        grad_nbr = grad.new_zeros(n_atoms, width).index_add_(0, dst, grad)
        grad_dist = grad.new_zeros(n_dist, width).index_add_(0, inverse, grad)
        if dense:
            grad_self = grad.view(n_atoms, -1, width).sum(dim=1)
        else:
            grad_self = grad.new_zeros(n_atoms, width).index_add_(0, src, grad)
        return grad_self, grad_nbr, grad_dist, None, None, None, None, None


def assemble_edges(self_rows: Tensor, nbr_rows: Tensor, dist_rows: Tensor, src: Tensor,
                   dst: Tensor, inverse: Tensor, n_atoms: int, dense: bool) -> Tensor:
    """``self_rows[src] + nbr_rows[dst] + dist_rows[inverse]``, shape (E, K).

    ``self_rows`` and ``nbr_rows`` are (N, K), ``dist_rows`` is (D, K) for the distinct
    distances.  With ``dense`` (M edges per atom, in atom order) the gradient of the
    centre rows is a reshape and a sum rather than a scatter.
    """
    return _AssembleEdges.apply(self_rows, nbr_rows, dist_rows, src, dst, inverse, n_atoms,
                                dense)


class _GatedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gated, src, n_atoms, dense):
        f = gated.shape[1] // 2
        nbr_filter, nbr_core = gated[:, :f], gated[:, f:]
        gate = torch.sigmoid(nbr_filter)
        core = fn.softplus(nbr_core)
        message = gate * core
        if dense:
            summed = message.view(n_atoms, -1, f).sum(dim=1)
        else:
            summed = message.new_zeros(n_atoms, f).index_add_(0, src, message)
        ctx.save_for_backward(gated, gate, core, src)
        ctx.sizes = (n_atoms, dense)
        return summed

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        gated, gate, core, src = ctx.saved_tensors
        n_atoms, dense = ctx.sizes
        f = gate.shape[1]
        grad = grad.to(gate.dtype)
        per_edge = grad.unsqueeze(1) if dense else grad.index_select(0, src)
        shape = (n_atoms, -1, f) if dense else (-1, f)
        out = torch.empty_like(gated)
        scratch = torch.empty_like(gate)
        # d/d filter = grad * core * sigmoid'; d/d core = grad * gate * softplus'
        torch.mul(per_edge, core.view(shape), out=scratch.view(shape))
        torch.ops.aten.sigmoid_backward.grad_input(scratch, gate, grad_input=out[:, :f])
        torch.mul(per_edge, gate.view(shape), out=scratch.view(shape))
        torch.ops.aten.softplus_backward.grad_input(scratch, gated[:, f:], 1.0, 20.0,
                                                    grad_input=out[:, f:])
        return out, None, None, None


def gated_sum(gated: Tensor, src: Tensor, n_atoms: int, dense: bool) -> Tensor:
    """``sum over each atom's edges of sigmoid(gated[:, :F]) * softplus(gated[:, F:])``,
    (E, 2F) -> (N, F); softplus with torch's defaults (beta 1, threshold 20)."""
    return _GatedSum.apply(gated, src, n_atoms, dense)


__all__ = ["ConvLayer", "PATHS"]
