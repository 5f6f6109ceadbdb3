"""The CGCNN network in plain torch (Xie & Grossman, Phys. Rev. Lett. 120, 145301, 2018).

Shapes follow the original's notation::

    N : atoms in the batch          M : neighbours per atom (max_num_nbr)
    F : atom_fea_len                G : Gaussian filters (nbr_fea_len)
    B : crystals in the batch       E : edges (the neighbour slots that are not masked)

The network, as the original ``cgcnn/model.py`` computes it:

.. math::

    v_i^{(0)} &= x_i W_e + b_e \\qquad \\text{(embedding of the atom features)}

    u_{ij,k} &= \\exp\\big(-(d_{ij} - \\mu_k)^2 / \\sigma^2\\big),
        \\quad \\mu_k = d_{min} + k \\cdot step,\\ \\sigma = step  \\qquad \\text{(eq. 3)}

    z_{ij} &= v_i \\oplus v_j \\oplus u_{ij}

    v_i &\\leftarrow g\\Big(v_i + \\mathrm{BN_2}\\Big(\\sum_j
        \\sigma\\big(\\mathrm{BN_1}(z_{ij} W_f + b_f)\\big) \\odot
        g\\big(\\mathrm{BN_1}(z_{ij} W_s + b_s)\\big)\\Big)\\Big)  \\qquad \\text{(eq. 5)}

    y &= \\mathrm{head}\\Big(\\frac{1}{N_c} \\sum_{i \\in c} v_i\\Big)

with ``g`` the softplus, ``sigma`` the sigmoid, the sum over the neighbours j of i
within the radius (at most M, masked slots left out), ``BN_1`` a batch norm over the
edges of the batch (on ``[W_f | W_s]`` together: ``fc_full`` and ``bn1``), ``BN_2`` one
over its atoms (``bn2``), and the head softplus -> ``conv_to_fc`` -> softplus ->
hidden layers -> ``fc_out``.  The paper's eq. 5 is the same without the batch norms
and the outer softplus.

Modules:

* :mod:`~skcgcnn.model.reference` -- eq. 5 as written, in plain torch
  (:class:`ReferenceConvLayer`): the definition the others are tested against;
* :mod:`~skcgcnn.model.fused` -- the fast layer (:class:`ConvLayer`, the default) and
  its four paths (row tables in training, the edge tensor, ``bn1`` folded at
  evaluation, compiled), with ``_edge_norm`` (the row-table batch norm) and
  ``_batch_norm`` (batch norms of weighted rows);
* :mod:`~skcgcnn.model.simple` -- the plain convolution, eq. 4;
* ``_edges`` -- the batch's flat edges and the Gaussian expansion;
* ``_network`` -- :class:`CGCNN`: ``conv`` picks the convolution, ``kernel`` its
  implementation.

Batches of one atom per class of equivalent atoms (``atom_weight``, the estimators'
``reduce_atoms=True``) give the same outputs and gradients as the full graphs; the
fused and simple layers weigh their batch norms by it, the reference does not.
"""
from __future__ import annotations

from ._batch_norm import batch_norm, update_running_stats, uses_batch_stats
from ._edges import EXP_CUTOFF, Edges, GaussianExpansion, gaussian
from ._network import CGCNN, CONVS, KERNELS, POOLINGS, conv_layer, mean_pool, sum_pool
from .fused import PATHS, ConvLayer
from .reference import ReferenceConvLayer
from .simple import SimpleConvLayer

__all__ = ["CGCNN", "ConvLayer", "Edges", "GaussianExpansion", "KERNELS", "PATHS",
           "POOLINGS", "ReferenceConvLayer", "SimpleConvLayer", "mean_pool", "sum_pool"]
