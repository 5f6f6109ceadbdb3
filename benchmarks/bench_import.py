"""Time ``from skcgcnn import CGCNNRegressor, StructureGraphTransformer`` in fresh processes.

Runs the import line ``--repeat`` times, each in a new interpreter (warm: the files are in
the page cache after the first run, which is not counted), and prints the median and the
fastest wall time.  The same is measured for the floor, the packages that the two classes
cannot do without (``import torch, sklearn.base, skorch``): what skcgcnn adds is the
difference.  Then one ``python -X importtime`` run of the line gives the ``--top``
top-level packages by the time their modules took, and the ``--top`` modules by their own
time.

Usage::

    python benchmarks/bench_import.py                  # 7 runs each
    python benchmarks/bench_import.py --repeat 15 --top 20
    python benchmarks/bench_import.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = "from skcgcnn import CGCNNRegressor, StructureGraphTransformer"
FLOOR = "import torch, sklearn.base, skorch"


def wall_times(statement: str, repeat: int) -> list[float]:
    """Seconds of ``repeat`` fresh ``python -c statement`` runs, after one untimed run."""
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=REPO, check=True)
        if i:
            times.append(time.perf_counter() - start)
    return times


def import_times(statement: str) -> list[tuple[str, int, int]]:
    """(module, own microseconds, cumulative microseconds) of ``-X importtime``, in the
    order Python reports them; the module keeps its indentation (its depth)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], cwd=REPO,
                          check=True, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|")
        rows.append((name.rstrip(), int(own), int(cumulative)))
    return rows


def top_packages(rows: list[tuple[str, int, int]], top: int) -> list[tuple[str, float]]:
    """Seconds per top-level package (own times summed over its modules), largest first."""
    totals: dict[str, int] = {}
    for name, own, _ in rows:
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0) + own
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [(package, us / 1e6) for package, us in ranked]


def top_modules(rows: list[tuple[str, int, int]], top: int) -> list[tuple[str, float, float]]:
    """The ``top`` modules by their own time: (name, own s, cumulative s)."""
    ranked = sorted(rows, key=lambda row: -row[1])[:top]
    return [(name.strip(), own / 1e6, cumulative / 1e6) for name, own, cumulative in ranked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per statement")
    parser.add_argument("--top", type=int, default=15, help="import-time entries to show")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    result = {"python": sys.version.split()[0], "repeat": args.repeat}
    for label, statement in (("skcgcnn", LINE), ("floor", FLOOR)):
        times = wall_times(statement, args.repeat)
        result[label] = {"statement": statement, "median_s": statistics.median(times),
                         "min_s": min(times), "times_s": times}
        print(f"{statement}\n    median {statistics.median(times):.2f} s, "
              f"fastest {min(times):.2f} s over {args.repeat} fresh processes")
    print(f"skcgcnn's own share (median minus floor): "
          f"{result['skcgcnn']['median_s'] - result['floor']['median_s']:+.2f} s")

    rows = import_times(LINE)
    packages = top_packages(rows, args.top)
    print(f"\n-X importtime of the line, own time per top-level package (top {args.top}):")
    for package, seconds in packages:
        print(f"    {seconds:6.3f} s  {package}")
    print(f"\n-X importtime, modules by their own time (top {args.top}):")
    for name, own, cumulative in top_modules(rows, args.top):
        print(f"    {own:6.3f} s  (with what it imports {cumulative:.3f} s)  {name}")
    result["packages_s"] = dict(packages)

    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
