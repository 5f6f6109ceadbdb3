"""Element -> vector tables used as CGCNN's initial atom features.

A table is an :class:`AtomFeatureTable`: a float32 array indexed by atomic number
(row ``Z``), with a boolean ``available`` row mask for the elements it covers.
Graphs store atomic numbers only, so changing the atom-feature set never forces a
rebuild of the neighbour lists.

Named sets
----------
``"cgcnn"``
    The 92-dimensional one-hot encoding of the original CGCNN (``atom_init.json``),
    shipped with skcgcnn (``skcgcnn/data/``; no matminer needed).  Its nine property
    groups can be selected on their own by passing a tuple of group names, e.g.
    ``("group", "period", "electronegativity")``.
``"onehot"``
    One-hot atomic number, Z = 1..100.
``"magpie"``
    The 22 elemental properties of matminer's magpie preset, standardized over
    Z = 1..100 (zero mean, unit variance); a missing value becomes the mean (0).
``"matscholar"``, ``"megnet"``
    The element embeddings shipped with matminer (200 and 16 dimensions).

Custom tables are a mapping ``{Z or symbol: vector}`` or the path of an
``atom_init.json`` file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Union

import numpy as np

MAX_Z = 118

#: The nine property groups of the CGCNN encoding and their widths, in table order.
CGCNN_GROUPS: dict[str, int] = {
    "group": 19,
    "period": 7,
    "electronegativity": 10,
    "covalent_radius": 10,
    "valence_electrons": 12,
    "first_ionization_energy": 10,
    "electron_affinity": 10,
    "block": 4,
    "atomic_volume": 10,
}

#: The elemental properties of matminer's ``ElementProperty.from_preset("magpie")``.
MAGPIE_PROPERTIES: tuple[str, ...] = (
    "Number", "MendeleevNumber", "AtomicWeight", "MeltingT", "Column", "Row",
    "CovalentRadius", "Electronegativity", "NsValence", "NpValence", "NdValence",
    "NfValence", "NValence", "NsUnfilled", "NpUnfilled", "NdUnfilled", "NfUnfilled",
    "NUnfilled", "GSvolume_pa", "GSbandgap", "GSmagmom", "SpaceGroupNumber",
)

NAMED_SETS = ("cgcnn", "onehot", "magpie", "matscholar", "megnet")

AtomFeatureSpec = Union[str, Sequence[str], Mapping, os.PathLike, "AtomFeatureTable"]


@dataclass(eq=False)
class AtomFeatureTable:
    """Atom features indexed by atomic number.

    Parameters
    ----------
    name : str
        A short description ("cgcnn", "cgcnn[group,period]", "custom", ...).
    table : ndarray of shape (MAX_Z + 1, n_features), float32
        Row ``Z`` holds the features of the element with atomic number ``Z``.
    available : ndarray of shape (MAX_Z + 1,), bool
        Which rows hold real data.
    feature_names : list of str
        One name per column.
    """

    name: str
    table: np.ndarray
    available: np.ndarray
    feature_names: list[str] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(self.table.shape[1])

    @property
    def elements(self) -> np.ndarray:
        """Atomic numbers covered by the table."""
        return np.flatnonzero(self.available)

    def missing(self, numbers: np.ndarray) -> np.ndarray:
        """Atomic numbers among ``numbers`` that the table does not cover (sorted, unique)."""
        numbers = np.asarray(numbers, dtype=np.int64)
        if numbers.size and 0 <= numbers.min() and numbers.max() <= MAX_Z \
                and self.available[numbers].all():
            return np.zeros(0, dtype=np.int64)
        bad = (numbers < 0) | (numbers > MAX_Z)
        inside = numbers[~bad]
        missing = np.concatenate([numbers[bad], inside[~self.available[inside]]])
        return np.unique(missing)

    def __call__(self, numbers: np.ndarray) -> np.ndarray:
        """Features of the atoms with atomic numbers ``numbers``: shape (n_atoms, n_features)."""
        return self.table[np.asarray(numbers, dtype=np.int64)]

    def __repr__(self) -> str:
        return (f"AtomFeatureTable(name={self.name!r}, n_features={self.n_features}, "
                f"n_elements={int(self.available.sum())})")


def _from_rows(name: str, rows: Mapping[int, Sequence[float]],
               feature_names: list[str] | None = None) -> AtomFeatureTable:
    lengths = {len(v) for v in rows.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"atom-feature table {name!r}: every element needs a vector of the same "
            f"length, got lengths {sorted(lengths)}")
    width = lengths.pop()
    table = np.zeros((MAX_Z + 1, width), dtype=np.float32)
    available = np.zeros(MAX_Z + 1, dtype=bool)
    for z, vec in rows.items():
        table[z] = np.asarray(vec, dtype=np.float32)
        available[z] = True
    names = feature_names or [f"{name}_{i}" for i in range(width)]
    return AtomFeatureTable(name, table, available, list(names))


def _atomic_number(key: Any) -> int:
    from pymatgen.core.periodic_table import Element

    if isinstance(key, (int, np.integer)):
        z = int(key)
    elif isinstance(key, str) and key.strip().lstrip("-").isdigit():
        z = int(key)
    elif isinstance(key, str):
        try:
            z = Element(key.strip()).Z
        except ValueError:
            raise ValueError(
                f"atom-feature table key {key!r} is neither an atomic number nor an "
                "element symbol") from None
    else:
        raise ValueError(f"atom-feature table key {key!r} is neither an atomic number "
                         "nor an element symbol")
    if not 1 <= z <= MAX_Z:
        raise ValueError(f"atom-feature table key {key!r}: atomic number must be in 1..{MAX_Z}")
    return z


def _matminer_data_file(name: str) -> str:
    from ._optional import require

    matminer = require("matminer")
    return os.path.join(os.path.dirname(matminer.__file__), "utils", "data_files", name)


#: The CGCNN table shipped with skcgcnn (see skcgcnn/data/README.md for its source).
_CGCNN_DATA = "cgcnn_atom_features.json"


def _cgcnn_full() -> AtomFeatureTable:
    # Stored as the bin of each property group per element (None: no bin); expanded here
    # into the 92 one-hot columns of atom_init.json.
    raw = json.loads((files("skcgcnn") / "data" / _CGCNN_DATA).read_text("utf-8"))
    if raw["groups"] != CGCNN_GROUPS:
        raise ValueError(f"skcgcnn/data/{_CGCNN_DATA}: groups {raw['groups']} differ from "
                         f"CGCNN_GROUPS {CGCNN_GROUPS}; reinstall skcgcnn")
    starts = np.cumsum([0] + list(CGCNN_GROUPS.values()))[:-1]
    rows = {}
    for z, bins in raw["bins"].items():
        row = np.zeros(sum(CGCNN_GROUPS.values()), dtype=np.float32)
        row[[s + b for s, b in zip(starts, bins) if b is not None]] = 1.0
        rows[int(z)] = row
    names = [f"{g}_{i}" for g, w in CGCNN_GROUPS.items() for i in range(w)]
    return _from_rows("cgcnn", rows, names)


def _cgcnn_subset(groups: Sequence[str]) -> AtomFeatureTable:
    unknown = [g for g in groups if g not in CGCNN_GROUPS]
    if unknown or not groups:
        raise ValueError(
            f"unknown CGCNN property group(s) {unknown}; choose from "
            f"{list(CGCNN_GROUPS)}")
    full = _cgcnn_full()
    starts = np.cumsum([0] + list(CGCNN_GROUPS.values()))
    offsets = dict(zip(CGCNN_GROUPS, starts))
    cols = np.concatenate([np.arange(offsets[g], offsets[g] + CGCNN_GROUPS[g])
                           for g in groups])
    return AtomFeatureTable(
        f"cgcnn[{','.join(groups)}]", np.ascontiguousarray(full.table[:, cols]),
        full.available.copy(), [full.feature_names[c] for c in cols])


def _onehot() -> AtomFeatureTable:
    rows = {z: np.eye(100, dtype=np.float32)[z - 1] for z in range(1, 101)}
    return _from_rows("onehot", rows, [f"Z={z}" for z in range(1, 101)])


def _magpie() -> AtomFeatureTable:
    from ._optional import require
    from pymatgen.core.periodic_table import Element

    data = require("matminer.utils.data").MagpieData(impute_nan=False)
    zs = np.arange(1, 101)
    values = np.full((zs.size, len(MAGPIE_PROPERTIES)), np.nan)
    for j, prop in enumerate(MAGPIE_PROPERTIES):
        column = data.all_elemental_props[prop]
        for i, z in enumerate(zs):
            v = column.get(Element.from_Z(int(z)).symbol, np.nan)
            values[i, j] = np.nan if v is None else float(v)
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std[std == 0] = 1.0
    scaled = (values - mean) / std
    scaled[np.isnan(scaled)] = 0.0
    return _from_rows("magpie", dict(zip(zs.tolist(), scaled)), list(MAGPIE_PROPERTIES))


def _embedding(name: str, filename: str) -> AtomFeatureTable:
    from pymatgen.core.periodic_table import Element

    with open(_matminer_data_file(filename)) as fh:
        raw = json.load(fh)
    rows: dict[int, Sequence[float]] = {}
    if name == "megnet":
        # a list indexed by Z (row 0 is a dummy element)
        for z, vec in enumerate(raw):
            if 1 <= z <= MAX_Z:
                rows[z] = vec
    else:
        for symbol, vec in raw.items():
            try:
                rows[Element(symbol).Z] = vec
            except ValueError:
                continue
    return _from_rows(name, rows)


def load_atom_init_json(path: str | os.PathLike) -> AtomFeatureTable:
    """Read an original CGCNN ``atom_init.json`` (``{"Z": [features...]}``)."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read atom-feature file {os.fspath(path)!r}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ValueError(f"{os.fspath(path)!r} is not an atom_init.json mapping Z -> vector")
    return _from_rows("custom", {_atomic_number(k): v for k, v in raw.items()})


def get_atom_features(spec: AtomFeatureSpec = "cgcnn") -> AtomFeatureTable:
    """Resolve an atom-feature specification into an :class:`AtomFeatureTable`.

    Parameters
    ----------
    spec : str, sequence of str, mapping, path or AtomFeatureTable, default="cgcnn"
        A named set (``"cgcnn"``, ``"onehot"``, ``"magpie"``, ``"matscholar"``,
        ``"megnet"``), a tuple of CGCNN property-group names (see
        :data:`CGCNN_GROUPS`), a mapping ``{Z or symbol: vector}``, or the path of an
        ``atom_init.json``.

    Returns
    -------
    AtomFeatureTable

    Examples
    --------
    >>> get_atom_features("cgcnn").n_features
    92
    >>> get_atom_features(("group", "period")).n_features
    26
    """
    if isinstance(spec, AtomFeatureTable):
        return spec
    if isinstance(spec, Mapping):
        return _from_rows("custom", {_atomic_number(k): v for k, v in spec.items()})
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and (
            spec.endswith(".json") or os.sep in spec)):
        return load_atom_init_json(spec)
    if isinstance(spec, str):
        key = spec.lower()
        if key == "cgcnn":
            return _cgcnn_full()
        if key in CGCNN_GROUPS:
            return _cgcnn_subset([key])
        if key == "onehot":
            return _onehot()
        if key == "magpie":
            return _magpie()
        if key == "matscholar":
            return _embedding("matscholar", "matscholar_els.json")
        if key == "megnet":
            return _embedding("megnet", "megnet_elemental_embedding.json")
        raise ValueError(
            f"unknown atom-feature set {spec!r}; choose one of {list(NAMED_SETS)}, a tuple "
            f"of CGCNN groups {list(CGCNN_GROUPS)}, a mapping {{Z: vector}} or the path "
            "of an atom_init.json")
    if isinstance(spec, Sequence) and all(isinstance(g, str) for g in spec):
        return _cgcnn_subset(list(spec))
    raise TypeError(
        f"atom_features must be a name, a tuple of CGCNN groups, a mapping or a path; "
        f"got {type(spec).__name__}")
