"""Batches cut on the device: a collection's arrays moved there once, crystals picked by index.

With a CUDA device, the numpy path (:func:`~skcgcnn.estimators.collate_graphs` on the
host, then a copy of every batch to the GPU) costs more than the step itself for CGCNN's
small graphs.  Here the flat arrays of a :class:`~skcgcnn.estimators.GraphDataset` (its
:class:`~skcgcnn.graph.GraphCollection`, targets and sample weights) become tensors on
the device once, and each batch is cut there by crystal index with a few vectorised
torch ops: the atoms of the chosen crystals, their neighbour indices moved to
batch-local numbers, the crystal of every atom, the atom features looked up from the
feature table.  The result is the ``(X, y)`` that ``collate_graphs`` gives, equal to it
bit for bit (``tests/test_device_batches.py``).

Per batch only its crystal indices (``batch_size`` integers) go from the host to the
device; the batch's size in atoms is taken from a host copy of ``atom_ptr``, so cutting
a batch never waits for the device.

The order of the rows is torch's: a ``DataLoader`` over the batch cutter, with a
``BatchSampler`` over a ``RandomSampler`` (shuffled) or ``SequentialSampler``, or over
any sampler of dataset positions the caller gives (a distributed one, say).  skorch's
own ``DataLoader(dataset, batch_size, shuffle=True)`` draws from torch's random
generator in the same way, so a seeded fit sees the same batches on either path.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import (BatchSampler, DataLoader, RandomSampler, SequentialSampler,
                              Subset)

from .._defaults import BATCH_ON_DEVICE, PRECISIONS
from ._data import GraphDataset

__all__ = ["DeviceGraphs", "autocast", "device_batches", "device_iterator",
           "find_graph_dataset", "use_device_batches"]

#: The autocast type of each ``precision`` (None: off).
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


class DeviceGraphs:
    """The arrays of a :class:`GraphDataset` as tensors on one device, and batches cut there.

    Parameters
    ----------
    dataset : GraphDataset
        Its collection (with an atom-feature table), targets (or None) and sample
        weights (or None).
    device : str or torch.device

    Attributes
    ----------
    atom_ptr : ndarray of int64, shape (n_crystals + 1,)
        A host copy, for the size of a batch without asking the device.
    numbers : Tensor of shape (n_atoms,), int64
    nbr_idx : Tensor of shape (n_atoms, max_num_nbr), int32 -- inside its crystal, -1 = none
    nbr_dist : Tensor of shape (n_atoms, max_num_nbr), float32
    table : Tensor of shape (max_Z + 1, n_features) -- the atom-feature table
    y, weights : Tensor or None -- one row per crystal
    atom_weight : Tensor or None -- with the dataset's ``reduce``: the arrays are those of
        :meth:`GraphCollection.reduced` and this says how many atoms each stands for
    """

    def __init__(self, dataset: GraphDataset, device: str | torch.device):
        graphs = dataset.X
        if graphs.atom_features is None:
            raise ValueError("this GraphCollection has no atom-feature table; use "
                             "with_atom_features(...) or StructureGraphTransformer")
        self.device = torch.device(device)
        atom_weight = None
        if getattr(dataset, "reduce", False):  # one atom per class of equivalent atoms
            graphs, atom_weight = graphs.reduced()
        self.atom_ptr = np.asarray(graphs.atom_ptr, dtype=np.int64)

        def put(array: Any) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array)).to(self.device)

        self._atom_ptr = put(self.atom_ptr)
        self.numbers = put(np.asarray(graphs.numbers, dtype=np.int64))
        self.nbr_idx = put(graphs.nbr_idx)
        self.nbr_dist = put(graphs.nbr_dist)
        self.table = put(np.asarray(graphs.atom_features.table))
        # as collate_graphs' torch.as_tensor(np.asarray([y[i] for i in rows])) does
        self.y = None if dataset.y is None else put(np.asarray(dataset.y))
        self.weights = None if dataset.sample_weight is None else \
            put(np.asarray(dataset.sample_weight))
        self.atom_weight = None if atom_weight is None else put(atom_weight)

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    def batch(self, rows: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The ``(X, y)`` of crystals ``rows`` (positions in the collection), as
        :func:`~skcgcnn.estimators.collate_graphs` makes it, on the device."""
        rows = np.asarray(rows, dtype=np.int64)
        n_atoms = int((self.atom_ptr[rows + 1] - self.atom_ptr[rows]).sum())
        dev = self.device
        index = torch.as_tensor(rows).to(dev, non_blocking=True)
        starts = self._atom_ptr[index]
        sizes = self._atom_ptr[index + 1] - starts
        first = torch.cumsum(sizes, 0) - sizes  # the first atom of each crystal in the batch
        crystal_idx = torch.repeat_interleave(torch.arange(len(rows), device=dev), sizes,
                                              output_size=n_atoms)
        atoms = torch.arange(n_atoms, device=dev) + (starts - first)[crystal_idx]
        nbr = self.nbr_idx[atoms].long()
        X = {
            "atom_fea": self.table[self.numbers[atoms]],
            "nbr_idx": torch.where(nbr >= 0, nbr + first[crystal_idx].unsqueeze(1), -1),
            "nbr_dist": self.nbr_dist[atoms],
            "crystal_idx": crystal_idx,
        }
        if self.atom_weight is not None:
            X["atom_weight"] = self.atom_weight[atoms]
        if self.weights is not None:  # per atom, as collate_graphs gives them
            X["sample_weight"] = self.weights[index][crystal_idx]
        y = torch.zeros(len(rows), dtype=torch.float64, device=dev) if self.y is None \
            else self.y[index]
        return X, y


class _Cutter(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: ``cutter[positions]`` is the
    batch of those dataset positions (``index`` maps them to collection rows)."""

    def __init__(self, data: DeviceGraphs, index: np.ndarray | None):
        self.data = data
        self.index = index

    def __len__(self) -> int:
        return len(self.data) if self.index is None else len(self.index)

    def __getitem__(self, positions: Any):
        rows = np.asarray(positions, dtype=np.int64)
        return self.data.batch(rows if self.index is None else self.index[rows])


def _as_is(batch: Any) -> Any:
    return batch


# one upload per dataset and device: skorch asks for an iterator every epoch, and a
# dataset lives as long as its fit (or, for a predefined_split, as long as the net)
_UPLOADED: "weakref.WeakKeyDictionary[GraphDataset, dict]" = weakref.WeakKeyDictionary()


def on_device(dataset: GraphDataset, device: str | torch.device) -> DeviceGraphs:
    """``DeviceGraphs(dataset, device)``, made once per dataset and device."""
    per_device = _UPLOADED.setdefault(dataset, {})
    key = str(torch.device(device))
    if key not in per_device:
        per_device[key] = DeviceGraphs(dataset, device)
    return per_device[key]


def find_graph_dataset(dataset: Any) -> tuple[GraphDataset, np.ndarray | None] | None:
    """``(graph_dataset, index)`` when ``dataset`` is a :class:`GraphDataset` or a
    (nested) ``Subset`` of one, ``index`` mapping its positions to the collection's rows
    (None for the whole dataset); None for any other dataset."""
    index = None
    while isinstance(dataset, Subset):
        inner = np.asarray(dataset.indices, dtype=np.int64)
        index = inner if index is None else inner[index]
        dataset = dataset.dataset
    if not isinstance(dataset, GraphDataset):
        return None
    return dataset, index


def device_batches(dataset: GraphDataset, device: str | torch.device, batch_size: int, *,
                   index: np.ndarray | None = None, shuffle: bool = False,
                   sampler: Iterable | None = None, drop_last: bool = False,
                   generator: torch.Generator | None = None) -> DataLoader:
    """One epoch's batches of ``dataset``'s crystals, cut on ``device``.

    Parameters
    ----------
    dataset : GraphDataset
    device : str or torch.device
    batch_size : int
        Crystals per batch (-1: all of them in one batch).
    index : ndarray of int, optional
        The collection rows of the dataset positions (a ``Subset``'s indices).
    shuffle : bool, default=False
        Positions in a new random order each epoch (torch's ``RandomSampler``), else in
        order; ignored when ``sampler`` is given.
    sampler : iterable of int, optional
        The dataset positions of one epoch, in order (e.g. a ``DistributedSampler``, or
        an array of positions).
    drop_last : bool, default=False
    generator : torch.Generator, optional
        For the shuffle, as ``DataLoader(generator=...)``.

    Returns
    -------
    torch.utils.data.DataLoader
        Iterating gives ``(X, y)`` batches on ``device``; every new iteration is a new
        epoch (a new shuffle).
    """
    cutter = _Cutter(on_device(dataset, device), index)
    if sampler is None:
        sampler = RandomSampler(range(len(cutter)), generator=generator) if shuffle \
            else SequentialSampler(range(len(cutter)))
    if batch_size == -1:
        batch_size = len(cutter)
    return DataLoader(cutter, batch_size=None, collate_fn=_as_is, generator=generator,
                      sampler=BatchSampler(sampler, batch_size, drop_last))


def use_device_batches(value: Any, device: Any) -> bool:
    """Whether ``batch_on_device=value`` cuts batches on the device for ``device`` (a
    resolved device): "auto" on CUDA, True everywhere, False never.

    Raises
    ------
    ValueError
        For any other value.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value == "auto":
        return torch.device(device or "cpu").type == "cuda"
    raise ValueError(f"batch_on_device must be one of {list(BATCH_ON_DEVICE)}, got "
                     f"{value!r}")


def _device_source(net: Any, dataset: Any, training: bool
                   ) -> tuple[GraphDataset, np.ndarray | None, dict, Any] | None:
    """``(graph_dataset, index, iterator_kwargs, device)`` where ``net.batch_on_device``
    cuts ``dataset``'s batches on the device, else None (see :func:`device_iterator`)."""
    from .._defaults import resolve_device
    from ._data import collate_graphs

    choice = getattr(net, "batch_on_device", "auto")
    device = resolve_device(net.device) or "cpu"
    if not use_device_batches(choice, device):
        return None
    prefix = "iterator_train" if training else "iterator_valid"
    kwargs = net.get_params_for(prefix)
    found = find_graph_dataset(dataset)
    why = None
    if found is None:
        why = (f"the dataset is a {type(dataset).__name__}, not a GraphDataset or a "
               "Subset of one")
    elif getattr(net, prefix) is not DataLoader:
        why = f"{prefix} is {getattr(net, prefix)!r}, not torch's DataLoader"
    elif kwargs.get("collate_fn", collate_graphs) is not collate_graphs:
        why = f"{prefix}__collate_fn is {kwargs['collate_fn']!r}, not collate_graphs"
    elif "batch_sampler" in kwargs:
        why = f"{prefix}__batch_sampler is given"
    if why is not None:
        if choice is True or choice is np.True_:
            raise ValueError(f"batch_on_device=True cannot cut these batches on the "
                             f"device: {why}; use batch_on_device='auto' or False")
        return None
    graph_dataset, index = found
    return graph_dataset, index, kwargs, device


def device_iterator(net: Any, dataset: Any, training: bool) -> DataLoader | None:
    """The batches of ``net.get_iterator(dataset, training)`` cut on the device, or None
    where ``net.batch_on_device`` leaves them to skorch's ``DataLoader`` and
    ``collate_graphs``.

    The iterator parameters that apply are taken as skorch takes them
    (``iterator_train__shuffle``, ``__batch_size``, ``__sampler``, ``__drop_last``,
    ``__generator``); the others (``num_workers``, ``pin_memory``, ...) concern the
    host path.  "auto" keeps the host path, and True refuses, where batches cannot be
    cut on the device: another dataset than a GraphDataset (or a Subset of one),
    another iterator than torch's DataLoader, or another collate function.
    """
    source = _device_source(net, dataset, training)
    if source is None:
        return None
    graph_dataset, index, kwargs, device = source
    return device_batches(graph_dataset, device, kwargs.get("batch_size", net.batch_size),
                          index=index, shuffle=bool(kwargs.get("shuffle", False)),
                          sampler=kwargs.get("sampler"),
                          drop_last=bool(kwargs.get("drop_last", False)),
                          generator=kwargs.get("generator"))


def device_batches_of(net: Any, dataset: Any, batch_sampler: Iterable) -> DataLoader | None:
    """The training batches of ``batch_sampler`` (lists of dataset positions, one per
    batch: a process's shares under torchrun) cut on the device, or None where
    ``net.batch_on_device`` leaves them to the host path."""
    source = _device_source(net, dataset, training=True)
    if source is None:
        return None
    graph_dataset, index, _, device = source
    return DataLoader(_Cutter(on_device(graph_dataset, device), index), batch_size=None,
                      sampler=batch_sampler, collate_fn=_as_is)


def autocast(precision: Any, device: Any):
    """The context of ``precision`` for a forward pass on ``device`` (resolved):
    ``torch.autocast(device_type, dtype=torch.bfloat16)`` for "bfloat16", nothing for
    "float32".

    Raises
    ------
    ValueError
        For another value.
    """
    import contextlib

    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device or "cpu").type, dtype=dtype)


class _DeviceBatchHooks:
    """The skorch hooks of a CGCNN estimator for batches cut on the device and for
    ``precision``: ``get_iterator`` (:func:`device_iterator`, else skorch's
    ``DataLoader``) and ``infer`` (under :func:`autocast`, the output in float32)."""

    def get_iterator(self, dataset, training=False):
        """skorch's ``get_iterator``; with ``batch_on_device`` (by default on CUDA) the
        batches are cut on the device from arrays moved there once, else skorch's
        ``DataLoader`` with ``collate_graphs``."""
        with self._resolved_device():
            iterator = device_iterator(self, dataset, training)
        return super().get_iterator(dataset, training) if iterator is None else iterator

    def infer(self, x, **fit_params):
        with self._resolved_device(), autocast(self._precision, self.device):
            y_pred = super().infer(x, **fit_params)
        if isinstance(y_pred, torch.Tensor) and y_pred.dtype == torch.bfloat16:
            y_pred = y_pred.float()  # the loss, and what predict returns, in float32
        return y_pred

    @property
    def _precision(self):  # estimators pickled before issue 16 have no `precision`
        return self.__dict__.get("precision", "float32")
