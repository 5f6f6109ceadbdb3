"""ONNX export: onnxruntime against torch, crystals/s on one thread (issue 29, item 5).

On the 500 crystals of sample-500 (parsed once, in memory), with the shipped
``mp-formation-energy`` model exported by :func:`skcgcnn.export.export_onnx`:

* forward: torch (``CGCNNRegressor.predict`` on built graphs: batching and the network)
  against onnxruntime (:meth:`OnnxPredictor.predict_graphs`: batching, the distinct
  distances and the session; and the session alone on batches made beforehand);
* end to end: ``Pipeline.predict`` against :meth:`OnnxPredictor.predict` on the
  structures (graph building included, one process);
* the largest difference between the two predictions.

Both run on one thread (``torch.set_num_threads(1)``, onnxruntime's
``intra_op_num_threads=1``) with the same batch size; the figures are the medians of
``--repeats`` alternating runs.

Usage::

    python benchmarks/bench_onnx.py [--data ../shared/data/mp-formation-energy-36737/sample-500]
                                    [--repeats 5] [--batch-size 256] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737" / "sample-500"


def load(folder: Path):
    """The structures of a CGCNN folder, as a Series indexed by id."""
    import csv

    import pandas as pd
    from pymatgen.core import Structure

    with open(folder / "id_prop.csv", newline="") as fh:
        ids = [row[0].strip() for row in csv.reader(fh) if row]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_file(str(folder / f"{i}.cif")) for i in ids]
    return pd.Series(structures, index=ids, dtype=object)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "id_prop.csv").is_file():
        print(f"no data at {args.data}", file=sys.stderr)
        return 1

    import onnxruntime
    import torch

    import skcgcnn
    from skcgcnn.export import OnnxPredictor, export_onnx

    torch.set_num_threads(1)
    X = load(args.data)
    model = skcgcnn.load_pretrained("mp-formation-energy")
    transformer, est = model.steps[0][1], model.steps[-1][1]
    transformer.set_params(n_jobs=None, verbose=0)
    est.set_params(batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mp-formation-energy.onnx"
        export_s, _ = timed(lambda: export_onnx(model, path))
        size_kib = path.stat().st_size / 1024
        predictor = OnnxPredictor(path, batch_size=args.batch_size, n_threads=1)
        graphs = transformer.transform(X)
        feeds = list(predictor.batches(graphs))
        runs: dict[str, list[float]] = {k: [] for k in (
            "torch forward", "onnxruntime forward", "onnxruntime session only",
            "torch end to end", "onnxruntime end to end")}
        for _ in range(args.repeats):
            t, y_torch = timed(lambda: est.predict(graphs))
            runs["torch forward"].append(t)
            t, y_onnx = timed(lambda: predictor.predict_graphs(graphs).ravel())
            runs["onnxruntime forward"].append(t)
            t, _ = timed(lambda: [predictor.session_.run(None, f) for f in feeds])
            runs["onnxruntime session only"].append(t)
            t, e_torch = timed(lambda: model.predict(X))
            runs["torch end to end"].append(t)
            t, e_onnx = timed(lambda: predictor.predict(X))
            runs["onnxruntime end to end"].append(t)
    n = len(X)
    result = {
        "data": str(args.data), "crystals": n, "atoms": int(graphs.atom_ptr[-1]),
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": 1,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "export_s": round(export_s, 2), "onnx_file_kib": round(size_kib, 1),
        "max_abs_diff_forward": float(np.abs(y_onnx - y_torch).max()),
        "max_abs_diff_end_to_end": float(np.abs(e_onnx - e_torch).max()),
        "median_s": {k: float(np.median(v)) for k, v in runs.items()},
    }
    result["crystals_per_s"] = {k: round(n / v, 1) for k, v in result["median_s"].items()}
    print(f"sample-500: {n} crystals, {result['atoms']} atoms; batch {args.batch_size}, "
          f"1 thread, median of {args.repeats}; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")
    print(f"export_onnx: {export_s:.1f} s, {size_kib:.0f} KiB")
    print(f"{'':28s} {'s':>8s} {'crystals/s':>11s}")
    for key, seconds in result["median_s"].items():
        print(f"{key:28s} {seconds:8.3f} {n / seconds:11.0f}")
    print(f"max |onnxruntime - torch|: forward {result['max_abs_diff_forward']:.2e}, "
          f"end to end {result['max_abs_diff_end_to_end']:.2e} eV/atom")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
