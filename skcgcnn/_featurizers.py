"""matminer featurizers of our own, and the conversion of an entry to what they take.

:class:`SineCoulombEigenvalues` (a fixed-length sine Coulomb matrix spectrum that needs
no fit) and :class:`ElementPropertyPreset` (a magpie-style preset that scikit-learn clones
quietly) are used by the baselines of :mod:`skcgcnn.baselines`, which re-exports them.

This module needs matminer (``pip install 'skcgcnn[baselines]'``).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from skcgcnn._optional import require
# one entry as a Structure by the one rule (Structure, ASE Atoms or CIF path, else
# StructureError naming it); private there until structures.py makes it public
from skcgcnn.structures import to_structure

BaseFeaturizer = require("matminer.featurizers.base").BaseFeaturizer

__all__ = ["ElementPropertyPreset", "SineCoulombEigenvalues"]

# 1 Angstrom in Bohr radii (CODATA 2018), the unit of the sine Coulomb matrix.
_ANGSTROM_IN_BOHR = 1.8897261246257702


class SineCoulombEigenvalues(BaseFeaturizer):
    r"""The largest eigenvalues of the sine Coulomb matrix, a fixed-length vector.

    The sine Coulomb matrix of Faber et al. (2015) is

    .. math::

        M_{ii} = \tfrac12 Z_i^{2.4}, \qquad
        M_{ij} = \frac{Z_i Z_j}{\lVert \sum_k \hat a_k \sin^2(\pi (f_i - f_j)_k) \lVert a_k\rVert
        \rVert}, \; i \neq j

    with fractional coordinates :math:`f`, lattice vectors :math:`a_k` and distances in Bohr,
    as matminer's ``SineCoulombMatrix(flatten=False)`` computes it. Its eigenvalues, sorted
    by decreasing absolute value, are truncated or zero-padded to ``n_eigs`` values.

    matminer's own ``SineCoulombMatrix(flatten=True)`` pads to the largest cell seen in
    ``fit`` and fails on a larger cell at predict time; with a fixed ``n_eigs`` this
    featurizer needs no fit and accepts cells of any size.

    Parameters
    ----------
    n_eigs : int, default=32
        Number of eigenvalues kept.
    diag_elems : bool, default=True
        Whether the diagonal holds :math:`\tfrac12 Z_i^{2.4}` (True) or zeros.

    References
    ----------
    F. Faber, A. Lindmaa, O. A. von Lilienfeld and R. Armiento, "Crystal structure
    representations for machine learning models of formation energies", Int. J. Quantum
    Chem. 115, 1094 (2015).
    """

    def __init__(self, n_eigs: int = 32, diag_elems: bool = True) -> None:
        self.n_eigs = n_eigs
        self.diag_elems = diag_elems

    def sine_matrix(self, structure: Any) -> np.ndarray:
        """Return the sine Coulomb matrix of ``structure``, shape (n_sites, n_sites)."""
        if not structure.is_ordered:
            raise ValueError(
                "the structure has partially occupied sites; the sine Coulomb matrix "
                "needs an ordered structure"
            )
        z = np.array([site.specie.Z for site in structure], dtype=float)
        frac = np.asarray(structure.frac_coords, dtype=float)
        diff = frac[:, None, :] - frac[None, :, :]
        trig = np.sin(np.pi * diff) ** 2 @ structure.lattice.matrix
        dist = np.linalg.norm(trig, axis=-1) * _ANGSTROM_IN_BOHR
        np.fill_diagonal(dist, 1.0)
        if np.any(dist < 1e-8):
            i, j = np.argwhere(dist < 1e-8)[0]
            raise ValueError(
                f"sites {i} and {j} are at the same position (or differ by a lattice "
                "vector); remove the duplicate site"
            )
        matrix = np.outer(z, z) / dist
        if self.diag_elems:
            np.fill_diagonal(matrix, 0.5 * z**2.4)
        else:
            np.fill_diagonal(matrix, 0.0)
        return matrix

    def featurize(self, structure: Any) -> np.ndarray:
        """Return the ``n_eigs`` largest-magnitude eigenvalues, zero-padded."""
        eigs = np.linalg.eigvalsh(self.sine_matrix(structure))
        eigs = eigs[np.argsort(-np.abs(eigs), kind="stable")][: self.n_eigs]
        out = np.zeros(self.n_eigs)
        out[: len(eigs)] = eigs
        return out

    def feature_labels(self) -> list[str]:
        return [f"sine coulomb eigenvalue {i}" for i in range(self.n_eigs)]

    def citations(self) -> list[str]:
        return [
            "@article{faber2015, author = {Faber, Felix and Lindmaa, Alexander and "
            "von Lilienfeld, O. Anatole and Armiento, Rickard}, title = {Crystal structure "
            "representations for machine learning models of formation energies}, "
            "journal = {Int. J. Quantum Chem.}, volume = {115}, pages = {1094--1101}, "
            "year = {2015}, doi = {10.1002/qua.24917}}"
        ]

    def implementors(self) -> list[str]:
        return ["skcgcnn contributors"]


class ElementPropertyPreset(BaseFeaturizer):
    """matminer's ``ElementProperty.from_preset(preset)`` on a structure's composition.

    Takes Structures (their ``composition`` is used) or Compositions, so that composition
    and structure features can share one :class:`MatminerFeaturizer` (one pass, one
    progress bar, one error list). Its only parameters are the preset's name and
    ``impute_nan``, so scikit-learn's ``clone`` rebuilds it quietly (cloning an
    ``ElementProperty`` itself passes its data-source object back to ``__init__``,
    which makes matminer warn on every clone).

    Parameters
    ----------
    preset : str, default="magpie"
        A preset of ``ElementProperty.from_preset``: "magpie", "deml", "matminer",
        "matscholar_el" or "megnet_el".
    impute_nan : bool, default=True
        Replace missing element data by the mean over elements (matminer's option).
    """

    def __init__(self, preset: str = "magpie", impute_nan: bool = True) -> None:
        self.preset = preset
        self.impute_nan = impute_nan

    def _element_property(self) -> Any:
        key = (self.preset, self.impute_nan)
        if getattr(self, "_built_for", None) != key:
            composition = require("matminer.featurizers.composition")
            self._built = composition.ElementProperty.from_preset(
                self.preset, impute_nan=self.impute_nan
            )
            self._built_for = key
        return self._built

    def featurize(self, x: Any) -> list[Any]:
        from pymatgen.core import Composition

        comp = x if isinstance(x, Composition) else x.composition
        return self._element_property().featurize(comp)

    def feature_labels(self) -> list[str]:
        return self._element_property().feature_labels()

    def citations(self) -> list[str]:
        return self._element_property().citations()

    def implementors(self) -> list[str]:
        return self._element_property().implementors()


def _to_composition(x: Any, name: str = "structure") -> Any:
    """Convert one entry to a pymatgen Composition (also accepts formulas)."""
    from pymatgen.core import Composition

    if isinstance(x, Composition):
        return x
    if isinstance(x, str) and not os.path.exists(x):
        return Composition(x)
    return to_structure(x, name, strict=True).composition
