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


def replay_pruner(study, pruner) -> dict:
    """What ``pruner`` would have done to the learning curves of an unpruned study.

    The trials are replayed in order into an in-memory study: each epoch's validation MAE
    is reported, and the trial stops where the pruner says so.  (It does not replay the
    sampler: with pruning, later trials would have drawn other parameters.)
    """
    import optuna
    from optuna.trial import TrialState

    replay = optuna.create_study(pruner=pruner)
    epochs, pruned = 0, []
    for t in study.trials:
        if t.state != TrialState.COMPLETE:
            continue
        trial = replay.ask()
        for step in sorted(t.intermediate_values):
            epochs += 1
            trial.report(t.intermediate_values[step], step)
            if trial.should_prune() and step < max(t.intermediate_values):
                replay.tell(trial, state=TrialState.PRUNED)
                pruned.append(t.number)
                break
        else:
            replay.tell(trial, t.value)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE),
               key=lambda t: t.value)
    kept = [t for t in study.trials if t.state == TrialState.COMPLETE and t.number not in pruned]
    return {"epochs_trained": epochs, "pruned_trials": pruned,
            "best_pruned": best.number in pruned,
            "best_kept_valid_mae": round(min(t.value for t in kept), 4) if kept else None}


def replays(out: Path, args: argparse.Namespace) -> dict:
    """Median pruners with several warm-ups replayed on the unpruned study's curves."""
    import optuna

    study = optuna.load_study(study_name=f"mp{args.n}-none",
                              storage=f"sqlite:///{(out / 'study-none.db').resolve()}")
    out_dict = {}
    for warmup in (args.epochs // 6, args.epochs // 4, args.epochs // 2):
        pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup)
        out_dict[f"warmup {warmup}"] = replay_pruner(study, pruner)
    return out_dict


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
    p.add_argument("--tag", default="", help="suffix of the study names and files")
    p.add_argument("--baselines-from", metavar="SUMMARY_JSON",
                   help="take the validation baselines from an earlier run's summary.json")
    p.add_argument("--skip-references", action="store_true",
                   help="do not fit the reference models on the test rows again")
    p.add_argument("--replay-only", action="store_true",
                   help="only replay median pruners on the finished unpruned study")
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
    if args.replay_only:
        print(json.dumps(replays(out, args), indent=2))
        return 0
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
    if args.baselines_from:
        valid_baselines = json.loads(Path(args.baselines_from).read_text())["valid_baselines"]
    for pruner in args.pruners.split(","):
        logger.info("study with pruner=%s", pruner)
        result = tune(
            X_tune, y_tune, n_trials=args.n_trials, max_epochs=args.epochs,
            storage=f"sqlite:///{(out / f'study-{pruner}{args.tag}.db').resolve()}",
            study_name=f"mp{args.n}-{pruner}{args.tag}", pruner=pruner,
            random_state=args.seed, output_dir=out / f"{pruner}{args.tag}",
            graph_cache=out / "graphs",
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
        summary["studies"][pruner + args.tag] = entry
        logger.info("pruner=%s: %s (test scoring %.0f s)", pruner, entry,
                    time.perf_counter() - t0)
        (out / f"best_trials-{pruner}{args.tag}.md").write_text(
            best_trials_markdown(result.study))
    summary["valid_baselines"] = {k: round(v, 4) for k, v in (valid_baselines or {}).items()}

    # the same references on the test rows, fitted on all the tuning rows
    test_refs = {}
    for epochs in () if args.skip_references else (args.epochs, DEFAULT_EPOCHS):
        name = f"cgcnn ({epochs} epochs)"
        default = make_cgcnn_pipeline(max_epochs=epochs, batch_size=DEFAULT_BATCH_SIZE,
                                      random_state=args.seed)
        t0 = time.perf_counter()
        default.fit(list(X_tune), y_tune)
        test_refs[name] = mean_absolute_error(y_test, default.predict(X_test))
        logger.info("%s: test MAE %.4f (%.0f s)", name, test_refs[name],
                    time.perf_counter() - t0)
    for name in () if args.skip_references else ("magpie-rf", "dummy"):
        model = make_baseline(name, n_jobs=2, random_state=args.seed)
        model.fit(list(X_tune), y_tune)
        test_refs[name] = mean_absolute_error(y_test, model.predict(X_test))
        logger.info("%s: test MAE %.4f", name, test_refs[name])
    summary["test_references"] = {k: round(float(v), 4) for k, v in test_refs.items()}
    if (out / "study-none.db").exists():
        summary["replayed_median_pruners"] = replays(out, args)
    summary["total_wall_s"] = round(time.perf_counter() - start, 1)
    (out / f"summary{args.tag}.json").write_text(json.dumps(summary, indent=2, default=str))

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
    for name, r in summary.get("replayed_median_pruners", {}).items():
        lines.append(f"Median pruner, {name}, replayed on the unpruned curves: "
                     f"{r['epochs_trained']} epochs, pruned {r['pruned_trials']}, best "
                     f"pruned: {r['best_pruned']}, best kept {r['best_kept_valid_mae']}.")
    (out / f"summary{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
