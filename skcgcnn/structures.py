"""Inputs: whatever a user hands skcgcnn, as structures and ids, with one id rule.

:func:`as_structures` is the one place where inputs are normalised; the transformer,
the baselines, the benchmark, the search and the command line all read X through it,
so an id means the same everywhere (in error messages, result tables and graph files).

The id rule
-----------
1. a pandas Series gives its index (a DataFrame: the index, with the structures in its
   ``"structure"`` column, or its only column);
2. a :class:`~skcgcnn.graph.GraphCollection` gives its ``ids`` (:func:`ids_of` only:
   it holds graphs, not structures);
3. a sequence of structures that **all** carry an id in ``structure.properties["id"]``
   (as the dataset loaders set it) gives those;
4. anything else gives the positions ``0 .. n-1``.

All or nothing in rule 3: a mix of ids and positions could name two inputs alike.

Error messages name an input by position and id, ``"structure 17 (mp-1234)"``
(:func:`describe`), and every input that cannot be a crystal structure raises
:class:`StructureError`.

CIF files are read by :func:`skcgcnn._cif.read_cif_file`: gemmi's fast reader where it
is installed and the file is a plain P1 CIF (the structure pymatgen would give), else
pymatgen's ``Structure.from_file``; ``$SKCGCNN_CIF_READER=pymatgen`` turns it off.

This module knows pymatgen (and ASE and pandas, when they are installed) only.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._text import shorten

__all__ = ["StructureError", "as_structures", "describe", "ids_of", "to_structure"]


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


def to_structure(obj: Any, name: str = "structure", strict: bool = False) -> Any:
    """A pymatgen Structure from a Structure, an IStructure, an ASE Atoms or a CIF file path.

    Parameters
    ----------
    obj : Structure, IStructure, ase.Atoms, str or path-like
    name : str, default="structure"
        How error messages name it (see :func:`describe`).
    strict : bool, default=False
        Refuse anything else with a :class:`StructureError`.

    Returns
    -------
    Structure
        Or, unless ``strict``, ``obj`` itself when it is none of these: the graph
        builder names what is wrong with it (a Molecule, a dict, ...).

    Raises
    ------
    StructureError
        For CIF text instead of a path, a missing or unreadable file, a non-periodic
        ASE Atoms, or (``strict``) an object that is not a crystal structure.
    """
    from pymatgen.core import IStructure, Structure

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, IStructure):
        return Structure.from_sites(obj)
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
        from ._cif import read_cif_file

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Structure.from_file(path); a CIF by the fast reader where it can
                return read_cif_file(path)
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
    if strict:
        raise StructureError(f"{name} is a {type(obj).__name__}, not a crystal structure; "
                             "pass pymatgen Structures, ASE Atoms or CIF file paths")
    return obj  # structure_arrays names what is wrong with it


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with scikit-learn users
        return None
    return pd


def _is_graphs(X: Any) -> bool:
    # duck-typed: this module comes before skcgcnn.graph on the data path
    return hasattr(X, "atom_ptr") and hasattr(X, "nbr_idx") and hasattr(X, "ids")


def _property_ids(items: list) -> list | None:
    ids = []
    for obj in items:
        props = getattr(obj, "properties", None)
        ident = props.get("id") if isinstance(props, dict) else None
        if ident is None:
            return None
        ids.append(ident)
    return ids if ids else None


def as_structures(X: Any, *, parse: bool = True) -> tuple[list, list]:
    """The inputs of ``X`` and their ids, by the id rule of this module.

    Parameters
    ----------
    X : sequence, 1-D ndarray, pandas Series or DataFrame
        Of pymatgen Structures, ASE Atoms or CIF file paths.
    parse : bool, default=True
        Return pymatgen Structures (CIF files read, ASE Atoms converted).  With False
        the inputs come back as given, for a caller that converts them later (the
        transformer does it in its worker processes).

    Returns
    -------
    structures : list
    ids : list
        One per input.

    Raises
    ------
    TypeError
        When X is not a sequence of inputs (a single structure, a GraphCollection).
    ValueError
        For a DataFrame without a structure column, or an array of more than one column.
    StructureError
        With ``parse=True``, for an input that is not a crystal structure.

    Examples
    --------
    >>> import pandas as pd
    >>> from pymatgen.core import Lattice, Structure
    >>> fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> as_structures(pd.Series([fe], index=["mp-13"]))[1]
    ['mp-13']
    >>> as_structures([fe, fe])[1]
    [0, 1]
    """
    pd = _pandas()
    if pd is not None and isinstance(X, pd.DataFrame):
        X = _structure_column(X)
    if pd is not None and isinstance(X, pd.Series):
        items, ids = list(X.to_numpy()), list(X.index)
    else:
        items = _as_list(X)
        ids = _property_ids(items) or list(range(len(items)))
    if not parse:
        return items, ids
    return [to_structure(obj, describe(i, ident), strict=True) for i, (obj, ident)
            in enumerate(zip(items, ids))], ids


def ids_of(X: Any) -> list:
    """The ids of ``X`` by the id rule of this module; also for a GraphCollection."""
    if _is_graphs(X):
        return list(X.ids)
    return as_structures(X, parse=False)[1]


def _structure_column(X: Any) -> Any:
    if "structure" in X.columns:
        return X["structure"]
    if X.shape[1] == 1:
        return X.iloc[:, 0]
    raise ValueError(f"X is a DataFrame with columns {list(X.columns)[:10]}; put the "
                     "structures in a 'structure' column, or pass that column (a Series)")


def _as_list(X: Any) -> list:
    if _is_graphs(X):
        raise TypeError("X is already a GraphCollection; pass it to the estimator "
                        "directly, without StructureGraphTransformer")
    if hasattr(X, "lattice") or _is_ase_atoms(X) or isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError("X must be a sequence of structures; wrap a single structure "
                        "in a list")
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"X has shape {X.shape}; pass a 1-D list, array or Series of "
                             "structures")
        return list(X)
    if not isinstance(X, Iterable):
        raise TypeError(f"X must be a sequence of structures, got {type(X).__name__}")
    return list(X)
