"""The plain crystal-graph convolution (paper eq. 4), ``CGCNN(conv="simple")``.

One implementation serves both kernels: it is plain torch already, with one
rearrangement, the neighbour sum taken before the product.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as fn

from ._batch_norm import batch_norm
from ._edges import Edges, GaussianExpansion


class SimpleConvLayer(nn.Module):
    """The plain crystal-graph convolution (paper eq. 4, tutorial eq. 1).

    .. math::

        v_i' = g\\Big(v_i W_s + \\mathrm{BN}\\Big(\\sum_j (v_j \\oplus u_{ij}) W_c\\Big) + b\\Big)

    One weight matrix ``W_c`` is shared by all neighbours, so every neighbour counts
    the same; the gated layer instead learns a weight per neighbour.  A BatchNorm on
    the neighbour sum keeps training stable with the same optimiser settings.
    """

    #: takes atom weights (batches of one atom per class of equivalent atoms)
    weighs_atoms = True

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


__all__ = ["SimpleConvLayer"]
