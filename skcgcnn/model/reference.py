"""The gated convolution as the paper and the original CGCNN write it, in plain torch.

The definition that the fast layer (:mod:`skcgcnn.model.fused`) is tested against, in
float64, and the fallback where it breaks (``CGCNN(kernel="reference")``): the same
parameters, so the same ``state_dict``, as the original ``cgcnn/model.py``.  Every
edge's ``z_ij = v_i ⊕ v_j ⊕ u_ij`` is made, one Linear, ``bn1`` over the edges, the
gate, the sum over each atom's edges, ``bn2`` and the residual softplus (the equation is
in :mod:`skcgcnn.model`).  Autograd does the rest, also for the distances.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._edges import Edges, GaussianExpansion


class ReferenceConvLayer(nn.Module):
    """Paper eq. 5 with the original's batch norms, on the edges of ``edges``.

    forward(atom_fea (N, F), edges: Edges, expansion: GaussianExpansion) -> (N, F).
    Masked neighbour slots are absent from ``edges``.  Atom weights are not taken:
    the batch norms see the batch's rows as they are (batch the full graphs).

    ``bn1`` cancels ``fc_full``'s bias, so its gradient is 0 in exact arithmetic; here
    it is float noise, which AdamW turns into steps of full size.  Trained with AdamW,
    the bias and ``bn1``'s running mean therefore drift from the fused layer's (whose
    bias gradient is exactly 0), and predictions differ more than the losses do.
    """

    weighs_atoms = False

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len, self.nbr_fea_len = atom_fea_len, nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.sigmoid, self.softplus1 = nn.Sigmoid(), nn.Softplus()
        self.bn1, self.bn2 = nn.BatchNorm1d(2 * atom_fea_len), nn.BatchNorm1d(atom_fea_len)
        self.softplus2 = nn.Softplus()

    def forward(self, atom_fea: Tensor, edges: Edges, expansion: GaussianExpansion) -> Tensor:
        z = torch.cat([atom_fea[edges.src], atom_fea[edges.dst], expansion(edges.dist)], 1)
        nbr_filter, nbr_core = self.bn1(self.fc_full(z)).chunk(2, dim=1)
        message = self.sigmoid(nbr_filter) * self.softplus1(nbr_core)
        summed = message.new_zeros(edges.n_atoms, self.atom_fea_len).index_add(
            0, edges.src, message)
        return self.softplus2(atom_fea + self.bn2(summed))


__all__ = ["ReferenceConvLayer"]
