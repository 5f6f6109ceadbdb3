"""Graph-building speed and memory on the 36,737-crystal Materials Project set (issue 2).

Measures, on already-parsed pymatgen Structures:

* skcgcnn's StructureGraphTransformer, one process and n_jobs=2 (atoms/s, the medians
  of --repeats alternating runs, and a check that both give the same graphs);
* pymatgen's ``Structure.get_neighbor_list(r=8)`` alone, for scale;
* the original CGCNN code path (``get_all_neighbors`` + sort + the 41-float Gaussian
  expansion per atom) on a subset;
* the memory of the graphs of all crystals (stored bytes and the process's peak RSS);
* CIF parsing with ``Structure.from_file``, separately.

Usage::

    python benchmarks/bench_graphs.py [--data ../shared/data/mp-formation-energy-36737]
                                      [--limit N] [--repeats 5] [--original-limit 300]
                                      [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def original_graph(structure, radius=8.0, max_num_nbr=12, dmin=0.0, step=0.2):
    """The per-crystal work of the original CGCNN's CIFData.__getitem__ (after parsing)."""
    atom_fea = np.vstack([np.zeros(92) for _ in range(len(structure))])  # table lookup
    all_nbrs = structure.get_all_neighbors(radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    nbr_fea_idx, nbr_fea = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            nbr_fea_idx.append([x[2] for x in nbr] + [0] * (max_num_nbr - len(nbr)))
            nbr_fea.append([x[1] for x in nbr] + [radius + 1.0] * (max_num_nbr - len(nbr)))
        else:
            nbr_fea_idx.append([x[2] for x in nbr[:max_num_nbr]])
            nbr_fea.append([x[1] for x in nbr[:max_num_nbr]])
    centers = np.arange(dmin, radius + step, step)
    expanded = np.exp(-((np.array(nbr_fea)[..., None] - centers) ** 2) / step ** 2)
    return atom_fea, expanded, np.array(nbr_fea_idx)


def time_parsing(data: Path, n: int) -> tuple[float, int]:
    from pymatgen.core import Structure

    with tarfile.open(data / "cifs.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".cif")][:n]
        texts = [tar.extractfile(m).read().decode() for m in members]
    start = time.perf_counter()
    atoms = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for text in texts:
            atoms += len(Structure.from_str(text, fmt="cif"))
    return time.perf_counter() - start, atoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N crystals only")
    parser.add_argument("--original-limit", type=int, default=300)
    parser.add_argument("--parse-limit", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each of n_jobs=1 and n_jobs=2")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from skcgcnn import StructureGraphTransformer
    from skcgcnn.datasets import load_cgcnn_folder

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    frame = load_cgcnn_folder(args.data, limit=args.limit, n_jobs=2)
    structures = list(frame["structure"])
    n_atoms = sum(len(s) for s in structures)
    print(f"loaded {len(structures)} structures ({n_atoms} atoms) in "
          f"{time.perf_counter() - t0:.1f} s (cached parse)", flush=True)
    results: dict = {"n_crystals": len(structures), "n_atoms": n_atoms}

    gc.collect()
    rss_before = rss_mb()
    start = time.perf_counter()
    graphs = StructureGraphTransformer(n_jobs=1).fit_transform(structures)
    ones = [time.perf_counter() - start]
    results["graph_bytes"] = graphs.nbytes
    results["graph_bytes_per_atom"] = graphs.nbytes / n_atoms
    results["rss_increase_mb"] = rss_mb() - rss_before
    results["peak_rss_mb"] = peak_rss_mb()
    print(f"graphs: {graphs.nbytes / 1e6:.1f} MB ({graphs.nbytes / n_atoms:.1f} B/atom); "
          f"RSS +{results['rss_increase_mb']:.0f} MB, peak RSS {results['peak_rss_mb']:.0f} MB "
          "(structures included)", flush=True)

    # the machine's noise is a few per cent: alternate the two, report the medians
    twos = []
    for run in range(args.repeats):
        if run:
            gc.collect()
            start = time.perf_counter()
            StructureGraphTransformer(n_jobs=1).fit_transform(structures)
            ones.append(time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        graphs2 = StructureGraphTransformer(n_jobs=2).fit_transform(structures)
        twos.append(time.perf_counter() - start)
        print(f"run {run + 1}: 1 process {ones[-1]:6.2f} s, n_jobs=2 {twos[-1]:6.2f} s "
              f"(x{ones[-1] / twos[-1]:.2f})", flush=True)
        if run == 0:
            same = all(np.array_equal(getattr(graphs, f), getattr(graphs2, f))
                       for f in ("atom_ptr", "numbers", "nbr_idx", "nbr_dist"))
            results["n_jobs_2_identical"] = same
            print(f"n_jobs=2 graphs identical to 1 process: {same}", flush=True)
        del graphs2
    del graphs
    gc.collect()
    one, two = float(np.median(ones)), float(np.median(twos))
    results["skcgcnn_1job_seconds"] = ones
    results["skcgcnn_2jobs_seconds"] = twos
    results["skcgcnn_1job_atoms_per_s"] = n_atoms / one
    results["skcgcnn_2jobs_atoms_per_s"] = n_atoms / two
    results["speedup_2jobs"] = one / two
    print(f"skcgcnn, 1 process : {one:7.2f} s  {n_atoms / one:9.0f} atoms/s  "
          f"(median of {len(ones)})", flush=True)
    print(f"skcgcnn, n_jobs=2  : {two:7.2f} s  {n_atoms / two:9.0f} atoms/s  "
          f"(x{one / two:.2f}, medians)", flush=True)

    start = time.perf_counter()
    for s in structures:
        s.get_neighbor_list(8.0)
    nl = time.perf_counter() - start
    results["pymatgen_neighbor_list_atoms_per_s"] = n_atoms / nl
    print(f"pymatgen get_neighbor_list(r=8) alone: {n_atoms / nl:9.0f} atoms/s "
          f"(skcgcnn is {nl / one:.2f} of it)", flush=True)

    sub = structures[:args.original_limit]
    sub_atoms = sum(len(s) for s in sub)
    start = time.perf_counter()
    for s in sub:
        original_graph(s)
    orig = time.perf_counter() - start
    results["original_atoms_per_s"] = sub_atoms / orig
    print(f"original CGCNN path ({len(sub)} crystals): {sub_atoms / orig:9.0f} atoms/s",
          flush=True)

    seconds, parsed_atoms = time_parsing(args.data, args.parse_limit)
    results["cif_parse_atoms_per_s"] = parsed_atoms / seconds
    print(f"CIF parsing, Structure.from_str ({args.parse_limit} CIFs): "
          f"{parsed_atoms / seconds:9.0f} atoms/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
