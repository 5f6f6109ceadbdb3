"""The dask engine against one process (issue 29): ``predict_iter(..., client=)`` on a
LocalCluster of ``--workers`` single-threaded worker processes, then the same inputs in
this process, one thread; the rows are compared and the wall and CPU times printed.

The inputs are the CIF paths of sample-500 (500 Materials Project crystals, read in place
from ../shared/data, parsed in the workers) repeated until there are ``--n``, each copy
with its own id, predicted with an original CGCNN checkpoint
``--chunk-size`` at a time.  The cluster's start (worker processes importing torch and
skcgcnn) and a warm-up of one small chunk per worker are timed apart from the run.

Usage::

    nice -n 5 python benchmarks/bench_dask.py [--n 2000] [--chunk-size 250] [--workers 2]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
SAMPLE500 = DATA / "mp-formation-energy-36737" / "sample-500"
CHECKPOINT = DATA / "cgcnn-reference" / "pre-trained" / "formation-energy-per-atom.pth.tar"


def _cpu_of_workers(client) -> float:
    """CPU seconds (user + system) the cluster's worker processes have used so far."""
    return sum(client.run(lambda: sum(os.times()[:2])).values())


def _rows(chunks) -> list[tuple]:
    return [(i, float(v)) for c in chunks for i, v in zip(c.ids, c.values)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="crystals to predict")
    parser.add_argument("--chunk-size", type=int, default=250)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=CHECKPOINT)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from skcgcnn.estimators import load_model
    from skcgcnn.streaming import predict_iter

    torch.set_num_threads(1)
    cifs = sorted(str(p) for p in SAMPLE500.glob("*.cif"))
    paths = [cifs[k % len(cifs)] for k in range(args.n)]
    ids = [f"{Path(p).stem}-{k // len(cifs)}" for k, p in enumerate(paths)]
    model = load_model(args.model)
    result = {"n": len(ids), "chunk_size": args.chunk_size, "workers": args.workers}

    began = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("skcgcnn.streaming"))  # the workers' imports
        result["cluster_start_s"] = time.perf_counter() - began
        began = time.perf_counter()  # the workers' first chunks: imports, first forward
        list(predict_iter(model, paths[:4 * args.workers], chunk_size=4, client=client))
        result["warm_up_s"] = time.perf_counter() - began
        cpu0, began = _cpu_of_workers(client), time.perf_counter()
        there = _rows(predict_iter(model, paths, ids=ids, chunk_size=args.chunk_size,
                                   client=client))
        result["dask_wall_s"] = time.perf_counter() - began
        result["dask_worker_cpu_s"] = _cpu_of_workers(client) - cpu0
    cpu0, began = sum(os.times()[:2]), time.perf_counter()
    here = _rows(predict_iter(model, paths, ids=ids, chunk_size=args.chunk_size, n_jobs=1))
    result["one_wall_s"] = time.perf_counter() - began
    result["one_cpu_s"] = sum(os.times()[:2]) - cpu0
    result["same_rows"] = there == here
    result["load_average"] = os.getloadavg()[0]
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"crystals/s: dask {len(ids) / result['dask_wall_s']:.0f} "
          f"({args.workers} workers), one process {len(ids) / result['one_wall_s']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["same_rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
