"""The whole training job's CPU time, one thread: parse -> graphs -> 200 epochs (issue 16).

``skcgcnn train DIR --recipe original --epochs 200`` (the 2018 ``main.py`` recipe, its
80/10/10 split) on a seeded subset of ``mp-formation-energy-36737`` written as a CGCNN
folder, with one torch thread, one parsing process and no graph cache, so that the CIF
parsing, the graph building, the 200 epochs with their validation passes and the test
predictions are all timed.  Each source tree given with ``--tree`` (a checkout of
skcgcnn: the current one by default, an older commit's worktree to compare) runs in its
own child process; the child's user + system CPU time and the test MAE from its
``metrics.json`` are printed, and the ratio of each tree's time to the first one's.

Usage::

    python benchmarks/bench_whole_job.py [--size 2000] [--epochs 200]
                                         [--tree OLD_CHECKOUT --tree .] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"


def write_subset(data: Path, size: int, folder: Path, seed: int = 0) -> Path:
    """``size`` seeded crystals of the MP set as a CGCNN folder (id_prop.csv, CIFs)."""
    if (folder / "id_prop.csv").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rows = (data / "id_prop.csv").read_text().splitlines()
    picked = sorted(np.random.default_rng(seed).choice(len(rows), size, replace=False))
    wanted = {}
    for i in picked:
        wanted[f"cifs/{rows[i].split(',')[0]}.cif"] = rows[i]
    with tarfile.open(data / "cifs.tar.gz") as tar:
        for member in tar:
            if member.name in wanted:
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    (folder / "atom_init.json").write_bytes((data / "atom_init.json").read_bytes())
    (folder / "id_prop.csv").write_text("\n".join(wanted.values()) + "\n")
    return folder


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(tree: Path, folder: Path, out: Path, epochs: int) -> dict:
    """One ``skcgcnn train`` of ``tree``'s code in a child process, one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(tree))
    command = [sys.executable, "-m", "skcgcnn", "train", str(folder), "--recipe", "original",
               "--epochs", str(epochs), "--n-jobs", "1", "--no-cache", "--device", "cpu",
               "-q", "--output-dir", str(out)]
    before, start = child_cpu_seconds(), time.perf_counter()
    subprocess.run(command, env=env, cwd=tree, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"tree": str(tree), "cpu_s": child_cpu_seconds() - before,
            "wall_s": time.perf_counter() - start,
            "test_mae": round(metrics["test"]["mae"], 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--tree", type=Path, action="append",
                        help="an skcgcnn checkout to time (repeatable; default: this one)")
    parser.add_argument("--work-dir", type=Path,
                        default=HERE.parent / "results" / "bench_whole_job")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [HERE.parent])]
    folder = write_subset(args.data, args.size, args.work_dir / f"mp-{args.size}")
    print(f"{args.size} MP crystals in {folder}; {args.epochs} epochs, original recipe, "
          "1 thread", flush=True)
    results = []
    for i, tree in enumerate(trees):
        result = run_job(tree, folder, args.work_dir / f"run-{i}", args.epochs)
        results.append(result)
        ratio = result["cpu_s"] / results[0]["cpu_s"]
        print(f"{tree}: CPU {result['cpu_s']:.1f} s (wall {result['wall_s']:.1f} s), "
              f"test MAE {result['test_mae']}, {ratio:.2f}x the first tree's CPU time",
              flush=True)
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
