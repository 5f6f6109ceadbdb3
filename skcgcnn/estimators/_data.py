"""The data path of the estimators: a skorch Dataset over a GraphCollection, and its collate."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset

from ..graph import GraphCollection

__all__ = ["GraphDataset", "collate_graphs", "graphs_to_tensors"]


class _Row:
    """One crystal of a collection, as a dataset item (collated by ``collate_graphs``)."""

    __slots__ = ("graphs", "row", "weights", "reduce")

    def __init__(self, graphs: GraphCollection, row: int, weights: Any = None,
                 reduce: bool = False):
        self.graphs = graphs
        self.row = row
        self.weights = weights  # the dataset's sample weights (all rows) or None
        self.reduce = reduce  # batches of one atom per class of equivalent atoms


class GraphDataset(SkorchDataset):
    """A skorch Dataset over a :class:`GraphCollection` and optional targets.

    Items are light references to crystals; :func:`collate_graphs` builds a batch
    from them with vectorised numpy (no Python loop over atoms).  With
    ``sample_weight`` (float32, one per crystal) the batches carry the weights of their
    crystals as ``X["sample_weight"]``, for the estimators' weighted loss.  With
    ``reduce`` the batches keep one atom per class of equivalent atoms, with
    ``X["atom_weight"]`` (:meth:`GraphCollection.collate`), for a module that takes it
    (:class:`skcgcnn.model.CGCNN`).
    """

    def __init__(self, X: GraphCollection, y: Any = None, sample_weight: Any = None,
                 reduce: bool = False):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.reduce = reduce
        self._len = len(X)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        yi = 0.0 if self.y is None else self.y[i]
        return _Row(self.X, int(i), self.sample_weight, self.reduce), yi


def collate_graphs(batch: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Collate ``(crystal, target)`` items into the module's inputs and the targets.

    Returns
    -------
    X : dict with ``atom_fea`` (N, n_features) float32, ``nbr_idx`` (N, M) int64
        (-1 = no neighbour), ``nbr_dist`` (N, M) float32, ``crystal_idx`` (N,) int64,
        and ``sample_weight`` (N,) float32, the weight of each atom's crystal, when the
        dataset has sample weights; ``atom_weight`` (N,) float32 when the dataset
        reduces its batches to one atom per class of equivalent atoms
    y : Tensor of shape (B, ...) -- the targets of the batch
    """
    graphs = batch[0][0].graphs
    rows = np.fromiter((item[0].row for item in batch), dtype=np.int64, count=len(batch))
    y = torch.as_tensor(np.asarray([item[1] for item in batch]))
    X = graphs_to_tensors(graphs, rows, reduce=batch[0][0].reduce)
    weights = batch[0][0].weights
    if weights is not None:  # per atom: skorch wants one length for all the inputs
        X["sample_weight"] = torch.from_numpy(weights[rows])[X["crystal_idx"]]
    return X, y


def graphs_to_tensors(graphs: GraphCollection, rows: np.ndarray | None = None,
                      device: str | torch.device | None = None,
                      reduce: bool = False) -> dict[str, torch.Tensor]:
    """The module's input tensors for crystals ``rows`` of ``graphs`` (all by default).

    :meth:`GraphCollection.collate` (with ``reduce``) as torch tensors, on ``device``
    when given.

    Returns
    -------
    dict with
        atom_fea : Tensor of shape (n_atoms, n_features), float32
        nbr_idx : Tensor of shape (n_atoms, max_num_nbr), int64 -- batch-wide, -1 = none
        nbr_dist : Tensor of shape (n_atoms, max_num_nbr), float32
        crystal_idx : Tensor of shape (n_atoms,), int64
    """
    arrays = graphs.collate(rows, reduce=reduce)
    tensors = {key: torch.from_numpy(np.ascontiguousarray(value))
               for key, value in arrays.items()}
    tensors["nbr_idx"] = tensors["nbr_idx"].long()  # torch indexes with int64
    if device is not None:
        tensors = {key: value.to(device) for key, value in tensors.items()}
    return tensors
