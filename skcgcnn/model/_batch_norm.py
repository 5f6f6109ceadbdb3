"""Batch norms over rows that stand for several atoms each.

On batches of one atom per class of equivalent atoms (:mod:`skcgcnn.graph._orbits`),
row r counts ``weight[r]`` times in the batch statistics, as if it were repeated, so
that the statistics, the running statistics' update and the gradients are those of
the full batch.  :func:`weighted_batch_norm` has the closed-form backward of a batch
norm over the repeated rows.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def uses_batch_stats(bn: nn.BatchNorm1d) -> bool:
    """Whether ``bn`` normalises with the batch's statistics (as torch decides): in
    training, or without running statistics."""
    return bn.training or bn.running_mean is None


def batch_norm(x: Tensor, bn: nn.BatchNorm1d, weight: Tensor | None = None) -> Tensor:
    """``bn(x)``, where row r of ``x`` counts ``weight[r]`` times in the batch statistics
    (and in the running statistics' update), as if it were repeated; ``bn(x)`` itself
    without weights or with running statistics."""
    if weight is None or not uses_batch_stats(bn):
        return bn(x)
    if type(bn) is not nn.BatchNorm1d:  # SyncBatchNorm and the like take no weights
        raise ValueError(f"atom weights cannot be used with {type(bn).__name__}: batch "
                         "the full graphs (GraphCollection.collate without reduce)")
    out, mean, var = weighted_batch_norm(x, weight, bn.weight if bn.affine else None,
                                         bn.bias if bn.affine else None, bn.eps)
    update_running_stats(bn, mean, var, weight.sum())
    return out


def update_running_stats(bn: nn.BatchNorm1d, mean: Tensor, var: Tensor,
                         total: Tensor) -> None:
    """Update ``bn``'s running statistics (in training) as torch's BatchNorm does, from a
    batch of ``total`` rows with mean ``mean`` and biased variance ``var``."""
    if not (bn.training and bn.track_running_stats):
        return
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # a cumulative average, as torch's BatchNorm
            factor = 1.0 / float(bn.num_batches_tracked)
    if bn.running_mean is None:
        return
    with torch.no_grad():
        unbiased = var * (total / (total - 1).clamp(min=1)).to(var.dtype)
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype),
                                             alpha=factor)


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
