"""The fitted CGCNN at evaluation, rewritten in operations that ONNX has (export time only).

:class:`ExportableCGCNN` computes what :class:`skcgcnn.model.CGCNN` computes in
evaluation mode, followed by the target scaler's inverse, on the padded (N, M)
neighbour arrays of :meth:`skcgcnn.graph.GraphCollection.collate`: no flat edge list
(its length depends on the data), no ``np.unique`` of the distances, no custom autograd
functions.  A masked neighbour slot (``nbr_idx == -1``) gathers atom 0 and its message
is multiplied by 0, so it is left out of the neighbour sum as in the model.  The batch
norms use their running statistics (``bn1`` folded into ``fc_full``, as the fast layer
folds it at evaluation), so every crystal's output depends on that crystal only.

This module imports torch; it is used by :func:`skcgcnn.export.export_onnx` only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as fn

from ..model import CGCNN, ConvLayer, ReferenceConvLayer, SimpleConvLayer
from ..model._edges import EXP_CUTOFF


def _running_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean, scale, shift)`` with ``bn(x) = (x - mean) * scale + shift`` at
    evaluation.  The mean is subtracted first, as torch's batch norm does: folded into
    the shift, a large running mean would cancel against ``x * scale`` and cost digits."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    return tuple(t.detach().clone() for t in (bn.running_mean, scale, shift))


def edge_softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` as ``relu(x) + log(1 + exp(-|x|))``, in four element-wise ONNX
    operations that onnxruntime runs 2-3 times faster than its ``Softplus``: for the
    (N, M, F) messages, where that is a third of the time.  Its absolute error is that
    of float32 near 1 (6e-8, where ``log1p`` would keep the relative precision of small
    values), so the atom features and the head, whose errors the pooling adds up, keep
    the exact ``Softplus``."""
    return torch.relu(x) + torch.log(1.0 + torch.exp(-x.abs()))


class _GatedConv(nn.Module):
    """Paper eq. 5 at evaluation on padded neighbour arrays.

    ``z_ij W + b`` is split by the blocks of ``fc_full``'s weight into ``S[i] + A[j] +
    T[d_ij]`` (centre, neighbour, Gaussian-expanded distance), with ``bn1`` folded in,
    and by its rows into the filter and the core halves, each (N, M, F).
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        f = layer.atom_fea_len
        # bn1 folded into fc_full, as the fast layer folds it at evaluation
        mean, scale, shift = _running_affine(layer.bn1)
        w = layer.fc_full.weight.detach() * scale.unsqueeze(1)
        b = (layer.fc_full.bias.detach() - mean) * scale + shift
        for half, rows in (("filter", slice(0, f)), ("core", slice(f, 2 * f))):
            self.register_buffer(f"w_self_{half}", w[rows, :f].clone())
            self.register_buffer(f"w_nbr_{half}", w[rows, f:2 * f].clone())
            self.register_buffer(f"w_dist_{half}", w[rows, 2 * f:].clone())
            self.register_buffer(f"bias_{half}", b[rows].clone())
        for name, value in zip(("mean", "scale", "shift"), _running_affine(layer.bn2)):
            self.register_buffer(f"bn2_{name}", value)

    def _half(self, half: str, atom_fea: Tensor, nbr_idx: Tensor, dist_idx: Tensor,
              expanded: Tensor) -> Tensor:
        """``S[i] + A[j] + T[d_ij]`` of one half, shape (N, M, F)."""
        n, m = nbr_idx.shape
        self_part = fn.linear(atom_fea, getattr(self, f"w_self_{half}"),
                              getattr(self, f"bias_{half}"))                # (N, F)
        nbr_part = fn.linear(atom_fea, getattr(self, f"w_nbr_{half}"))      # (N, F)
        dist_part = fn.linear(expanded, getattr(self, f"w_dist_{half}"))    # (D, F)
        neighbours = nbr_part.index_select(0, nbr_idx.reshape(-1)).reshape(n, m, -1)
        dist_part = dist_part.index_select(0, dist_idx.reshape(-1)).reshape(n, m, -1)
        return neighbours + dist_part + self_part.unsqueeze(1)

    def forward(self, atom_fea: Tensor, nbr_idx: Tensor, mask: Tensor, dist_idx: Tensor,
                expanded: Tensor) -> Tensor:
        nbr_filter = self._half("filter", atom_fea, nbr_idx, dist_idx, expanded)
        nbr_core = self._half("core", atom_fea, nbr_idx, dist_idx, expanded)
        message = torch.sigmoid(nbr_filter) * edge_softplus(nbr_core) * mask
        summed = (message.sum(dim=1) - self.bn2_mean) * self.bn2_scale + self.bn2_shift
        return fn.softplus(atom_fea + summed)


class _SimpleConv(nn.Module):
    """Paper eq. 4 at evaluation (:class:`~skcgcnn.model.SimpleConvLayer`)."""

    def __init__(self, layer: SimpleConvLayer):
        super().__init__()
        f = layer.atom_fea_len
        w = layer.fc_nbr.weight.detach()
        self.register_buffer("w_nbr", w[:, :f].clone())
        self.register_buffer("w_dist", w[:, f:].clone())
        self.fc_self = layer.fc_self
        for name, value in zip(("mean", "scale", "shift"), _running_affine(layer.bn)):
            self.register_buffer(f"bn_{name}", value)

    def forward(self, atom_fea: Tensor, nbr_idx: Tensor, mask: Tensor, dist_idx: Tensor,
                expanded: Tensor) -> Tensor:
        n, m = nbr_idx.shape
        neighbours = atom_fea.index_select(0, nbr_idx.reshape(-1)).reshape(n, m, -1)
        nbr_sum = (neighbours * mask).sum(dim=1)
        edges = expanded.index_select(0, dist_idx.reshape(-1)).reshape(n, m, -1)
        edge_sum = (edges * mask).sum(dim=1)
        summed = fn.linear(nbr_sum, self.w_nbr) + fn.linear(edge_sum, self.w_dist)
        summed = (summed - self.bn_mean) * self.bn_scale + self.bn_shift
        return fn.softplus(self.fc_self(atom_fea) + summed)


class ExportableCGCNN(nn.Module):
    """A fitted :class:`~skcgcnn.model.CGCNN` regressor and its target scaler, for export.

    forward(atom_fea (N, orig_atom_fea_len) float32, nbr_idx (N, M) int64, dist_idx
    (N, M) int64, distances (D,) float32, crystal_idx (N,) int64, n_atoms (B,) int64)
    -> prediction (B, n_out) float64 in the target's units: ``head(...) * target_scale +
    target_mean``.  ``nbr_idx`` indexes the batch's atoms (-1: no neighbour), as
    ``collate`` gives it; the distance of neighbour slot (i, m) is
    ``distances[dist_idx[i, m]]``.  As the fast layer does, the Gaussian expansion and
    its product with ``W_u`` are computed once per distinct distance (symmetry-equivalent
    atoms share their distances: about 8x fewer rows than edges on Materials Project
    crystals); ``distances = nbr_dist.ravel()``, ``dist_idx = arange(N * M)`` is also
    right, only slower.

    Parameters
    ----------
    net : CGCNN
        The fitted network (regression, one output per target).
    target_mean, target_scale : sequence of float
        The target scaler's ``mean_`` and ``scale_``.
    """

    def __init__(self, net: CGCNN, target_mean, target_scale):
        super().__init__()
        self.register_buffer("centers", net.expansion.centers.detach().clone())
        self.var = float(net.expansion.var)
        self.embedding = net.embedding
        self.convs = nn.ModuleList([
            _SimpleConv(c) if isinstance(c, SimpleConvLayer) else _GatedConv(c)
            for c in net.convs])
        self.pooling = net.pooling
        self.conv_to_fc = net.conv_to_fc
        self.fcs = nn.ModuleList(getattr(net, "fcs", []))
        self.fc_out = net.fc_out
        self.register_buffer("target_mean", torch.as_tensor(target_mean, dtype=torch.float64))
        self.register_buffer("target_scale",
                             torch.as_tensor(target_scale, dtype=torch.float64))

    def expand(self, distances: Tensor) -> Tensor:
        """The Gaussian expansion (D,) -> (D, G), terms below exp(-60) set to 0, as
        :func:`skcgcnn.model.gaussian`."""
        arg = (distances.unsqueeze(-1) - self.centers) ** 2 / self.var ** 2
        terms = torch.exp(-arg.clamp(max=EXP_CUTOFF + 1.0))
        return torch.where(arg > EXP_CUTOFF, torch.zeros_like(terms), terms)

    def head(self, crys_fea: Tensor) -> Tensor:
        crys_fea = fn.softplus(self.conv_to_fc(fn.softplus(crys_fea)))
        for fc in self.fcs:
            crys_fea = fn.softplus(fc(crys_fea))
        return self.fc_out(crys_fea)

    def forward(self, atom_fea: Tensor, nbr_idx: Tensor, dist_idx: Tensor,
                distances: Tensor, crystal_idx: Tensor, n_atoms: Tensor) -> Tensor:
        present = nbr_idx >= 0
        mask = present.unsqueeze(-1).to(atom_fea.dtype)                    # (N, M, 1)
        nbr_idx = torch.where(present, nbr_idx, torch.zeros_like(nbr_idx))
        expanded = self.expand(distances)                                   # (D, G)
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, nbr_idx, mask, dist_idx, expanded)
        # the sums over each crystal's atoms and the target scaling in float64: torch
        # adds float32 rows in its own order, and a sum of a hundred float32 rows in
        # another order differs from it by more than 1e-5 on extensive targets
        index = crystal_idx.unsqueeze(1)
        if self.pooling == "sum":
            per_atom = self.head(atom_fea).double()
            zeros = per_atom.new_zeros(n_atoms.shape[0], per_atom.shape[1])
            out = zeros.scatter_add(0, index.expand_as(per_atom), per_atom)
        else:
            values = atom_fea.double()
            zeros = values.new_zeros(n_atoms.shape[0], values.shape[1])
            summed = zeros.scatter_add(0, index.expand_as(values), values)
            count = n_atoms.clamp(min=1).double().unsqueeze(1)
            out = self.head((summed / count).to(atom_fea.dtype)).double()
        return out * self.target_scale + self.target_mean


def is_gated(layer: nn.Module) -> bool:
    """Whether ``layer`` is one of the gated convolution's implementations."""
    return isinstance(layer, (ConvLayer, ReferenceConvLayer))


__all__ = ["ExportableCGCNN", "is_gated"]
