"""Structures in and out of a compact encoded form, and the parallel parser that makes it.

The parser workers return encoded entries (cheap to send between processes) and the cache
stores them; :func:`_decode` rebuilds the same :class:`~pymatgen.core.Structure`."""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm


# An encoded entry is one of
#   ("c", lattice (3, 3) float64, Z (n,) int16, oxidation (n,) float64 with NaN for
#    plain elements, frac_coords (n, 3) float64, labels list[str])
#   ("j", pymatgen JSON text)          structures the compact form cannot hold
#   ("e", reason)                      parse failures (cached too)

_COMPOSITIONS: dict[tuple[int, float | None], Any] = {}
_ELEMENT_COMPOSITIONS: dict[int, Any] = {}  # Z -> the Composition of the plain element


def _composition(z: int, oxi: float) -> Any:
    """A shared single-species Composition (pymatgen treats Compositions as immutable)."""
    key = (z, None if math.isnan(oxi) else oxi)
    comp = _COMPOSITIONS.get(key)
    if comp is None:
        from pymatgen.core import Composition, Element, Species

        element = Element.from_Z(z)
        specie = element if key[1] is None else Species(element.symbol, key[1])
        comp = _COMPOSITIONS[key] = Composition({specie: 1})
        if key[1] is None:
            _ELEMENT_COMPOSITIONS[z] = comp
    return comp


def _encode(structure: Any) -> tuple:
    from pymatgen.core import Element, Species

    compact = (
        structure.is_ordered
        and not structure.properties
        and getattr(structure, "_charge", None) is None
        and all(structure.lattice.pbc)
    )
    if compact:
        z, oxi = [], []
        for site in structure:
            specie = site.specie
            if site.properties:
                compact = False
                break
            if type(specie) is Element:
                oxi.append(math.nan)
            elif (
                type(specie) is Species
                and specie.oxi_state is not None
                and getattr(specie, "spin", None) is None
            ):
                oxi.append(float(specie.oxi_state))
            else:
                compact = False
                break
            z.append(specie.Z)
    if not compact:
        from monty.json import MontyEncoder

        return ("j", json.dumps(structure.as_dict(), cls=MontyEncoder))
    return (
        "c",
        np.array(structure.lattice.matrix, dtype=np.float64),
        np.array(z, dtype=np.int16),
        np.array(oxi, dtype=np.float64),
        np.array(structure.frac_coords, dtype=np.float64).reshape(-1, 3),
        [str(label) for label in structure.labels],
    )


def _decode(entry: tuple) -> Any:
    from pymatgen.core import Lattice, Structure

    from .._cif import new_structure

    tag = entry[0]
    if tag == "c":
        _, lattice, z, oxi, frac, labels = entry
        if np.isnan(oxi).all():  # elements only: one shared Composition per Z
            zs = z.tolist()
            for a in set(zs).difference(_ELEMENT_COMPOSITIONS):
                _composition(a, math.nan)
            species = [_ELEMENT_COMPOSITIONS[a] for a in zs]
        else:
            species = [_composition(a, b) for a, b in zip(z.tolist(), oxi.tolist())]
        # Structure(Lattice(lattice), species, frac, labels=labels) without its checks
        return new_structure(Lattice(lattice), species, np.asarray(frac, dtype=np.float64),
                             labels)
    if tag == "j":
        return Structure.from_dict(json.loads(entry[1]))
    raise ValueError(f"cannot decode a failed entry: {entry[1]}")


def _parse_payload(kind: str, payload: Any, cif_reader: str | None = None) -> Any:
    from pymatgen.core import Structure

    from .._cif import read_cif, read_cif_file

    if kind == "file":  # as Structure.from_file, CIFs by the fast reader where it can
        return read_cif_file(payload, cif_reader)
    if kind == "cif":  # as Structure.from_str(payload, fmt="cif")
        return read_cif(payload, cif_reader)
    if kind == "json":
        return Structure.from_dict(json.loads(payload))
    if kind == "dict":
        return Structure.from_dict(payload)
    raise ValueError(f"unknown payload kind {kind!r}")


_KIND_NAMES = {
    "file": "CIF file",
    "cif": "CIF text",
    "json": "structure JSON",
    "dict": "structure dict",
}


def _parse_batch(batch: list[tuple[str, Any]], cif_reader: str | None = None
                 ) -> tuple[list[tuple], dict]:
    """Parse ``(kind, payload)`` items into encoded entries (runs in worker processes);
    also the batch's CIF reader counts (:func:`skcgcnn._cif.reader_counts`)."""
    from .. import _cif

    out = []
    before = _cif.reader_counts()
    with warnings.catch_warnings():
        # pymatgen reports harmless CIF clean-ups ("fractional coordinates rounded ...").
        warnings.simplefilter("ignore")
        for kind, payload in batch:
            try:
                structure = _parse_payload(kind, payload, cif_reader)
                if len(structure) == 0:
                    raise ValueError("the structure has no sites")
                out.append(_encode(structure))
            except Exception as exc:  # noqa: BLE001 - any parser failure is reported per entry
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                out.append(("e", f"unreadable {_KIND_NAMES.get(kind, kind)}: {message[:300]}"))
    return out, _cif.counts_since(before)


def _parse_all(
    items: list[tuple[str, Any]], n_jobs: int | None, verbose: int, desc: str,
    cif_reader: str | None = None,
) -> list[tuple]:
    """Parse items in ``n_jobs`` processes (joblib), in order, with a progress bar; one
    log line says which CIF reader read how many (:func:`skcgcnn._cif.log_reader_counts`)."""
    if not items:
        return []
    from joblib import Parallel, delayed, effective_n_jobs

    from .. import _cif

    cif_reader = _cif.resolve_reader(cif_reader)  # here, so that a bad value fails once
    workers = effective_n_jobs(n_jobs)
    size = max(1, min(256, math.ceil(len(items) / (4 * workers))))
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    bar = tqdm(total=len(items), desc=desc, unit="structure", disable=verbose < 1)
    results: list[tuple] = []
    counts: dict = {}
    try:
        if workers == 1:
            chunks: Iterable[tuple[list[tuple], dict]] = (
                _parse_batch(batch, cif_reader) for batch in batches)
        else:
            chunks = Parallel(n_jobs=workers, return_as="generator")(
                delayed(_parse_batch)(batch, cif_reader) for batch in batches
            )
        for chunk, chunk_counts in chunks:
            results.extend(chunk)
            counts = _cif.add_counts(counts, chunk_counts)
            bar.update(len(chunk))
    finally:
        bar.close()
    if workers > 1:  # the workers' counts, into this process's
        _cif.add_reader_counts(counts)
    _cif.log_reader_counts(counts, "CIFs")
    return results


@dataclass
class _Entry:
    ident: str
    kind: str  # file | cif | json | dict | structure
    payload: Any
    stamp: tuple[int, int] = (0, 0)


def _structure_entry(ident: str, value: Any) -> _Entry | None:
    from pymatgen.core import Structure

    if isinstance(value, Structure):
        return _Entry(ident, "structure", value)
    if isinstance(value, Mapping):
        return _Entry(ident, "dict", dict(value))
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return _Entry(ident, "json" if text.startswith("{") else "cif", value)
    return None
