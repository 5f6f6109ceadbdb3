"""The learned representations of a fitted CGCNN estimator: atom and crystal vectors.

Used by :mod:`skcgcnn.explain`, the applicability domain (``_domain``) and the
embedder (``_embedder``); what every CGCNN estimator can answer once fitted.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..graph import GraphCollection
from ._data import graphs_to_tensors


class _Embeddings:
    """``check_graphs``, ``embed_atoms`` and ``predict_crystal_features``."""

    def check_graphs(self, X: Any) -> GraphCollection:
        """``X`` checked for this fitted model: a GraphCollection with an atom-feature
        table, built with the graph settings of ``fit``.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        TypeError, ValueError
            For anything else, or graphs built otherwise than the fit's.
        """
        self._require_fitted()
        X = self._check_X(X)
        self._check_compatible(X)
        return X

    def embed_atoms(self, X: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """The learned atom feature vectors of the crystals of ``X``, batch by batch.

        The module runs in eval mode without gradients, ``batch_size`` crystals at a
        time, in the order of ``X``.  ``X`` is checked (:meth:`check_graphs`) before
        the first batch.

        Yields
        ------
        atoms : Tensor of shape (n_atoms, atom_fea_len)
            The output of the last convolution, on the module's device.
        crystal_idx : Tensor of shape (n_atoms,), int64
            The crystal of the batch each atom belongs to.
        n_crystals : int
            Crystals in the batch.
        """
        X = self.check_graphs(X)
        return self._embed_atoms(X)

    def _embed_atoms(self, X: GraphCollection):
        module = self.module_.eval()
        device = next(module.parameters()).device
        with torch.no_grad():
            for start in range(0, len(X), self.batch_size):
                rows = np.arange(start, min(start + self.batch_size, len(X)))
                t = graphs_to_tensors(X, rows, device)
                atoms = module.atom_embeddings(t["atom_fea"], t["nbr_idx"], t["nbr_dist"])
                yield atoms, t["crystal_idx"], len(rows)

    def predict_crystal_features(self, X: GraphCollection) -> np.ndarray:
        """Pooled crystal feature vectors (input of ``conv_to_fc``), shape (n, F)."""
        from ..model import mean_pool

        out = [mean_pool(atoms, crystal_idx, n).cpu().numpy()
               for atoms, crystal_idx, n in self.embed_atoms(X)]
        return np.concatenate(out) if out else np.zeros((0, 0))
