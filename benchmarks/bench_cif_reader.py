"""The fast CIF reader (gemmi) against pymatgen's ``Structure.from_str(text, fmt="cif")``.

Reads the CIFs of ``cifs.tar.gz`` (mp-formation-energy-36737, read from the archive, not
extracted) as text, then for each of the first ``--n`` (default 2000; ``--n 0``: all):

1. parses it with pymatgen and with :func:`skcgcnn._cif.read_cif` (gemmi), timing both
   in CPU seconds (``time.process_time``: on a shared machine, wall time measures the
   neighbours) and wall seconds, the same files in the same process, ``--block`` files
   by one reader, then the same by the other (interleaved file by file, each reader
   would pay for the other's garbage);
2. checks that the two structures are equal: the lattice matrix, the fractional
   coordinates (the largest difference is printed; equal to the bit is 0), the species
   and the labels site by site (so the order too), and ``as_dict()``;
3. counts the files the fast reader left to pymatgen, by reason.

Usage::

    nice -n 10 python benchmarks/bench_cif_reader.py            # 2,000 CIFs
    nice -n 10 python benchmarks/bench_cif_reader.py --n 0 --json out.json   # all 36,737
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import time
import warnings
from pathlib import Path

DEFAULT_ARCHIVE = (Path(__file__).resolve().parents[1].parent / "shared" / "data"
                   / "mp-formation-energy-36737" / "cifs.tar.gz")


def read_texts(archive: Path, n: int) -> list[tuple[str, str]]:
    out = []
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".cif"):
                out.append((Path(member.name).stem,
                            tar.extractfile(member).read().decode("utf-8", "replace")))
                if n and len(out) == n:
                    break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--n", type=int, default=2000, help="CIFs to read (0: all)")
    parser.add_argument("--block", type=int, default=1000,
                        help="CIFs read by one reader, then the other (default: 1000)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import gemmi
    import numpy as np
    import pymatgen.core
    from pymatgen.core import Structure

    from skcgcnn import _cif

    texts = read_texts(args.archive, args.n)
    _cif.read_cif(texts[0][1], "gemmi")  # imports and tables, outside the timing
    _cif.reset_reader_counts()
    clock = {"pymatgen": [0.0, 0.0], "gemmi": [0.0, 0.0]}  # CPU s, wall s
    readers = {"pymatgen": lambda text: Structure.from_str(text, fmt="cif"),
               "gemmi": lambda text: _cif.read_cif(text, "gemmi")}
    different, max_diff, atoms = [], 0.0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(texts), args.block):
            block = texts[start:start + args.block]
            parsed = {}
            for name, read in readers.items():  # each reader over the block, in turn
                out = []
                c, w = time.process_time(), time.perf_counter()
                for _, text in block:
                    try:
                        out.append(read(text))
                    except Exception as exc:  # noqa: BLE001 - both must refuse it alike
                        out.append(exc)
                clock[name][0] += time.process_time() - c
                clock[name][1] += time.perf_counter() - w
                parsed[name] = out
            for (ident, _), want, got in zip(block, parsed["pymatgen"], parsed["gemmi"]):
                if isinstance(want, Exception) or isinstance(got, Exception):
                    if type(want) is not type(got) or str(want) != str(got):
                        different.append(ident)
                    continue
                atoms += len(want)
                same = (got.lattice.matrix.shape == want.lattice.matrix.shape
                        and len(got) == len(want)
                        and [s.species for s in got] == [s.species for s in want]
                        and got.labels == want.labels and got.as_dict() == want.as_dict())
                if not same:
                    different.append(ident)
                    continue
                max_diff = max(max_diff,
                               float(np.abs(got.lattice.matrix - want.lattice.matrix).max()),
                               float(np.abs(got.frac_coords - want.frac_coords).max()))
    counts = _cif.reader_counts()
    result = {
        "cifs": len(texts), "atoms": atoms, "different": len(different),
        "different_ids": different[:20], "max_abs_difference": max_diff,
        "cpu_seconds": {k: round(v[0], 2) for k, v in clock.items()},
        "wall_seconds": {k: round(v[1], 2) for k, v in clock.items()},
        "speed_ratio_cpu": round(clock["pymatgen"][0] / clock["gemmi"][0], 1),
        "speed_ratio_wall": round(clock["pymatgen"][1] / clock["gemmi"][1], 1),
        "reader_counts": counts, "gemmi": gemmi.__version__,
        "pymatgen": getattr(pymatgen.core, "__version__", "?"),
        "python": platform.python_version(),
    }
    print(f"{len(texts)} CIFs ({atoms} atoms): pymatgen {clock['pymatgen'][0]:.1f} s CPU "
          f"({atoms / clock['pymatgen'][0]:.0f} atoms/s), fast reader "
          f"{clock['gemmi'][0]:.1f} s CPU ({atoms / clock['gemmi'][0]:.0f} atoms/s): "
          f"{result['speed_ratio_cpu']}x (wall: {result['speed_ratio_wall']}x); "
          f"{len(different)} structures differ, largest coordinate difference {max_diff:g}; "
          f"{counts['gemmi']} read by gemmi, {counts['pymatgen']} left to pymatgen "
          f"{counts['fallbacks']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
