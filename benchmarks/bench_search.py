"""Is a 30-trial search worth its cost?  A multi-fidelity Optuna study against the
default estimator on MP data nobody tuned to (issue 28 item 4).

Rows: bench_recipe.py's fixed 60/20/20 split of ``mp-formation-energy-36737`` (the
split the pretrained models ship, ``skcgcnn/pretrained/*.split.csv.gz``).  A seeded
``--n-train`` of its train rows train, ``--n-val`` of its val rows choose, and
``--n-test`` of its test rows score, the same rows for every model.

1. **The default**: ``CGCNNRegressor()`` (50 epochs, its recipe) fitted on the train
   rows with seeds 0 and 1 (``--default-seeds``): test MAE and CPU seconds each.
2. **The search**: ``tune(split=...)`` over a space around the recipe
   (:data:`RECIPE_SPACE`: atom features, depth, widths, learning rate, weight decay,
   batch size, loss), the default configuration enqueued as trial 0, ``--trials``
   trials, each on ``--trial-rows`` of the train rows for ``--trial-epochs`` epochs
   (``--pruner``, default none), then the ``--rerun-top`` best trained again on all the train
   rows for ``--refit-epochs`` epochs; the best re-run's test MAE.  Its CPU seconds
   (the whole ``tune`` call, including the short default fit it makes for its own
   comparison) against the default's.
3. **Which parameters matter**: Optuna's fANOVA and PED-ANOVA importances over the
   study's complete trials.

Usage (``--target`` is a column of ``id_prop_multi.csv``: e_form or band_gap)::

    python benchmarks/bench_search.py --n-train 2000 --target e_form --out runs/search-2000
    python benchmarks/bench_search.py --n-train 5000 --target e_form --out runs/search-5000

Everything runs with one torch thread.  ``summary.json`` in ``--out`` holds the figures;
the study is in ``--out/study.db``, so a killed run resumes its trials.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
COLUMNS = ["e_form", "band_gap", "efermi", "volume", "magnetization"]

#: The search space: the default recipe's neighbourhood.
RECIPE_SPACE = {
    "atom_features": ["cgcnn", "magpie", "matscholar"],
    "n_conv": [2, 5], "atom_fea_len": [64, 128], "h_fea_len": [128, 256], "n_h": [1, 2],
    "conv": ["gated"], "optimizer": ["adamw"], "lr": [0.002, 0.03],
    "weight_decay": [1e-4, 0.1], "batch_size": [64, 128, 256],
    "radius": [8.0], "max_num_nbr": [12], "loss": ["absolute_error", "huber"],
}
#: The default estimator as a point of that space (enqueued as trial 0).
DEFAULT_POINT = {"atom_features": "cgcnn", "n_conv": 3, "atom_fea_len": 64,
                 "h_fea_len": 128, "n_h": 1, "lr": 0.01, "weight_decay": 0.01,
                 "batch_size": 128, "loss": "absolute_error"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pick_rows(args) -> dict[str, list[str]]:
    import pandas as pd

    split_file = next((HERE.parent / "skcgcnn" / "pretrained").glob("*.split.csv.gz"))
    with gzip.open(split_file, "rt") as f:
        split = pd.read_csv(f, dtype=str)
    rng = np.random.default_rng(args.seed)
    sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    return {part: sorted(rng.choice(split["id"][split["split"] == part].to_numpy(),
                                    size=n, replace=False).tolist())
            for part, n in sizes.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--target", default="e_form", choices=COLUMNS[:3])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--trial-rows", type=float, default=0.3)
    p.add_argument("--trial-epochs", type=int, default=12)
    p.add_argument("--rerun-top", type=int, default=2)
    p.add_argument("--refit-epochs", type=int, default=60)
    p.add_argument("--pruner", default="none",
                   help="tune's pruner (default: none; the trials are cheap already)")
    p.add_argument("--default-seeds", default="0,1")
    p.add_argument("--seed", type=int, default=0, help="rows and study seed")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import optuna
    import torch
    from sklearn.metrics import mean_absolute_error

    from skcgcnn import CGCNNRegressor, StructureGraphTransformer
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.tuning import SearchSpace, tune

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = pick_rows(args)
    ids = [i for part in ("train", "val", "test") for i in rows[part]]
    df = load_cgcnn_folder(args.data, id_prop="id_prop_multi.csv", target_names=COLUMNS,
                           ids=ids, missing_target="nan", n_jobs=2, cache=True)
    df = df.loc[ids]
    y = df[args.target].to_numpy(float)
    position = {ident: i for i, ident in enumerate(df.index)}
    parts = {part: np.array([position[i] for i in rows[part]]) for part in rows}
    log(f"{len(df)} crystals: {', '.join(f'{k} {len(v)}' for k, v in parts.items())}; "
        f"target {args.target}")
    summary: dict = {"settings": vars(args), "space": RECIPE_SPACE}

    # 1. the default, two seeds
    graphs = StructureGraphTransformer(n_jobs=2).fit_transform(list(df["structure"]))
    defaults = []
    for seed in (int(s) for s in args.default_seeds.split(",")):
        start, wall = time.process_time(), time.perf_counter()
        model = CGCNNRegressor(random_state=seed, verbose=0).fit(graphs[parts["train"]],
                                                                 y[parts["train"]])
        cpu, wall = time.process_time() - start, time.perf_counter() - wall
        mae = float(mean_absolute_error(y[parts["test"]], model.predict(graphs[parts["test"]])))
        defaults.append({"seed": seed, "test_mae": mae, "cpu_s": round(cpu, 1),
                         "wall_s": round(wall, 1)})
        log(f"default CGCNNRegressor(random_state={seed}): test MAE {mae:.4f}, "
            f"{cpu:.0f} CPU s")
    summary["default"] = defaults
    default_cpu = float(np.mean([d["cpu_s"] for d in defaults]))
    default_mae = float(np.mean([d["test_mae"] for d in defaults]))

    # 2. the search
    start = time.process_time()
    result = tune(df["structure"], y, space=SearchSpace.from_dict(RECIPE_SPACE),
                  n_trials=args.trials, max_epochs=args.trial_epochs, split=parts,
                  storage=str(out / "study.db"), pruner=args.pruner, random_state=args.seed,
                  output_dir=out, baselines=[], enqueue=[DEFAULT_POINT],
                  trial_rows=args.trial_rows, rerun_top=args.rerun_top,
                  refit_epochs=args.refit_epochs, n_jobs=2)
    search_cpu = time.process_time() - start
    tuned = result.test["tuned_test_mae"]
    summary["search"] = {
        "tuned_test_mae": tuned, "tuned_trial": result.test["tuned_trial"],
        "tuned_params": result.best_params, "reruns": result.reruns,
        "cpu_s": round(search_cpu, 1), "cost_vs_default": round(search_cpu / default_cpu, 2),
        "gain_vs_default_mean": round(1 - tuned / default_mae, 4),
        "states": result.trials["state"].value_counts().to_dict(),
    }
    default_maes = ", ".join(f"{d['test_mae']:.4f}" for d in defaults)
    log(f"tuned: test MAE {tuned:.4f} against the default's {default_maes} "
        f"({summary['search']['gain_vs_default_mean']:+.1%} below their mean), "
        f"{search_cpu:.0f} CPU s = {search_cpu / default_cpu:.1f}x a default fit")

    # 3. importances
    importances = {}
    for name, evaluator in (("fanova", optuna.importance.FanovaImportanceEvaluator(seed=0)),
                            ("ped_anova", optuna.importance.PedAnovaImportanceEvaluator())):
        try:
            importances[name] = {k: round(float(v), 4) for k, v in
                                 optuna.importance.get_param_importances(
                                     result.study, evaluator=evaluator).items()}
        except Exception as exc:  # noqa: BLE001 - report, do not lose the run
            importances[name] = {"error": repr(exc)}
    summary["importances"] = importances
    log(f"importances: {json.dumps(importances)}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"wrote {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
