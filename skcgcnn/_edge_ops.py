"""Edge-level operations of the gated convolution with hand-written backwards.

Autograd runs the rest of :class:`skcgcnn.model.ConvLayer`; these two functions cover the
passes over the (E, 2F) edge tensors, where autograd made copies the equation does not
need (issue 16):

* :func:`assemble_edges` builds ``z_ij W + b`` from three row tables (per atom as centre,
  per atom as neighbour, per distinct distance), so the (E, G) edge product becomes a
  product over the distinct distances of the batch (about 8x fewer rows on Materials
  Project crystals) and a gather; its backward scatters the gradient into the three
  tables instead of copying it through autograd's in-place bookkeeping.
* :func:`gated_sum` computes ``sum_j sigmoid(filter) * softplus(core)`` and writes its
  gradient straight into one (E, 2F) buffer (no concatenation of two halves).

Both are exact: every value is computed by the same kernels on the same operands as the
plain autograd version, only the bookkeeping differs.

:func:`weighted_batch_norm` is the batch norm of rows that stand for several atoms each
(batches of one atom per class of equivalent atoms, :mod:`skcgcnn.graph._orbits`), with
the closed-form backward of a batch norm over the rows repeated.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as fn


def unique_with_inverse(values: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct values, sorted, and for each element the index of its value.

    numpy's sort is several times faster than torch's on the CPU; CUDA tensors stay on
    the device.
    """
    if values.device.type == "cpu":
        distinct, inverse = np.unique(values.detach().numpy(), return_inverse=True)
        return torch.from_numpy(distinct), torch.from_numpy(inverse.reshape(-1)).long()
    distinct, inverse = torch.unique(values, sorted=True, return_inverse=True)
    return distinct, inverse


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


class _WeightedBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, share, gamma, beta, eps):
        mean = share @ x                                     # share = weight / total
        centred = x - mean
        var = share @ (centred * centred)
        inv = torch.rsqrt(var + eps)
        scale = inv if gamma is None else inv * gamma
        out = centred * scale if beta is None else torch.addcmul(beta, centred, scale)
        ctx.save_for_backward(centred, inv, share, gamma)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _mean, _var):
        centred, inv, share, gamma = ctx.saved_tensors
        grad_sum = grad.sum(dim=0)                           # sum of dy
        grad_xhat = (grad * centred).sum(dim=0) * inv        # sum of dy * xhat
        # dx_r = gamma inv (dy_r - share_r (sum dy + xhat_r * sum dy xhat))
        spread = torch.addcmul(grad_sum, centred, grad_xhat * inv)
        grad_x = torch.addcmul(grad, spread, share.unsqueeze(1), value=-1.0)
        grad_x.mul_(inv if gamma is None else inv * gamma)
        return (grad_x, None, None if gamma is None else grad_xhat,
                None if gamma is None else grad_sum, None)


def weighted_batch_norm(x: Tensor, weight: Tensor, gamma: Tensor | None,
                        beta: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Batch normalisation of (R, C) rows where row r counts ``weight[r]`` times:
    returns the output and the weighted batch mean and (biased) variance."""
    share = weight.to(x.dtype)
    share = share / share.sum()
    if gamma is not None:
        gamma, beta = gamma.to(x.dtype), beta.to(x.dtype)
    return _WeightedBatchNorm.apply(x, share, gamma, beta, eps)
