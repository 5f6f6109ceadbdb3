"""Atoms that the network cannot tell apart, found once per collection (issue 16).

A convolution updates atom i from its own features and the multiset of (neighbour
features, distance) over its neighbour slots.  Two atoms of one crystal with the same
element whose neighbour slots hold the same distances to atoms of the same classes,
class by class, therefore get the same features after every layer, whatever the
weights: the classes of an *equitable* partition of the labelled crystal graph
(symmetry-equivalent atoms, and any others the graph cannot separate).  The network
can then run on one atom per class with the class sizes as weights
(:meth:`GraphCollection.collate` with ``reduce=True``): the crystal outputs, the
BatchNorm statistics and the gradients are those of the full graph up to float
rounding, and on Materials Project crystals there are 2.2x fewer atoms and edges.

The partition is refined like the 1-dimensional Weisfeiler-Leman test, with hashed
signatures for speed; the result is then checked to be equitable exactly, so a hash
collision cannot merge atoms that differ (the atoms are then left unmerged).
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

_ODD = np.uint64(0x9E3779B97F4A7C15)


def _neighbour_keys(colour: np.ndarray, nbr: np.ndarray, dist_bits: np.ndarray) -> np.ndarray:
    """Each atom's neighbour slots as sorted (distance, neighbour class) keys, (N, M)."""
    nbr_colour = np.where(nbr >= 0, colour[np.maximum(nbr, 0)], -1)
    keys = dist_bits * (int(colour.max(initial=0)) + 2) + (nbr_colour + 1)
    keys.sort(axis=1)
    return keys


def _hash_rows(first: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of ``(first, keys...)``, order of the keys kept."""
    with np.errstate(over="ignore"):
        h = first.astype(np.uint64) * _ODD
        for column in keys.T:
            h = (h ^ column.astype(np.uint64)) * _ODD
            h ^= h >> np.uint64(29)
    return h


def equivalent_atoms(atom_ptr: np.ndarray, numbers: np.ndarray, nbr_idx: np.ndarray,
                     nbr_dist: np.ndarray, max_rounds: int = 100) -> np.ndarray:
    """For each atom, the crystal-local index of the first atom of its class.

    ``nbr_idx`` is crystal-local (-1 for an empty slot), as in
    :class:`~skcgcnn.graph.GraphCollection`.  Atoms stay in their own crystal's classes.
    Returns an int64 array of shape (n_atoms,); ``result[i] == local index of i`` for
    the first atom of each class.
    """
    n_atoms = len(numbers)
    sizes = np.diff(atom_ptr)
    crystal = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    start = atom_ptr[:-1][crystal]
    local = np.arange(n_atoms, dtype=np.int64) - start
    if n_atoms == 0:
        return local
    nbr = np.where(nbr_idx >= 0, nbr_idx + start[:, None], -1)
    dist_bits = np.ascontiguousarray(nbr_dist, dtype=np.float32).view(np.int32) \
        .astype(np.int64)
    _, colour = np.unique(crystal * 256 + numbers, return_inverse=True)
    colour = colour.reshape(-1).astype(np.int64)
    n_colours = int(colour.max()) + 1
    for _ in range(max_rounds):
        keys = _neighbour_keys(colour, nbr, dist_bits)
        _, refined = np.unique(_hash_rows(colour, keys), return_inverse=True)
        refined = refined.reshape(-1).astype(np.int64)
        if int(refined.max()) + 1 == n_colours:
            break  # stable: ``keys`` are those of the final colours
        colour, n_colours = refined, int(refined.max()) + 1
    else:
        keys = _neighbour_keys(colour, nbr, dist_bits)
    _, first = np.unique(colour, return_index=True)
    rep = first[colour]
    equitable = (crystal[rep] == crystal) & (numbers[rep] == numbers) \
        & (keys[rep] == keys).all(axis=1)
    if not equitable.all():  # a hash collision: keep every atom on its own
        logger.warning("atom classes were not equitable (a hash collision); the "
                       "collection is batched without merging atoms")
        return local
    return rep - start
