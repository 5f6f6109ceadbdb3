"""Measured Optuna study of CGCNN on a Materials Project subset, with and without pruning.

The structures are split once into a tuning part and a test part (never seen by the
studies).  Each study tunes on the tuning part (its own train/validation split), the best
configuration is refitted on the whole tuning part and scored on the test part, beside
the default CGCNN (the settings of ``skcgcnn benchmark``, trained for the studies' number of
epochs and for the benchmark's) and the magpie-rf baseline fitted on the same rows.  Both studies start from the same seed and share one graph cache.

Run from the repository root (takes about an hour on two CPU cores)::

    nohup python benchmarks/bench_tuning.py --out results/bench_tuning \\
        > results/bench_tuning.log 2>&1 &

The studies live in SQLite files under ``--out``: a killed run resumes where it stopped
when started again with the same arguments.  ``summary.md`` and ``summary.json`` hold the
figures quoted in docs/tuning.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_tuning")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
    "mp-formation-energy-36737"


def study_figures(study) -> dict:
    """Trials per state, epochs trained and the study's own wall time (first start to last end)."""
    from optuna.trial import TrialState

    trials = [t for t in study.trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return {
        "trials": {s.name: sum(t.state == s for t in study.trials) for s in TrialState
                   if any(t.state == s for t in study.trials)},
        "epochs_trained": int(sum(len(t.intermediate_values) for t in trials)),
        "trial_seconds": round(sum(t.duration.total_seconds() for t in trials
                                   if t.duration is not None), 1),
        "study_wall_s": round((max(ends) - min(t.datetime_start for t in trials))
                              .total_seconds(), 1) if ends else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="CGCNN folder (default: %(default)s)")
    p.add_argument("--n", type=int, default=2000, help="structures (default: 2000)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--n-trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--pruners", default="median,none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", default="results/bench_tuning")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    from sklearn.metrics import mean_absolute_error
    from sklearn.model_selection import train_test_split

    from skcgcnn.baselines import make_baseline
    from skcgcnn.benchmark import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
    from skcgcnn.estimators import make_cgcnn_pipeline
    from skcgcnn.tuning import best_trials_markdown, load_tuning_data, tune

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    X, y, target = load_tuning_data(args.data, limit=args.n, random_state=args.seed, n_jobs=2)
    logger.info("%d structures loaded in %.0f s", len(y), time.perf_counter() - start)
    pos = np.arange(len(y))
    tune_pos, test_pos = train_test_split(pos, test_size=args.test_fraction,
                                          random_state=args.seed)
    X_tune, y_tune = X.iloc[np.sort(tune_pos)], y[np.sort(tune_pos)]
    X_test, y_test = list(X.iloc[np.sort(test_pos)]), y[np.sort(test_pos)]

    summary: dict = {"n_structures": len(y), "n_tune": len(y_tune), "n_test": len(y_test),
                     "epochs": args.epochs, "n_trials": args.n_trials,
                     "torch_threads": args.threads, "studies": {}}
    valid_baselines = None
    for pruner in args.pruners.split(","):
        logger.info("study with pruner=%s", pruner)
        result = tune(
            X_tune, y_tune, n_trials=args.n_trials, max_epochs=args.epochs,
            storage=f"sqlite:///{(out / f'study-{pruner}.db').resolve()}",
            study_name=f"mp{args.n}-{pruner}", pruner=pruner, random_state=args.seed,
            output_dir=out / pruner, graph_cache=out / "graphs",
            baselines=valid_baselines or ["cgcnn", "magpie-rf", "dummy"],
            target_name="E_form (eV/atom)", verbose=1)
        valid_baselines = valid_baselines or result.baselines
        t0 = time.perf_counter()
        test_mae = mean_absolute_error(y_test, result.best_pipeline.predict(X_test))
        entry = study_figures(result.study)
        entry.update(best_trial=result.study.best_trial.number,
                     best_valid_mae=round(result.best_value, 4),
                     best_params=result.best_params,
                     best_atom_features=result.study.best_trial.user_attrs.get(
                         "atom_features"),
                     test_mae_refit=round(float(test_mae), 4),
                     graph_builds_this_call=result.graph_builds,
                     tune_call_wall_s=round(result.wall_s, 1))
        summary["studies"][pruner] = entry
        logger.info("pruner=%s: %s (test scoring %.0f s)", pruner, entry,
                    time.perf_counter() - t0)
        (out / f"best_trials-{pruner}.md").write_text(best_trials_markdown(result.study))
    summary["valid_baselines"] = {k: round(v, 4) for k, v in (valid_baselines or {}).items()}

    # the same references on the test rows, fitted on all the tuning rows
    test_refs = {}
    for epochs in (args.epochs, DEFAULT_EPOCHS):
        name = f"cgcnn ({epochs} epochs)"
        default = make_cgcnn_pipeline(max_epochs=epochs, batch_size=DEFAULT_BATCH_SIZE,
                                      random_state=args.seed)
        t0 = time.perf_counter()
        default.fit(list(X_tune), y_tune)
        test_refs[name] = mean_absolute_error(y_test, default.predict(X_test))
        logger.info("%s: test MAE %.4f (%.0f s)", name, test_refs[name],
                    time.perf_counter() - t0)
    for name in ("magpie-rf", "dummy"):
        model = make_baseline(name, n_jobs=2, random_state=args.seed)
        model.fit(list(X_tune), y_tune)
        test_refs[name] = mean_absolute_error(y_test, model.predict(X_test))
        logger.info("%s: test MAE %.4f", name, test_refs[name])
    summary["test_references"] = {k: round(float(v), 4) for k, v in test_refs.items()}
    summary["total_wall_s"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    lines = [f"# Tuning study: {len(y)} MP crystals, {target}", "",
             f"{len(y_tune)} tuning rows (80/20 train/validation inside each study), "
             f"{len(y_test)} test rows; {args.n_trials} trials of {args.epochs} epochs; "
             f"torch threads {args.threads}.", "",
             "| pruner | trials (state) | epochs trained | study wall (s) | best valid MAE | "
             "test MAE (refit) |", "|---|---|---|---|---|---|"]
    for pruner, e in summary["studies"].items():
        lines.append(f"| {pruner} | {e['trials']} | {e['epochs_trained']} | "
                     f"{e['study_wall_s']} | {e['best_valid_mae']} | {e['test_mae_refit']} |")
    lines += ["", "Validation MAE of the references (same split as the studies): "
              + ", ".join(f"{k} {v}" for k, v in summary["valid_baselines"].items()),
              "", "Test MAE of the references: "
              + ", ".join(f"{k} {v}" for k, v in summary["test_references"].items()),
              "", f"Total wall time {summary['total_wall_s']:.0f} s."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
