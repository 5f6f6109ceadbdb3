"""The CGCNN module: embedding, convolutions, pooling and the head (see :mod:`skcgcnn.model`).

Parameter names and shapes are those of the original ``cgcnn/model.py``, so its
``state_dict`` (and the published checkpoints) load one to one, whichever kernel runs
the convolutions.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ._edges import Edges, GaussianExpansion
from .fused import ConvLayer
from .reference import ReferenceConvLayer
from .simple import SimpleConvLayer

#: The gated convolution's implementations, ``CGCNN(kernel=...)``: the fast one (the
#: default) and the paper's equation in plain torch, with the same parameters.
KERNELS = {"fused": ConvLayer, "reference": ReferenceConvLayer}

#: The convolution kinds, ``CGCNN(conv=...)``.
CONVS = ("gated", "simple")


def conv_layer(conv: str, kernel: str) -> type[nn.Module]:
    """The layer class of a convolution kind and kernel; the simple convolution has one
    implementation (plain torch) for both kernels."""
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {list(CONVS)}, got {conv!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
    return KERNELS[kernel] if conv == "gated" else SimpleConvLayer


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
        Convolution kind: eq. 5 (the original's) or eq. 4.
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
    kernel : {"fused", "reference"}, default="fused"
        How the gated convolution is computed: "fused", the fast layer
        (:class:`~skcgcnn.model.fused.ConvLayer`); "reference", the equation in plain
        torch (:class:`~skcgcnn.model.reference.ReferenceConvLayer`), to compare with or
        to fall back on.  The same parameters and ``state_dict``, the same outputs up to
        float rounding; the reference takes no ``atom_weight``.

    forward(atom_fea (N, orig_atom_fea_len), nbr_idx (N, M), nbr_dist (N, M),
    crystal_idx (N,), atom_weight (N,) or None) -> (B, n_out).  ``atom_weight`` comes
    with batches reduced to one atom per class of equivalent atoms
    (:meth:`skcgcnn.graph.GraphCollection.collate` with ``reduce=True``): each atom
    stands for that many, in the batch statistics and the pooling, so the outputs and
    gradients are those of the full batch up to float rounding (not with
    ``kernel="reference"``, see :attr:`weighs_atoms`).

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
                 pooling: str = "mean", kernel: str = "fused"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if pooling == "sum" and classification:
            raise ValueError("pooling='sum' sums per-atom outputs, which is for "
                             "regression; use pooling='mean' for classification")
        self.pooling = pooling
        layer = conv_layer(conv, kernel)
        self.kernel = kernel
        for name, value in (("atom_fea_len", atom_fea_len), ("n_conv", n_conv),
                            ("h_fea_len", h_fea_len), ("n_h", n_h), ("n_out", n_out)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.classification = classification
        self.expansion = GaussianExpansion(dmin, radius, step)
        nbr_fea_len = len(self.expansion.centers)
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

    @property
    def weighs_atoms(self) -> bool:
        """Whether ``forward`` takes ``atom_weight`` (batches of one atom per class of
        equivalent atoms): every convolution weighs its batch norms by it.  Not with
        ``kernel="reference"``."""
        return all(getattr(conv, "weighs_atoms", False) for conv in self.convs)

    def atom_embeddings(self, atom_fea: Tensor, nbr_idx: Tensor, nbr_dist: Tensor,
                        atom_weight: Tensor | None = None) -> Tensor:
        """Atom features after the last convolution, shape (N, F)."""
        if atom_weight is not None and not self.weighs_atoms:
            raise ValueError("this CGCNN's convolutions take no atom weights "
                             "(kernel='reference'): batch the full graphs "
                             "(GraphCollection.collate without reduce, or an estimator's "
                             "reduce_atoms=False)")
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


__all__ = ["CGCNN", "CONVS", "KERNELS", "POOLINGS", "conv_layer", "mean_pool", "sum_pool"]
