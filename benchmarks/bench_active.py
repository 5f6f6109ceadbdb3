"""Active learning on MP formation energy: uncertainty sampling against random picking
(issue 28 item 6).

The rows are those of bench_recipe's fixed split of ``mp-formation-energy-36737`` (the
split the shipped pretrained model was made on, ``pretrained_split``; ``--split FILE``
for another ``id,split`` CSV):

- a capped training subset: the first ``--subset`` rows of bench_recipe's seeded
  permutation of the split's train rows (its nested training subsets);
- the labelled start: the first ``--start`` of them; the pool: the rest of the subset;
- test rows: a seeded subset of ``--n-test`` of the split's test rows (bench_finetune's
  rule), the same for every strategy and round.

Every strategy of ``--strategies`` starts from the same labelled rows; then each round
a ``CGCNNEnsembleRegressor`` of ``--members`` networks (``--epochs`` each, the default
recipe otherwise, ``random_state=--seed``) is fitted on the labelled rows and scored on
the test rows, and :func:`skcgcnn.active.suggest` moves ``--step`` crystals of the pool
(their labels) into the labelled rows, for ``--rounds`` rounds.  Every strategy spends
the same budget and fits the same model; only the picks differ.  The round-0 fit is
shared (the same rows and seed give the same model).  ``ucb`` ranks by the lower bound
``mean - kappa * std`` (``maximize=False``: the low formation energies), a search rather
than a model of the whole space, shown for what it does to the test error.

The results are written to ``--json`` after every fit, so a killed run keeps its rounds.

Usage::

    python benchmarks/bench_active.py [--members 3] [--epochs 20] [--rounds 6] \\
        [--strategies std,random] [--json /tmp/bench_active.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_recipe import DEFAULT_DATA, SEED, log  # benchmarks/ is on sys.path


def choose_rows(split, subset: int, start: int, n_test: int) -> dict[str, list[str]]:
    """Ids of the labelled start, the pool and the test rows."""
    from skcgcnn.datasets import sample_rows

    split = split.astype({"id": str, "split": str})
    train = split.loc[split["split"] == "train", "id"].to_numpy()
    test = split.loc[split["split"] == "test", "id"].to_numpy()
    order = np.random.default_rng(SEED).permutation(train)[:subset]
    keep = sample_rows(len(test), n_test, SEED)
    test = test if keep is None else test[keep]
    if start >= len(order):
        raise SystemExit(f"--start {start} leaves no pool in a subset of {len(order)}")
    return {"start": list(order[:start]), "pool": list(order[start:]), "test": list(test)}


def read_split(path: str | None):
    import pandas as pd

    if path:
        return pd.read_csv(path, dtype={"id": str, "split": str})
    from skcgcnn.pretrained import pretrained_split

    return pretrained_split("mp-formation-energy")


def table(results: dict) -> str:
    """The test MAE per round (rows) and strategy (columns), markdown."""
    strategies = results["settings"]["strategies"]
    lines = ["| round | labelled | " + " | ".join(strategies) + " |",
             "|---:|---:|" + "---:|" * len(strategies)]
    by_key = {(r["strategy"], r["round"]): r for r in results["rounds"]}
    for k in range(results["settings"]["rounds"] + 1):
        first = next((by_key[(s, k)] for s in strategies if (s, k) in by_key), None)
        if first is None:
            break
        cells = [f"{by_key[(s, k)]['test_mae']:.4f}" if (s, k) in by_key else ""
                 for s in strategies]
        lines.append(f"| {k} | {first['n_labelled']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--split", default=None,
                        help="an id,split CSV (default: bench_recipe's split)")
    parser.add_argument("--subset", type=int, default=5000,
                        help="training rows in play: the labelled start and the pool")
    parser.add_argument("--start", type=int, default=500, help="labelled crystals at first")
    parser.add_argument("--step", type=int, default=250, help="crystals added per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--strategies", default="std,random", type=lambda s: s.split(","))
    parser.add_argument("--kappa", type=float, default=1.96, help="of ucb")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="max_epochs of each member")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--n-jobs", type=int, default=1, help="graph building processes")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="the ensemble's random_state and the random picks' seed")
    parser.add_argument("--json", default="/tmp/bench_active.json")
    args = parser.parse_args(argv)

    import torch
    from sklearn.metrics import mean_absolute_error

    from skcgcnn import CGCNNEnsembleRegressor, StructureGraphTransformer
    from skcgcnn.active import STRATEGIES, suggest
    from skcgcnn.datasets import load_cgcnn_folder

    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        raise SystemExit(f"--strategies: unknown {unknown}; use some of {list(STRATEGIES)}")
    torch.set_num_threads(args.threads)
    rows = choose_rows(read_split(args.split), args.subset, args.start, args.n_test)
    t0 = time.perf_counter()
    df = load_cgcnn_folder(args.data, ids=rows["start"] + rows["pool"] + rows["test"],
                           n_jobs=args.n_jobs, cache=True)
    graphs = StructureGraphTransformer(n_jobs=args.n_jobs).fit_transform(df["structure"])
    y = df["target"].to_numpy(dtype=float)
    where = {ident: i for i, ident in enumerate(df.index.astype(str))}
    start, pool, test = (np.array([where[i] for i in rows[part]])
                         for part in ("start", "pool", "test"))
    log(f"{len(df)} crystals and graphs in {time.perf_counter() - t0:.0f} s: "
        f"{len(start)} labelled, {len(pool)} in the pool, {len(test)} test")
    if args.rounds * args.step > len(pool):
        raise SystemExit(f"{args.rounds} rounds of {args.step} need {args.rounds * args.step} "
                         f"pool crystals; the pool has {len(pool)}: raise --subset")

    results = {"settings": {**vars(args), "n_pool": len(pool), "n_test": len(test),
                            "model": f"CGCNNEnsembleRegressor(n_estimators={args.members}, "
                                     f"max_epochs={args.epochs}, random_state={args.seed})"},
               "rounds": []}

    def write() -> None:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")

    labelled = {s: start.copy() for s in args.strategies}
    left = {s: pool.copy() for s in args.strategies}
    shared = None  # the round-0 fit, the same for every strategy
    cpu0 = time.process_time()
    for k in range(args.rounds + 1):
        for strategy in args.strategies:
            t0, c0 = time.perf_counter(), time.process_time()
            if k == 0 and shared is not None:
                model = shared
            else:
                model = CGCNNEnsembleRegressor(n_estimators=args.members,
                                               max_epochs=args.epochs, verbose=0,
                                               random_state=args.seed, device="cpu")
                model.fit(graphs[labelled[strategy]], y[labelled[strategy]])
                shared = model if k == 0 else shared
            fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
            pred = model.predict(graphs[test])
            row = {"strategy": strategy, "round": k, "n_labelled": len(labelled[strategy]),
                   "test_mae": float(mean_absolute_error(y[test], pred)),
                   "fit_s": round(fit_s, 1), "fit_cpu_s": round(fit_cpu, 1)}
            if k < args.rounds:
                picked = suggest(model, graphs[left[strategy]], args.step, strategy,
                                 kappa=args.kappa, maximize=False,
                                 random_state=args.seed + k)
                rows_picked = left[strategy][picked]
                # how hard the picks were for the model that chose them (their labels
                # are known here), beside its test MAE
                row["picked_mae"] = float(np.abs(model.predict(graphs[rows_picked])
                                                 - y[rows_picked]).mean())
                labelled[strategy] = np.concatenate([labelled[strategy], rows_picked])
                left[strategy] = np.delete(left[strategy], picked)
            results["rounds"].append(row)
            write()
            log(json.dumps(row))
    results["cpu_s"] = round(time.process_time() - cpu0, 1)
    write()
    print(table(results), flush=True)
    log(f"wrote {args.json}; {results['cpu_s']:.0f} s CPU in the rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
