"""Inputs: any structure a user hands skcgcnn, as a pymatgen Structure.

This module knows pymatgen (and ASE, when it is installed) only.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ._text import shorten

__all__ = ["StructureError", "describe", "to_structure"]


class StructureError(ValueError):
    """A structure that cannot be turned into a crystal graph."""


def describe(index: int, ident: Any) -> str:
    """How error messages name an input: ``"structure 17 (mp-1234)"``, or
    ``"structure 17"`` when its id is None or its position."""
    if ident is None or (isinstance(ident, (int, np.integer)) and ident == index):
        return f"structure {index}"
    return f"structure {index} ({ident})"


def _is_ase_atoms(obj: Any) -> bool:
    try:
        from ase import Atoms
    except ImportError:
        return False
    return isinstance(obj, Atoms)


def to_structure(obj: Any, name: str = "structure"):
    """A pymatgen Structure from a Structure, an ASE Atoms or a CIF file path."""
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.exists(path):
            if isinstance(path, str) and ("\n" in path or path.lstrip().startswith("data_")):
                raise StructureError(
                    f"{name} is text, not a file path: {shorten(path)}; parse CIF text "
                    "first with pymatgen's Structure.from_str(text, fmt='cif') or pass the "
                    "file's path")
            raise StructureError(f"{name}: no such file {shorten(path)}; pass a Structure or "
                                 "the path of a CIF file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Structure.from_file(path)
        except Exception as exc:  # pymatgen raises many kinds
            raise StructureError(f"{name}: cannot read {shorten(path)} as a structure "
                                 f"({shorten(str(exc), 200)}); fix the file or pass "
                                 "on_error='skip'") from exc
    if _is_ase_atoms(obj):
        from pymatgen.io.ase import AseAtomsAdaptor

        if not all(obj.pbc):
            raise StructureError(
                f"{name} is an ASE Atoms without periodic boundaries (pbc={obj.pbc}); "
                "CGCNN needs a 3D-periodic cell: set a cell and pbc=True")
        return AseAtomsAdaptor.get_structure(obj)
    return obj  # structure_arrays names what is wrong with it
