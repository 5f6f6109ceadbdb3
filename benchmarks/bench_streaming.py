"""Peak memory of streaming prediction on many crystals (issue 16).

The inputs are the CIF paths of ``sample-500`` (500 Materials Project crystals, read in
place from ../shared/data) repeated until there are ``--n`` of them, each copy with its
own id, so no file is copied.  They are predicted with an original CGCNN checkpoint by
:func:`skcgcnn.streaming.predict_iter`, ``--chunk-size`` at a time, the rows written to
``--output`` (default: a temporary file) as they come.  The script prints the resident
memory after every 10th chunk and at the end (this process and its graph workers).

``--all-at-once`` predicts the same inputs the way ``skcgcnn predict`` did before: every
graph built, then one ``predict`` call (use a smaller ``--n``).

Usage::

    nice -n 19 python benchmarks/bench_streaming.py --n 100000 [--chunk-size 2000]
        [--n-jobs 1] [--model CHECKPOINT] [--output rows.csv] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
SAMPLE500 = DATA / "mp-formation-energy-36737" / "sample-500"
CHECKPOINT = DATA / "cgcnn-reference" / "pre-trained" / "formation-energy-per-atom.pth.tar"


def rss_mb() -> float:
    """Resident memory of this process now, in MB (from /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3
    return own, children


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="crystals to predict")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=CHECKPOINT)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--all-at-once", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from skcgcnn.cli._data import write_result_rows
    from skcgcnn.estimators import load_model
    from skcgcnn.streaming import predict_iter

    torch.set_num_threads(args.threads)
    cifs = sorted(str(p) for p in SAMPLE500.glob("*.cif"))
    model = load_model(args.model)
    start_rss = rss_mb()
    print(f"{args.n} inputs from {len(cifs)} CIFs of {SAMPLE500}, chunk {args.chunk_size}, "
          f"n_jobs {args.n_jobs}, load average {os.getloadavg()}; RSS after loading the "
          f"model {start_rss:.0f} MB", flush=True)

    def inputs():  # lazily: the n paths are never held in one list
        return itertools.islice(itertools.cycle(cifs), args.n)

    def ids():
        return (f"{Path(cifs[k % len(cifs)]).stem}-{k // len(cifs)}" for k in range(args.n))

    output = args.output or Path(tempfile.mkstemp(suffix=".csv")[1])
    started = time.perf_counter()
    samples = []
    n_rows = 0
    if args.all_at_once:
        transformer, est = model.steps[0][1], model.steps[-1][1]
        transformer.set_params(n_jobs=args.n_jobs)
        graphs = transformer.transform(list(inputs()))
        pred = est.predict(graphs)
        with open(output, "w", newline="") as handle:
            write_result_rows(handle, list(ids()), [float("nan")] * len(pred), pred)
        n_rows = len(pred)
        samples.append((n_rows, rss_mb()))
    else:
        with open(output, "w", newline="") as handle:
            for k, chunk in enumerate(predict_iter(model, inputs(), ids=ids(),
                                                   chunk_size=args.chunk_size,
                                                   n_jobs=args.n_jobs)):
                write_result_rows(handle, chunk.ids, [float("nan")] * len(chunk.ids),
                                  chunk.values)
                handle.flush()
                n_rows += len(chunk.ids)
                if k % 10 == 0:
                    samples.append((n_rows, rss_mb()))
                    print(f"  {n_rows:7d} crystals, {time.perf_counter() - started:6.0f} s, "
                          f"RSS {samples[-1][1]:.0f} MB", flush=True)
    seconds = time.perf_counter() - started
    own, children = peak_mb()
    print(f"{n_rows} crystals in {seconds:.0f} s ({n_rows / seconds:.0f} per s); peak RSS "
          f"{own:.0f} MB (largest graph worker {children:.0f} MB); rows in {output}",
          flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "n": n_rows, "chunk_size": args.chunk_size, "n_jobs": args.n_jobs,
            "all_at_once": args.all_at_once, "seconds": seconds, "peak_rss_mb": own,
            "peak_child_rss_mb": children, "rss_samples": samples,
            "load_average": os.getloadavg()}, indent=2))
    if args.output is None:
        output.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
