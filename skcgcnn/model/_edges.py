"""The edges of a batch and the Gaussian expansion of their distances (paper eq. 3).

Every convolution takes ``(atom_fea, edges, expansion)``: the flat list of directed
edges i -> j of the batch (:class:`Edges`) and the expansion ``u_ij`` of their distances
(:class:`GaussianExpansion`).  What an edge list computes once per batch and shares
between the layers (the distinct distances, the grouped edges of the row-table batch
norm) is cached on it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ._edge_norm import EdgeGroups

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

    def distinct(self, expansion: GaussianExpansion) -> tuple[Tensor, Tensor]:
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

    def groups(self, expansion: GaussianExpansion,
               dtype: torch.dtype = torch.float32) -> EdgeGroups:
        """The edges grouped by centre, neighbour and distinct distance, for the edge
        batch norm on the row tables (:mod:`skcgcnn.model._edge_norm`); computed once
        per batch."""
        if self._groups is None:
            rows, inverse = self.distinct(expansion)
            self._groups = EdgeGroups(self.src, self.dst, inverse, rows, self.n_atoms,
                                      self.dense, self.atom_weight, dtype)
        return self._groups

    def expanded(self, expansion: GaussianExpansion) -> Tensor:
        """Gaussian-expanded distances, shape (E, G), computed once per batch."""
        if self._expanded is None:
            rows, inverse = self.distinct(expansion)
            self._expanded = rows.index_select(0, inverse)
        return self._expanded
