"""The headline runs of issue 26 on the whole MP formation-energy set, and their summary.

Two long jobs, each a ``skcgcnn train`` run that checkpoints every epoch (killed, it goes on
with ``skcgcnn train --resume DIR``, across sessions if need be):

- ``seed``: the tutorial's 1000-epoch job, as the CGCNN tutorial this project follows runs
  it (SGD lr 0.02, momentum 0.9, MSE, batch 256, LR x0.1 at epoch 800, h_fea_len 32,
  n_conv 4, a seeded 6:2:2 split): 3 h 46 min on a Tesla P100 there.
- ``modern``: the package's default recipe for ``--epochs`` epochs on bench_recipe.py's
  fixed 60/20/20 split (``make_pretrained.py split``), one run per seed; the members of
  the 5-member ensemble are the runs with seeds 0-4 (the mean of their predictions is what
  :class:`~skcgcnn.CGCNNEnsembleRegressor` predicts with those seeds).

``report`` reads the runs' directories: epochs reached, validation and test metrics, the
CPU time (from ``cpu-<name>.txt`` files of ``/proc/PID/stat`` samples, when a sampler
wrote them, else the epochs' wall time), the projection to the final epoch, and the
ensemble's test metrics over the finished members.

Usage::

    python benchmarks/bench_headline.py seed --output-dir runs/seed-1000
    python benchmarks/bench_headline.py modern --seed 1 --output-dir runs/modern-300-s1
    python benchmarks/bench_headline.py report runs/seed-1000 runs/modern-300*
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"

#: The tutorial's job: its command line of main.py, in skcgcnn train's words.
SEED_JOB = ["--recipe", "original", "--epochs", "1000", "--lr", "0.02",
            "--lr-milestones", "800", "--h-fea-len", "32", "--n-conv", "4",
            "--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2"]


def _run(args, options: list[str]) -> None:
    command = [sys.executable, "-m", "skcgcnn", "train", str(DATA), *options,
               "--device", "cpu", "--n-jobs", str(args.n_jobs),
               "--output-dir", args.output_dir]
    if Path(args.output_dir, "training_state.pt").exists():
        command = [sys.executable, "-m", "skcgcnn", "train", "--resume", args.output_dir]
    print(shlex.join(command), flush=True)
    sys.exit(subprocess.call(command))


def seed(args) -> None:
    _run(args, SEED_JOB)


def modern(args) -> None:
    _run(args, ["--split", args.split, "--epochs", str(args.epochs),
                "--random-state", str(args.seed)])


def _history(run: Path) -> list[dict]:
    """The epochs done: history.json at the end, else the training state's history."""
    if (run / "history.json").exists():
        return json.loads((run / "history.json").read_text())
    from skcgcnn.estimators import read_training_state

    state = read_training_state(run / "training_state.pt")
    return list(state["history"])


def _cpu_seconds(run: Path) -> float | None:
    samples = run.parent / f"cpu-{run.name}.txt"
    if not samples.exists():
        return None
    total, last = 0.0, 0
    for line in samples.read_text().split("\n"):
        parts = line.split()
        if len(parts) != 3:
            continue
        ticks = int(parts[1]) + int(parts[2])
        # user + system ticks since the process started; a resumed run's new process
        # starts again from 0
        total += ticks - last if ticks >= last else ticks
        last = ticks
    return total / 100.0  # clock ticks (CLK_TCK 100)


def report(args) -> None:
    rows = []
    for run in map(Path, args.runs):
        options = json.loads((run / "train_options.json").read_text())["options"]
        history = _history(run)
        done, planned = len(history), int(options["epochs"])
        wall = float(sum(h.get("dur", 0.0) for h in history))
        row = {"run": run.name, "epochs": f"{done}/{planned}", "wall_h": wall / 3600}
        cpu = _cpu_seconds(run)
        row["cpu_h"] = None if cpu is None else cpu / 3600
        if cpu is not None and done:  # what the whole job costs in CPU at this rate
            row["cpu_s_per_epoch"] = cpu / done
            row["projected_cpu_h"] = cpu / done * planned / 3600
        recent = [h["dur"] for h in history[-20:]]
        row["s_per_epoch_recent"] = float(np.median(recent)) if recent else None
        if done < planned and recent:
            row["projected_h"] = (wall + (planned - done) * np.median(recent)) / 3600
        scores = [h["valid_mae"] for h in history if "valid_mae" in h]
        row["best_valid_mae"] = min(scores) if scores else None
        if (run / "metrics.json").exists():
            test = json.loads((run / "metrics.json").read_text())["test"]
            row.update({f"test_{k}": v for k, v in test.items()})
        rows.append(row)
        print(json.dumps(row))
    # the ensemble: the finished runs of the first one's job that differ only in seed
    def job(run: Path) -> dict:
        options = json.loads((run / "train_options.json").read_text())["options"]
        return {k: v for k, v in options.items() if k not in ("seed", "output_dir",
                                                                "n_jobs", "device")}

    finished = [Path(r) for r in args.runs if Path(r, "test_results.csv").exists()]
    groups: list[list[Path]] = []  # the finished runs of one job, in the order given
    for run in finished:
        group = next((g for g in groups if job(g[0]) == job(run)), None)
        if group is None:
            groups.append([run])
        else:
            group.append(run)
    for members in (g for g in groups if len(g) > 1):
        import pandas as pd

        tables = [pd.read_csv(run / "test_results.csv", header=None,
                              names=["id", "y", "pred"]).set_index("id") for run in members]
        y = tables[0]["y"]
        mean = sum(t["pred"] for t in tables) / len(tables)
        mae = float(np.mean(np.abs(mean - y)))
        print(json.dumps({"ensemble_members": len(tables),
                          "runs": [run.name for run in members],
                          "ensemble_test_mae": mae,
                          "member_test_mae": [float(np.mean(np.abs(t["pred"] - y)))
                                              for t in tables]}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("seed", seed), ("modern", modern)):
        p = sub.add_parser(name)
        p.add_argument("--output-dir", required=True)
        p.add_argument("--n-jobs", type=int, default=1)
        if name == "modern":
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--epochs", type=int, default=300)
            p.add_argument("--split", default="runs/split_bench_recipe.csv")
        p.set_defaults(func=func)
    p = sub.add_parser("report")
    p.add_argument("runs", nargs="+")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
