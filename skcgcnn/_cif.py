"""A fast CIF reader for plain P1 CIFs, giving pymatgen's structures, and the reader switch.

Most CIFs of screening sets are the plain P1 files that pymatgen writes (the Materials
Project's among them): one block, one symmetry operation ``x, y, z``, ordered sites of
occupancy 1.  :func:`read_cif` reads such a file with gemmi's CIF tokenizer and builds
the :class:`~pymatgen.core.Structure` that ``Structure.from_str(text, fmt="cif")`` gives,
about 15 times faster; any other file goes to pymatgen itself.

What pymatgen's ``CifParser`` does to a P1 file, and so what is done here:

- the lattice is ``Lattice.from_parameters(a, b, c, alpha, beta, gamma)`` (called
  as pymatgen calls it, so the matrix is the same to the bit);
- a fractional coordinate within 1e-4 (relative) of 1/3 or 2/3 becomes 1/3 or 2/3;
- coordinates are wrapped into [0, 1) by ``x - floor(x)``;
- sites are sorted by the electronegativity of their element, then its symbol, ties
  kept in file order (``get_sorted_structure`` after grouping by composition);
- labels are the ``_atom_site_label`` values.

Everything else falls back to pymatgen: another symmetry operation or none (symmetry
expansion and its merging of sites), an occupancy other than 1 (disorder, and the
merging of sites that share a position), two sites within pymatgen's site tolerance, a
type symbol that is not a plain element symbol (oxidation states, ``Fe2+``, water
labels, deuterium), an element without an electronegativity (noble gases and heavy
elements, whose order pymatgen leaves to the sort's comparisons with NaN), an
uncertainty in brackets, quoted or missing numbers, a tag the reader does not know
(magnetic CIFs, oxidation-state tables, implicit hydrogens, ...), several data blocks,
a cell thinner than pymatgen accepts, and whatever gemmi cannot read.  Fallbacks are
counted, not warned about one by one: :func:`reader_counts` gives the counts and the
reasons, :func:`log_reader_counts` writes one summary line.

The reader is chosen by ``$SKCGCNN_CIF_READER`` (``auto``, ``gemmi`` or ``pymatgen``;
inherited by worker processes) or per call: ``auto`` (the default) is gemmi when it is
installed (``pip install skcgcnn[fast]``), else pymatgen.
``benchmarks/bench_cif_reader.py`` measures the speed and checks the structures against
pymatgen's on a whole data set.

This module knows pymatgen, numpy and (optionally) gemmi only.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from collections import Counter
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CIF_READERS", "gemmi_available", "log_reader_counts", "read_cif",
           "read_cif_file", "reader_counts", "reset_reader_counts", "resolve_reader"]

#: The values of ``$SKCGCNN_CIF_READER`` and of the ``cif_reader`` arguments.
CIF_READERS = ("auto", "gemmi", "pymatgen")
_ENV = "SKCGCNN_CIF_READER"

# tags whose values pymatgen does not use for a P1 file with explicit operations
_IGNORED = frozenset({
    "_symmetry_space_group_name_H-M", "_symmetry_Int_Tables_number",
    "_space_group_IT_number", "_chemical_formula_structural", "_chemical_formula_sum",
    "_chemical_name_systematic", "_cell_volume", "_cell_formula_units_Z",
    "_symmetry_equiv_pos_site_id", "_space_group_symop_id",
    "_atom_site_symmetry_multiplicity", "_atom_site_Wyckoff_symbol",
})
_CELL = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha",
         "_cell_angle_beta", "_cell_angle_gamma")
_SYMOPS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
_SITE = ("_atom_site_type_symbol", "_atom_site_label", "_atom_site_fract_x",
         "_atom_site_fract_y", "_atom_site_fract_z")
_OCCUPANCY = "_atom_site_occupancy"
_KNOWN = _IGNORED | set(_CELL) | set(_SYMOPS) | set(_SITE) | {_OCCUPANCY}

_SITE_TOLERANCE = 1e-4  # CifParser's site_tolerance and frac_tolerance
_FRAC_TOLERANCE = 1e-4
_MIN_THICKNESS = 0.01  # CifParser's min_thickness (Å): thinner cells go to pymatgen
_MAX_SITES = 2000  # the pairwise check of close sites is O(n^2)

_counts: Counter = Counter()


class _Fallback(Exception):
    """The file is not one the fast path reads; the message is the reason counted."""


def gemmi_available() -> bool:
    try:
        import gemmi.cif  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_reader(reader: str | None = None) -> str:
    """``"gemmi"`` or ``"pymatgen"``: ``reader`` (default ``$SKCGCNN_CIF_READER``, else
    ``"auto"``), with ``"auto"`` resolved to gemmi when it is installed."""
    reader = reader or os.environ.get(_ENV) or "auto"
    if reader not in CIF_READERS:
        raise ValueError(f"cif_reader {reader!r} is not one of {', '.join(CIF_READERS)}"
                         + (f" (from ${_ENV})" if reader == os.environ.get(_ENV) else ""))
    if reader == "auto":
        return "gemmi" if gemmi_available() else "pymatgen"
    if reader == "gemmi" and not gemmi_available():
        raise ImportError("cif_reader='gemmi' needs gemmi: pip install 'skcgcnn[fast]' "
                          "(or pip install gemmi)")
    return reader


def reader_counts() -> dict[str, Any]:
    """CIFs read in this process since the last reset: ``{"gemmi": n, "pymatgen": m,
    "fallbacks": {reason: count}}`` (``pymatgen`` counts those read by pymatgen,
    fallbacks and ``cif_reader="pymatgen"`` alike)."""
    reasons = {k[9:]: v for k, v in _counts.items() if k.startswith("fallback:")}
    return {"gemmi": _counts["gemmi"], "pymatgen": _counts["pymatgen"],
            "fallbacks": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}


def reset_reader_counts() -> None:
    _counts.clear()


def add_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The sum of two :func:`reader_counts` dicts."""
    reasons = Counter(a.get("fallbacks", {}))
    reasons.update(b.get("fallbacks", {}))
    return {"gemmi": a.get("gemmi", 0) + b.get("gemmi", 0),
            "pymatgen": a.get("pymatgen", 0) + b.get("pymatgen", 0),
            "fallbacks": dict(reasons.most_common())}


def counts_since(before: dict[str, Any]) -> dict[str, Any]:
    """:func:`reader_counts` now less ``before`` (an earlier reader_counts())."""
    now = reader_counts()
    reasons = Counter(now["fallbacks"])
    reasons.subtract(before["fallbacks"])
    return {"gemmi": now["gemmi"] - before["gemmi"],
            "pymatgen": now["pymatgen"] - before["pymatgen"],
            "fallbacks": {k: v for k, v in reasons.most_common() if v}}


def add_reader_counts(counts: dict[str, Any]) -> None:
    """Add the :func:`reader_counts` of another process (a parsing worker)."""
    _counts["gemmi"] += counts.get("gemmi", 0)
    _counts["pymatgen"] += counts.get("pymatgen", 0)
    for reason, n in counts.get("fallbacks", {}).items():
        _counts["fallback:" + reason] += n


def log_reader_counts(counts: dict[str, Any] | None = None, what: str = "CIFs") -> None:
    """One INFO line: how many CIFs gemmi read, how many went to pymatgen and why."""
    counts = reader_counts() if counts is None else counts
    if not counts["gemmi"] and not counts["fallbacks"]:
        return
    reasons = ", ".join(f"{n} {reason}" for reason, n in list(counts["fallbacks"].items())[:5])
    logger.info("%s read: %d by the fast reader (gemmi), %d by pymatgen%s", what,
                counts["gemmi"], counts["pymatgen"],
                f" (fallbacks: {reasons})" if reasons else "")


# -- elements ---------------------------------------------------------------------------
_ELEMENTS: dict[str, tuple[float, str, Any]] | None = None


def _elements() -> dict[str, tuple[float, str, Any]]:
    """symbol -> (electronegativity, symbol, shared Composition) of the elements that
    the fast path takes: those with an electronegativity, one symbol per Z."""
    global _ELEMENTS
    if _ELEMENTS is None:
        from pymatgen.core import Composition, Element

        table = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns for each missing X
            for el in Element:
                x = el.X
                if not math.isnan(x) and Element.from_Z(el.Z) is el:
                    table[el.symbol] = (x, el.symbol, Composition({el: 1.0}))
        _ELEMENTS = table
    return _ELEMENTS


# pymatgen's _parse_symbol maps these prefixes (water, hydroxide, nitrate labels)
_SPECIAL_PREFIXES = ("Hw", "Ow", "Wat", "wat", "OH", "OH2", "NO3")


# -- the fast path ----------------------------------------------------------------------
def _number(raw: str, tag: str) -> float:
    """A plain CIF number: pymatgen's str2float gives the same float for it."""
    if "(" in raw or raw[:1] in ("'", '"', ";"):
        raise _Fallback(f"{tag} is not a plain number")
    try:
        value = float(raw)
    except ValueError:
        raise _Fallback(f"{tag} is not a plain number") from None
    if not math.isfinite(value):
        raise _Fallback(f"{tag} is not finite")
    return value


def _numbers(raw: list[str], tag: str) -> list[float]:
    """:func:`_number` of every value of a loop column."""
    joined = "".join(raw)
    if "(" in joined or "'" in joined or '"' in joined or ";" in joined:
        raise _Fallback(f"{tag} is not a plain number")
    try:
        values = list(map(float, raw))
    except ValueError:
        raise _Fallback(f"{tag} is not a plain number") from None
    if not all(map(math.isfinite, values)):
        raise _Fallback(f"{tag} is not finite")
    return values


def _block_items(text: str) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """(pairs, loop columns, loop length of the sites) of the one data block of text."""
    from gemmi import cif

    if text.count("data_") != 1:  # pymatgen splits blocks on data_ alone
        raise _Fallback("not exactly one data block")
    try:
        doc = cif.read_string(text)
    except (RuntimeError, ValueError) as exc:
        raise _Fallback(f"gemmi cannot read it ({type(exc).__name__})") from None
    if len(doc) != 1:
        raise _Fallback("not exactly one data block")
    pairs: dict[str, str] = {}
    columns: dict[str, list[str]] = {}
    n_sites = -1
    for item in doc[0]:
        pair = item.pair
        if pair is not None:
            if pair[0] not in _KNOWN:
                raise _Fallback(f"tag {pair[0]}")
            pairs[pair[0]] = pair[1]
            continue
        loop = item.loop
        if loop is None:
            raise _Fallback("a save frame")
        tags = list(loop.tags)
        unknown = [t for t in tags if t not in _KNOWN]
        if unknown:
            raise _Fallback(f"tag {unknown[0]}")
        width, values = len(tags), list(loop.values)
        for k, tag in enumerate(tags):
            columns[tag] = values[k::width]
        if "_atom_site_label" in tags:
            n_sites = loop.length()
    overlap = set(pairs) & set(columns)
    if overlap:
        raise _Fallback(f"tag {sorted(overlap)[0]} twice")
    return pairs, columns, n_sites


def _symmetry_is_identity(pairs: dict[str, str], columns: dict[str, list[str]]) -> None:
    """The first symmetry tag that holds operations (pymatgen's order) holds x, y, z
    alone."""
    given = [columns.get(tag) or ([pairs[tag]] if tag in pairs else None) for tag in _SYMOPS]
    ops = next((g for g in given if g), None)
    if ops is None:
        raise _Fallback("no symmetry operations")
    op = ops[0]
    if op[:1] in ("'", '"'):
        op = op[1:-1]
    if len(ops) != 1 or "".join(op.split()) != "x,y,z":
        raise _Fallback("symmetry operations besides x, y, z")


def _fast_structure(text: str) -> Any:
    from pymatgen.core import Lattice, Structure

    pairs, columns, n_sites = _block_items(text)
    _symmetry_is_identity(pairs, columns)
    missing = [t for t in _CELL if t not in pairs]
    if missing:
        raise _Fallback(f"no {missing[0]}")
    lattice = Lattice.from_parameters(*(_number(pairs[t], t) for t in _CELL))
    if not np.isfinite(lattice.matrix).all():
        raise _Fallback("cell parameters that make no cell")
    if n_sites < 1 or any(len(columns.get(t, ())) != n_sites for t in _SITE) or \
            len(columns.get(_OCCUPANCY, ())) not in (0, n_sites):
        raise _Fallback("no atom_site loop with type symbols, labels and coordinates")
    if n_sites > _MAX_SITES:
        raise _Fallback(f"more than {_MAX_SITES} sites")
    # d_100, d_010, d_001: 1 / the lengths of the reciprocal vectors (over 2 pi)
    if (1.0 / np.linalg.norm(lattice.inv_matrix, axis=0)).min() < 2 * _MIN_THICKNESS:
        raise _Fallback("a cell thinner than pymatgen's min_thickness")
    occupancy = columns.get(_OCCUPANCY)
    if occupancy is not None and any(v != 1.0 for v in _numbers(occupancy, _OCCUPANCY)):
        raise _Fallback("an occupancy other than 1")
    elements = _elements()
    keys, species = [], []
    for symbol in columns["_atom_site_type_symbol"]:
        entry = elements.get(symbol)
        if entry is None or symbol.startswith(_SPECIAL_PREFIXES):
            known = symbol in _elements_all()
            raise _Fallback("an element without electronegativity" if known else
                            "a type symbol that is not an element symbol")
        keys.append(entry[:2])
        species.append(entry[2])
    labels = []
    for raw in columns["_atom_site_label"]:
        if raw[:1] in ("'", '"'):
            raw = raw[1:-1]
        elif raw[:1] in (";", "?", ".") or not raw:
            raise _Fallback("a label that is not a plain word")
        labels.append(raw)
    frac = np.array([_numbers(columns[t], t) for t in _SITE[2:]]).T
    for ideal in (1 / 3, 2 / 3):  # CifParser._sanitize_data
        frac[np.abs(frac / ideal - 1) <= _FRAC_TOLERANCE] = float(str(ideal))
    if len(frac) > 1:
        diff = frac[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        close = np.all(np.abs(diff) <= 2 * _SITE_TOLERANCE, axis=2)
        if np.count_nonzero(close) > len(frac):
            raise _Fallback("two sites at one position")
    frac = frac - np.floor(frac)
    order = sorted(range(len(keys)), key=keys.__getitem__)  # stable
    return new_structure(lattice, [species[i] for i in order], frac[order],
                         [labels[i] for i in order])


# -- building Structures fast -------------------------------------------------------------
_FAST_BUILD: bool | None = None
_SITE_KEYS = ("_lattice", "_frac_coords", "_species", "_coords", "properties", "_label")
_STRUCTURE_KEYS = ("_lattice", "_sites", "_charge", "_properties")


def _fast_build_works() -> bool:
    """Whether the attributes that pymatgen's constructors set are those that
    :func:`new_structure` sets (checked once on a one-site structure; else the
    public constructor is used)."""
    global _FAST_BUILD
    if _FAST_BUILD is None:
        from pymatgen.core import Composition, Element, Lattice, Structure

        lattice = Lattice(np.eye(3))
        public = Structure(lattice, [Composition({Element.H: 1.0})], [[0.0, 0.0, 0.0]],
                           labels=["H0"])
        _FAST_BUILD = (tuple(vars(public)) == _STRUCTURE_KEYS
                       and type(public._sites) is list  # a Structure's are mutable
                       and tuple(vars(public[0])) == _SITE_KEYS
                       and public._charge is None and public.properties == {}
                       and public[0].properties == {} and public[0]._coords is None)
        if not _FAST_BUILD:
            logger.debug("pymatgen's Structure has other attributes than %s / %s; the "
                         "public constructor is used", _STRUCTURE_KEYS, _SITE_KEYS)
    return _FAST_BUILD


def new_structure(lattice: Any, species: list, frac_coords: np.ndarray,
                  labels: list[str]) -> Any:
    """``Structure(lattice, species, frac_coords, labels=labels)``, 5 times faster.

    The sites get the attributes pymatgen's constructor gives them, without its
    per-site checks: for inputs that are already valid (a Lattice, Compositions of
    total occupancy 1, an (n, 3) float64 array), as the fast reader and the structure
    cache have.  When pymatgen's classes hold other attributes than expected, the
    public constructor is used instead.
    """
    from pymatgen.core import PeriodicSite, Structure

    if not _fast_build_works():
        return Structure(lattice, species, frac_coords, labels=labels)
    new, set_dict = object.__new__, object.__setattr__
    # one copy of the coordinates per structure; each site holds its row of it
    rows = np.array(frac_coords, dtype=np.float64).reshape(-1, 3)
    sites = []
    for specie, coords, label in zip(species, rows, labels):
        site = new(PeriodicSite)
        set_dict(site, "__dict__", {"_lattice": lattice, "_frac_coords": coords,
                                    "_species": specie, "_coords": None, "properties": {},
                                    "_label": label})
        sites.append(site)
    structure = new(Structure)
    set_dict(structure, "__dict__", {"_lattice": lattice, "_sites": sites, "_charge": None,
                                     "_properties": {}})
    return structure


_ALL_SYMBOLS: frozenset | None = None


def _elements_all() -> frozenset:
    global _ALL_SYMBOLS
    if _ALL_SYMBOLS is None:
        from pymatgen.core import Element

        _ALL_SYMBOLS = frozenset(el.symbol for el in Element)
    return _ALL_SYMBOLS


# -- the readers ------------------------------------------------------------------------
def _pymatgen_from_str(text: str) -> Any:
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(text, fmt="cif")


def read_cif(text: str, reader: str | None = None) -> Any:
    """The pymatgen Structure of CIF text, as ``Structure.from_str(text, fmt="cif")``.

    Parameters
    ----------
    text : str
        The CIF's text.
    reader : {"auto", "gemmi", "pymatgen"}, optional
        Default ``$SKCGCNN_CIF_READER``, else ``"auto"`` (gemmi when installed).  With
        gemmi, files the fast path does not take are read by pymatgen (counted in
        :func:`reader_counts`).

    Returns
    -------
    Structure

    Raises
    ------
    Exception
        Whatever pymatgen raises for a file it cannot read.
    """
    if resolve_reader(reader) == "gemmi":
        try:
            structure = _fast_structure(text)
        except _Fallback as why:
            _counts["fallback:" + str(why)] += 1
        except Exception as exc:  # noqa: BLE001 - pymatgen then raises or reads it
            _counts[f"fallback:the fast reader failed ({type(exc).__name__})"] += 1
        else:
            _counts["gemmi"] += 1
            return structure
    _counts["pymatgen"] += 1
    return _pymatgen_from_str(text)


def read_cif_file(path: str | os.PathLike, reader: str | None = None) -> Any:
    """The pymatgen Structure of a CIF file, as ``Structure.from_file(path)``."""
    from pymatgen.core import Structure

    path = os.fspath(path)
    name = path.lower()
    if resolve_reader(reader) == "gemmi" and name.endswith(".cif"):
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            _counts["fallback:not UTF-8 text"] += 1
        else:
            return read_cif(text, "gemmi")
    _counts["pymatgen"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(path)
