"""Neighbour-shell ties: where the original CGCNN's choice of neighbours follows rounding.

The original program keeps the ``max_num_nbr`` nearest neighbours of every atom, ordered by
distance.  When the cut falls inside a shell of equal distances, which members of the shell
are kept is decided by the last bits of the computed distances, and so by the numpy build,
the CPU's vector kernels and the order of the arithmetic.  The choice changes a prediction
only when the shell mixes sites that are not symmetry-equivalent: equivalent sites carry
equal features in every layer, so keeping one or the other sums to the same message.

``tied_cut_atoms`` finds the atoms where the choice matters, from the crystal alone (no
count cap): their predictions are compared with a looser tolerance and named in the output.
"""
from __future__ import annotations

import warnings

import numpy as np

class TieWarning(UserWarning):
    """A crystal compared with a looser tolerance because of a tied neighbour cut."""


TIE_TOL = 1e-8
"""Distances closer than this (Å) are one shell: rounding moves a distance by ~1e-15 Å,
while CIF coordinates given to 4-6 decimals separate real shells by far more than 1e-8 Å."""


def sorted_neighbours(structure, radius: float = 8.0) -> list[list[tuple[int, float]]]:
    """Every atom's neighbours within ``radius`` as (index, distance), sorted by distance
    with Python's stable sort, as the original's ``get_all_neighbors`` + ``sorted``."""
    return [[(n[2], n[1]) for n in sorted(nbrs, key=lambda x: x[1])]
            for nbrs in structure.get_all_neighbors(radius, include_index=True)]


def original_neighbors(structure, radius: float = 8.0, max_num_nbr: int = 12):
    """What the original CGCNN's CIFData computes: (nbr_idx, nbr_dist), each (n_atoms, M)."""
    nbrs = sorted_neighbours(structure, radius)
    idx = np.array([[i for i, _ in row[:max_num_nbr]] for row in nbrs])
    dist = np.array([[d for _, d in row[:max_num_nbr]] for row in nbrs])
    return idx, dist


def equivalent_sites(structure, symprec: float = 1e-3) -> np.ndarray:
    """Symmetry-equivalence class of every site (spglib's ``equivalent_atoms``)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()
    return np.asarray(dataset.equivalent_atoms)


def tied_cut_atoms(structure, radius: float = 8.0, max_num_nbr: int = 12) -> list[int]:
    """Atoms whose neighbour cut falls inside a shell of equal distances that holds
    symmetry-inequivalent sites: there, which neighbours are kept follows rounding."""
    classes = equivalent_sites(structure)
    atoms = []
    for atom, row in enumerate(sorted_neighbours(structure, radius)):
        if len(row) <= max_num_nbr:
            continue
        cut = row[max_num_nbr - 1][1]
        if row[max_num_nbr][1] - cut >= TIE_TOL:
            continue
        shell = {classes[i] for i, d in row if abs(d - cut) < TIE_TOL}
        if len(shell) > 1:
            atoms.append(atom)
    return atoms


def numpy_above_reference_kernels() -> list[str]:
    """numpy's AVX-512 kernel sets that are in use here (the references were made with
    the AVX2 ones): non-empty means the parsed coordinates may differ in the last bits."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [name for name in __cpu_dispatch__
            if name.startswith(("X86_V4", "AVX512")) and __cpu_features__.get(name)]


REFERENCE_KERNELS_HINT = (
    "the references were made with numpy's AVX2 kernels; `make test` runs with "
    "NPY_DISABLE_CPU_FEATURES='X86_V4 AVX512_ICL AVX512_SPR' to match them")

