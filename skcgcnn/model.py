"""The CGCNN network in plain torch (Xie & Grossman, Phys. Rev. Lett. 120, 145301, 2018).

Parameter names and shapes are those of the original ``cgcnn/model.py``, so its
``state_dict`` (and the published checkpoints) load one to one.

Shapes follow the original's notation::

    N : atoms in the batch          M : neighbours per atom (max_num_nbr)
    F : atom_fea_len                G : Gaussian filters (nbr_fea_len)
    B : crystals in the batch
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as fn

from skcgcnn._edge_norm import EdgeGroups, gated_edge_conv
from skcgcnn._edge_ops import (assemble_edges, gated_sum, unique_with_inverse,
                                weighted_batch_norm)


class GaussianExpansion(nn.Module):
    """Expand distances on Gaussians: ``exp(-(d - mu_k)^2 / var^2)``.

    The centres are ``arange(dmin, dmax + step, step)`` and ``var`` defaults to
    ``step``, as in the original ``GaussianDistance``.  Terms below exp(-60) are set
    to 0 (see :data:`EXP_CUTOFF`).  The centres are a
    non-persistent buffer, so the module adds nothing to the ``state_dict``.

    Input ``(...)`` -> output ``(..., G)``.
    """

    def __init__(self, dmin: float = 0.0, dmax: float = 8.0, step: float = 0.2,
                 var: float | None = None):
        super().__init__()
        centers = torch.tensor(np.arange(dmin, dmax + step, step), dtype=torch.float32)
        self.register_buffer("centers", centers, persistent=False)
        self.var = float(step if var is None else var)

    def forward(self, distances: Tensor) -> Tensor:
        return gaussian(distances, self.centers, self.var)


class Edges:
    """The directed edges of a batch, flattened: edge e joins atom ``src[e]`` (the
    centre) to its neighbour ``dst[e]`` at distance ``dist[e]``.  ``src`` is sorted.

    Built from the (N, M) neighbour arrays, leaving out the slots marked -1.  With
    ``atom_weight`` (N,) each atom stands for that many equivalent atoms.
    """

    __slots__ = ("src", "dst", "dist", "n_atoms", "dense", "atom_weight", "_distinct",
                 "_expanded", "_groups")

    def __init__(self, nbr_idx: Tensor, nbr_dist: Tensor, atom_weight: Tensor | None = None):
        n, m = nbr_idx.shape
        mask = nbr_idx >= 0
        # then edge e is (e // m, nbr_idx.flat[e]); an empty batch (a process's empty
        # share of a batch, skcgcnn.estimators._distributed) takes the general path
        self.dense = n > 0 and bool(mask.all())
        if self.dense:
            self.src = torch.arange(n, device=nbr_idx.device).repeat_interleave(m)
            self.dst = nbr_idx.reshape(-1)
            self.dist = nbr_dist.reshape(-1)
        else:
            self.src = torch.nonzero(mask, as_tuple=True)[0]
            self.dst = nbr_idx[mask]
            self.dist = nbr_dist[mask]
        self.n_atoms = n
        # how many atoms of the full graph each atom stands for (GraphCollection.collate
        # with reduce=True), or None: one each
        self.atom_weight = atom_weight
        self._distinct = None
        self._expanded = None
        self._groups = None

    def distinct(self, expansion: "GaussianExpansion") -> tuple[Tensor, Tensor]:
        """The Gaussian expansion of each distinct distance, (D, G), and for each edge
        the row of its distance, (E,); computed once per batch.  Symmetry-equivalent
        atoms share their distances, so D is several times smaller than E."""
        if self._distinct is None and self.dist.requires_grad:
            # a gradient for the distances: one row per edge keeps them in the graph
            rows = torch.arange(len(self.dist), device=self.dist.device)
            self._distinct = (expansion(self.dist), rows)
        elif self._distinct is None:
            values, inverse = unique_with_inverse(self.dist)
            device = self.dist.device
            self._distinct = (expansion(values.to(device)), inverse.to(device))
        return self._distinct

    def groups(self, expansion: "GaussianExpansion",
               dtype: torch.dtype = torch.float32) -> EdgeGroups:
        """The edges grouped by centre, neighbour and distinct distance, for the edge
        batch norm (:mod:`skcgcnn._edge_norm`); computed once per batch."""
        if self._groups is None:
            rows, inverse = self.distinct(expansion)
            self._groups = EdgeGroups(self.src, self.dst, inverse, rows, self.n_atoms,
                                      self.dense, self.atom_weight, dtype)
        return self._groups

    def expanded(self, expansion: "GaussianExpansion") -> Tensor:
        """Gaussian-expanded distances, shape (E, G), computed once per batch."""
        if self._expanded is None:
            rows, inverse = self.distinct(expansion)
            self._expanded = rows.index_select(0, inverse)
        return self._expanded


#: Gaussian terms with exponent above this are set to 0: exp(-60) is about 1e-26, far
#: below float32 resolution next to O(1) terms, and leaving them in would make
#: subnormal numbers, which are tens of times slower on x86 CPUs.
EXP_CUTOFF = 60.0


def gaussian(dist: Tensor, centers: Tensor, var: float) -> Tensor:
    """``exp(-(d - mu_k)^2 / var^2)`` for distances (...,) -> (..., G), tiny terms zeroed."""
    arg = (dist.unsqueeze(-1) - centers) ** 2 / var ** 2
    # clamping first also keeps exp off its (much slower) underflow path
    terms = torch.exp(-arg.clamp(max=EXP_CUTOFF + 1.0))
    if terms.requires_grad:  # exp's backward needs its output unchanged
        return terms.masked_fill(arg > EXP_CUTOFF, 0.0)
    return terms.masked_fill_(arg > EXP_CUTOFF, 0.0)


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


def uses_batch_stats(bn: nn.BatchNorm1d) -> bool:
    """Whether ``bn`` normalises with the batch's statistics (as torch decides)."""
    return bn.training or bn.running_mean is None


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


class ConvLayer(nn.Module):
    """The gated crystal-graph convolution (paper eq. 5, tutorial eq. 2).

    .. math::

        z_{ij} = v_i \\oplus v_j \\oplus u_{ij}, \\qquad
        v_i' = g\\Big(v_i + \\mathrm{BN}\\Big(\\sum_j \\sigma(z_{ij} W_f + b_f)
               \\odot g(z_{ij} W_s + b_s)\\Big)\\Big)

    with ``g`` = softplus and a BatchNorm over the edges on ``z W + b`` (the
    original's ``bn1``).  ``fc_full`` is one Linear(2F + G -> 2F), applied as three
    products (the ``v_i``, ``v_j`` and ``u_ij`` blocks of its weight): the atom blocks
    are computed once per atom rather than once per edge.

    forward(atom_fea (N, F), edges: Edges, expansion: GaussianExpansion) -> (N, F).
    Masked neighbours are absent from ``edges``: they count neither in the sum nor in
    ``bn1``'s batch statistics.

    ``z W + b`` is a sum of three row tables: per atom as centre, per atom as neighbour,
    and per distinct distance (the edge product is taken once per distance, not once
    per edge).  In training (``bn1`` on batch statistics) ``bn1``, the gate and the
    neighbour sum run on those tables (:func:`skcgcnn._edge_norm.gated_edge_conv`); the
    other paths sum the (E, 2F) tensor in one pass and give the gate and the sum a
    hand-written backward (:mod:`skcgcnn._edge_ops`).  In evaluation mode ``bn1`` is
    folded into ``fc_full`` (its running statistics make it an affine map), which saves
    one pass over the edges.
    :func:`skcgcnn._compile.compile_convolutions` compiles :meth:`edge_forward` with
    ``torch.compile`` (opt-in).
    """

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

    def forward(self, atom_fea: Tensor, edges: Edges, expansion: GaussianExpansion) -> Tensor:
        expanded, inverse = edges.distinct(expansion)
        groups = None
        if uses_batch_stats(self.bn1) and type(self.bn1) is nn.BatchNorm1d \
                and len(edges.src) and not expanded.requires_grad:
            groups = edges.groups(expansion, atom_fea.dtype)
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
        With ``groups`` (the same edges grouped, :meth:`Edges.groups`) and batch
        statistics, ``bn1`` runs on the row tables (:mod:`skcgcnn._edge_norm`)."""
        f = self.atom_fea_len
        w, b = self.fc_full.weight, self.fc_full.bias
        folded = not self.training and self.bn1.track_running_stats \
            and self.bn1.running_mean is not None
        if folded:  # BN(x W^T + b) = x (s W)^T + s (b - mu) + beta, s = gamma / sigma
            bn = self.bn1
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight
            b = (b - bn.running_mean) * scale + (bn.bias if bn.affine else 0.0)
            w = w * scale.unsqueeze(1)
        else:  # batch statistics cancel the bias: its gradient is exactly 0 (kept in
            # the graph, for DDP), not the float noise that an adaptive optimiser
            # (AdamW) would normalise into steps of full size
            b = b.detach() + 0.0 * b
        self_part = fn.linear(atom_fea, w[:, :f], b)                 # (N, 2F)
        nbr_part = fn.linear(atom_fea, w[:, f:2 * f])                  # (N, 2F)
        if groups is not None and not folded:  # bn1 and the gate on the row tables
            bn = self.bn1
            summed, mean, var = gated_edge_conv(self_part, nbr_part, w[:, 2 * f:], groups,
                                                bn.weight if bn.affine else None,
                                                bn.bias if bn.affine else None, bn.eps)
            update_running_stats(bn, mean, var, groups.total)
        else:
            dist_part = fn.linear(expanded.to(atom_fea.dtype), w[:, 2 * f:])  # (D, 2F)
            gated = assemble_edges(self_part, nbr_part, dist_part, src, dst, inverse,
                                   n_atoms, dense)                     # (E, 2F)
            if not folded:
                edge_weight = (None if atom_weight is None
                               else atom_weight.index_select(0, src))
                gated = batch_norm(gated, self.bn1, edge_weight)
            summed = gated_sum(gated, src, n_atoms, dense)            # (N, F)
        summed = batch_norm(summed, self.bn2, atom_weight)
        return self.softplus2(atom_fea + summed)


class SimpleConvLayer(nn.Module):
    """The plain crystal-graph convolution (paper eq. 4, tutorial eq. 1).

    .. math::

        v_i' = g\\Big(v_i W_s + \\mathrm{BN}\\Big(\\sum_j (v_j \\oplus u_{ij}) W_c\\Big) + b\\Big)

    One weight matrix ``W_c`` is shared by all neighbours, so every neighbour counts
    the same; the gated layer instead learns a weight per neighbour.  A BatchNorm on
    the neighbour sum keeps training stable with the same optimiser settings.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_self = nn.Linear(atom_fea_len, atom_fea_len)
        self.fc_nbr = nn.Linear(atom_fea_len + nbr_fea_len, atom_fea_len, bias=False)
        self.bn = nn.BatchNorm1d(atom_fea_len)
        self.softplus = nn.Softplus()

    def forward(self, atom_fea: Tensor, edges: Edges, expansion: GaussianExpansion) -> Tensor:
        f = self.atom_fea_len
        w = self.fc_nbr.weight
        # sum_j (v_j W_v + u_ij W_u) = (sum_j v_j) W_v + (sum_j u_ij) W_u: sum first
        nbr_sum = atom_fea.new_zeros(edges.n_atoms, f).index_add_(
            0, edges.src, atom_fea.index_select(0, edges.dst))
        expanded = edges.expanded(expansion)
        edge_sum = expanded.new_zeros(edges.n_atoms, expanded.shape[1]).index_add_(
            0, edges.src, expanded)
        summed = batch_norm(fn.linear(nbr_sum, w[:, :f]) + fn.linear(edge_sum, w[:, f:]),
                            self.bn, edges.atom_weight)
        return self.softplus(self.fc_self(atom_fea) + summed)


CONV_LAYERS = {"gated": ConvLayer, "simple": SimpleConvLayer}


def mean_pool(atom_fea: Tensor, crystal_idx: Tensor, n_crystals: int | None = None,
              atom_weight: Tensor | None = None) -> Tensor:
    """Mean of the atom features of each crystal: (N, F), (N,) -> (B, F); with
    ``atom_weight`` (N,) each atom counts that many times."""
    if atom_weight is None:
        counts = torch.bincount(crystal_idx, minlength=n_crystals or 0)
    else:
        atom_weight = atom_weight.to(atom_fea.dtype)
        counts = torch.bincount(crystal_idx, weights=atom_weight, minlength=n_crystals or 0)
        atom_fea = atom_fea * atom_weight.unsqueeze(1)
    summed = atom_fea.new_zeros(len(counts), atom_fea.shape[1]).index_add_(0, crystal_idx,
                                                                           atom_fea)
    return summed / counts.clamp(min=1).unsqueeze(1).to(atom_fea.dtype)


def sum_pool(values: Tensor, crystal_idx: Tensor, n_crystals: int | None = None,
             atom_weight: Tensor | None = None) -> Tensor:
    """Sum of the rows of each crystal: (N, K), (N,) -> (B, K); with ``atom_weight``
    (N,) each row counts that many times."""
    n = max(n_crystals or 0, int(crystal_idx.max()) + 1 if len(crystal_idx) else 0)
    if atom_weight is not None:
        values = values * atom_weight.to(values.dtype).unsqueeze(1)
    return values.new_zeros(n, values.shape[1]).index_add_(0, crystal_idx, values)


POOLINGS = ("mean", "sum")


class CGCNN(nn.Module):
    """Crystal Graph Convolutional Neural Network.

    embedding Linear -> ``n_conv`` convolutions -> mean pooling per crystal ->
    softplus -> ``conv_to_fc`` -> softplus -> (dropout, classification) ->
    ``n_h - 1`` hidden Linear + softplus -> ``fc_out`` (-> log-softmax).

    Parameters
    ----------
    orig_atom_fea_len : int, default=92
        Length of the input atom features.
    atom_fea_len : int, default=64
        Hidden atom feature length F.
    n_conv : int, default=3
        Number of convolution layers.
    h_fea_len : int, default=128
        Hidden length after pooling.
    n_h : int, default=1
        Number of hidden layers after pooling (``conv_to_fc`` counts as one).
    n_out : int, default=1
        Outputs: targets for regression, classes for classification.
    classification : bool, default=False
        Log-softmax output with dropout before it, as in the original.
    conv : {"gated", "simple"}, default="gated"
        Convolution kind.
    dmin, radius, step : float, default=0.0, 8.0, 0.2
        The Gaussian distance expansion (centres ``arange(dmin, radius + step, step)``).
    dropout : float, default=0.5
        Dropout probability (classification only), as ``nn.Dropout()`` in the original.
    pooling : {"mean", "sum"}, default="mean"
        "mean": the original, ``y = h(mean_i v_i)`` for an intensive target. "sum": the
        head applied to every atom and the outputs summed, ``y = sum_i h(v_i)``, for
        an extensive target (a total energy): the per-atom terms ``h(v_i)`` add up
        to the prediction exactly, and a supercell of k cells predicts k times as
        much.  Regression only.

    forward(atom_fea (N, orig_atom_fea_len), nbr_idx (N, M), nbr_dist (N, M),
    crystal_idx (N,), atom_weight (N,) or None) -> (B, n_out).  ``atom_weight`` comes
    with batches reduced to one atom per class of equivalent atoms
    (:meth:`skcgcnn.graph.GraphCollection.collate` with ``reduce=True``): each atom
    stands for that many, in the batch statistics and the pooling, so the outputs and
    gradients are those of the full batch up to float rounding.

    Examples
    --------
    >>> net = CGCNN()
    >>> sum(p.numel() for p in net.parameters())
    80833
    """

    def __init__(self, orig_atom_fea_len: int = 92, atom_fea_len: int = 64, n_conv: int = 3,
                 h_fea_len: int = 128, n_h: int = 1, n_out: int = 1,
                 classification: bool = False, conv: str = "gated", dmin: float = 0.0,
                 radius: float = 8.0, step: float = 0.2, dropout: float = 0.5,
                 pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if pooling == "sum" and classification:
            raise ValueError("pooling='sum' sums per-atom outputs, which is for "
                             "regression; use pooling='mean' for classification")
        self.pooling = pooling
        if conv not in CONV_LAYERS:
            raise ValueError(f"conv must be one of {list(CONV_LAYERS)}, got {conv!r}")
        for name, value in (("atom_fea_len", atom_fea_len), ("n_conv", n_conv),
                            ("h_fea_len", h_fea_len), ("n_h", n_h), ("n_out", n_out)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.classification = classification
        self.expansion = GaussianExpansion(dmin, radius, step)
        nbr_fea_len = len(self.expansion.centers)
        layer = CONV_LAYERS[conv]
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList([layer(atom_fea_len, nbr_fea_len) for _ in range(n_conv)])
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.conv_to_fc_softplus = nn.Softplus()
        if n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)])
            self.softpluses = nn.ModuleList([nn.Softplus() for _ in range(n_h - 1)])
        self.fc_out = nn.Linear(h_fea_len, n_out)
        if classification:
            self.logsoftmax = nn.LogSoftmax(dim=1)
            self.dropout = nn.Dropout(p=dropout)

    def atom_embeddings(self, atom_fea: Tensor, nbr_idx: Tensor, nbr_dist: Tensor,
                        atom_weight: Tensor | None = None) -> Tensor:
        """Atom features after the last convolution, shape (N, F)."""
        edges = Edges(nbr_idx, nbr_dist, atom_weight)
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, edges, self.expansion)
        return atom_fea

    def head(self, crys_fea: Tensor) -> Tensor:
        """Crystal features (B, F) -> outputs (B, n_out)."""
        crys_fea = self.conv_to_fc(self.conv_to_fc_softplus(crys_fea))
        crys_fea = self.conv_to_fc_softplus(crys_fea)
        if self.classification:
            crys_fea = self.dropout(crys_fea)
        if hasattr(self, "fcs"):
            for fc, softplus in zip(self.fcs, self.softpluses):
                crys_fea = softplus(fc(crys_fea))
        out = self.fc_out(crys_fea)
        if self.classification:
            out = self.logsoftmax(out)
        return out

    def pool_and_head(self, atom_fea: Tensor, crystal_idx: Tensor,
                      n_crystals: int | None = None,
                      atom_weight: Tensor | None = None) -> Tensor:
        """Atom features (N, F) -> outputs (B, n_out), pooled as ``pooling`` says."""
        if self.pooling == "sum":
            return sum_pool(self.head(atom_fea), crystal_idx, n_crystals, atom_weight)
        return self.head(mean_pool(atom_fea, crystal_idx, n_crystals, atom_weight))

    def forward(self, atom_fea: Tensor, nbr_idx: Tensor, nbr_dist: Tensor,
                crystal_idx: Tensor, atom_weight: Tensor | None = None) -> Tensor:
        atom_fea = self.atom_embeddings(atom_fea, nbr_idx, nbr_dist, atom_weight)
        return self.pool_and_head(atom_fea, crystal_idx, atom_weight=atom_weight)


__all__ = ["CGCNN", "ConvLayer", "Edges", "SimpleConvLayer", "GaussianExpansion", "mean_pool",
           "sum_pool", "POOLINGS"]
