"""A newcomer's script, timed with and without ``set_cpu_performance_defaults()`` (issue 25).

The script (``SCRIPT`` below, run in a fresh ``python`` process each time, nothing
set in its environment) is what the README suggests: the Pipeline of
``StructureGraphTransformer`` and the default ``CGCNNRegressor`` fitted on 400
crystals of sample-500 and scored on the other 100.  It runs plain, and with
``skcgcnn.set_cpu_performance_defaults()`` as its first line (what made it fast
before issue 25), on a quiet machine and beside ``--competitors`` CPU-bound processes;
``--repeats`` rounds, interleaved.  Printed: wall seconds (median) and the test MAE of
each, which must be the same with and without the call.

Usage::

    python benchmarks/bench_newcomer.py [--data DIR] [--repeats 2] [--competitors 1]
                                        [--conditions quiet,loaded] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737" / "sample-500"
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"
SCRIPT = """
{first_line}
import time
start = time.perf_counter()
from sklearn.metrics import mean_absolute_error
from sklearn.pipeline import Pipeline
from skcgcnn import CGCNNRegressor, StructureGraphTransformer
from skcgcnn.datasets import load_cgcnn_folder

data = load_cgcnn_folder({folder!r})
structures, y = data["structure"], data["target"].to_numpy()
pipe = Pipeline([("graph", StructureGraphTransformer()),
                 ("cgcnn", CGCNNRegressor(random_state=0, verbose=0))])
pipe.fit(structures[:400], y[:400])
mae = mean_absolute_error(y[400:], pipe.predict(structures[400:]))
print("RESULT", time.perf_counter() - start, mae)
"""
VARIANTS = {"plain": "", "with the call": "import skcgcnn; skcgcnn.set_cpu_performance_defaults()"}


def run_once(folder: Path, first_line: str) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SKCGCNN_NO_MALLOPT")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(first_line=first_line,
                                                                folder=str(folder))],
                          capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT")][-1]
    return wall, float(line.split()[2])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--competitors", type=int, default=1)
    parser.add_argument("--conditions", default="quiet,loaded")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict = {}
    for condition in args.conditions.split(","):
        n = args.competitors if condition == "loaded" else 0
        competitors = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
        try:
            runs: dict = {name: [] for name in VARIANTS}
            for _ in range(args.repeats):
                for name, first_line in VARIANTS.items():
                    runs[name].append(run_once(args.data, first_line))
        finally:
            for p in competitors:
                p.kill()
                p.wait()
        results[condition] = {}
        for name, values in runs.items():
            wall = statistics.median(v[0] for v in values)
            maes = sorted({round(v[1], 6) for v in values})
            results[condition][name] = {"wall_s": wall, "mae": maes,
                                        "walls": [v[0] for v in values]}
            print(f"{condition:6s} ({n} competing): {name:13s} {wall:6.1f} s "
                  f"(runs {', '.join(f'{v[0]:.1f}' for v in values)}), test MAE {maes}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
