"""Applicability domain and embeddings for a second target on MP data (issue 17).

A seeded subset of ``--n`` crystals of ``mp-formation-energy-36737`` is split into
train / calibration / test (60 / 20 / 20 %) with the draws of
``benchmarks/bench_uncertainty.py`` (the same seed gives the same rows).  One
:class:`CGCNNRegressor` (default recipe) is fitted on the train rows' formation energy
and saved to ``--cache`` (a rerun loads it); then, on the test rows:

1. **applicability domain**: an :class:`ApplicabilityDomain` (k nearest training
   crystals in embedding space, threshold at the ``--quantile`` of the training rows'
   leave-self-out distances), with and without standardising the embeddings; the test
   MAE by domain-distance quintile, the Spearman correlation of distance and absolute
   error, and the fraction of calibration and test crystals flagged outside with the
   MAE inside and outside;
2. **embeddings for a second target**: the band gap (column 3 of
   ``id_prop_multi.csv``) from ``CGCNNEmbedder(formation-energy model)`` followed by
   ``HistGradientBoostingRegressor`` and by ``StandardScaler + RidgeCV``, beside a
   ``CGCNNRegressor`` trained from scratch on band gap (same rows, recipe and epochs;
   also cached) and the train-mean baseline: test MAE each.

Usage::

    python benchmarks/bench_domain.py [--data DIR] [--n 5000] [--epochs E] [--seed 0]
        [--neighbors 5] [--quantile 0.95] [--cache DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_uncertainty import seeded_split  # benchmarks/ is on sys.path for its scripts

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
DEFAULT_CACHE = HERE.parent / "results" / "bench_domain_cache"


def fitted_regressor(path: Path, graphs, y, params: dict, label: str):
    """A CGCNNRegressor from ``path`` when saved there, else fitted and saved."""
    from skcgcnn import CGCNNRegressor, load_model, save_model

    if path.exists():
        print(f"{label}: loaded {path}", flush=True)
        return load_model(path), None
    start = time.perf_counter()
    reg = CGCNNRegressor(**params).fit(graphs, y)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(reg, path)
    print(f"{label}: fitted in {seconds:.0f} s, saved to {path}", flush=True)
    return reg, seconds


def quintile_table(distance: np.ndarray, abs_err: np.ndarray) -> list[dict]:
    """Test MAE in each fifth of the crystals ordered by domain distance."""
    edges = np.quantile(distance, np.linspace(0, 1, 6))
    bins = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, 4)
    return [{"quintile": q + 1, "n": int((bins == q).sum()),
             "distance_from": float(distance[bins == q].min()),
             "distance_to": float(distance[bins == q].max()),
             "mae": float(abs_err[bins == q].mean())} for q in range(5)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=5000, help="crystals in the subset")
    parser.add_argument("--epochs", type=int, default=None,
                        help="max_epochs (default: CGCNNRegressor's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbors", type=int, default=5)
    parser.add_argument("--quantile", type=float, default=0.95)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help="folder for the fitted models (reused by a rerun)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skcgcnn import ApplicabilityDomain, CGCNNEmbedder, StructureGraphTransformer

    start = time.perf_counter()
    # the same draws as bench_uncertainty.py, with the band gap beside the formation energy
    frame, train, cal, test = seeded_split(args.data, args.n, args.seed,
                                           id_prop="id_prop_multi.csv", missing_target="nan")
    energy = frame["target_0"].to_numpy(dtype=float)
    gap = frame["target_1"].to_numpy(dtype=float)
    graphs = StructureGraphTransformer(n_jobs=2).fit().transform(list(frame["structure"]))
    print(f"loaded and graphed {len(frame)} crystals in {time.perf_counter() - start:.0f} "
          f"s: {len(train)} train, {len(cal)} calibration, {len(test)} test", flush=True)

    params = {"random_state": args.seed}
    if args.epochs is not None:
        params["max_epochs"] = args.epochs
    tag = f"n{args.n}-seed{args.seed}-epochs{args.epochs or 'default'}"
    cache = Path(args.cache)
    reg, fe_seconds = fitted_regressor(cache / f"formation-energy-{tag}.pt",
                                       graphs[train], energy[train], params,
                                       "formation-energy model")
    results: dict = {"settings": {**vars(args), "n_loaded": len(frame),
                                  "n_train": len(train), "n_calibration": len(cal),
                                  "n_test": len(test), "fit_seconds": fe_seconds}}

    # 1. the applicability domain against the test error
    abs_err = np.abs(reg.predict(graphs[test]) - energy[test])
    results["formation_energy_test_mae"] = float(abs_err.mean())
    print(f"formation energy test MAE {abs_err.mean():.4f} eV/atom", flush=True)
    features = {name: reg.predict_crystal_features(graphs[rows])
                for name, rows in (("train", train), ("cal", cal), ("test", test))}
    results["domain"] = []
    for scale in (True, False):
        domain = ApplicabilityDomain(n_neighbors=args.neighbors, quantile=args.quantile,
                                     scale=scale).fit(features["train"])
        distance = domain.distance_from_features(features["test"])
        outside = distance > domain.threshold_
        cal_outside = domain.distance_from_features(features["cal"]) > domain.threshold_
        row = {"scale": scale, "threshold": domain.threshold_,
               "train_inside": float(np.mean(domain.train_distances_ <= domain.threshold_)),
               "cal_outside": float(cal_outside.mean()),
               "test_outside": float(outside.mean()),
               "mae_inside": float(abs_err[~outside].mean()),
               "mae_outside": float(abs_err[outside].mean()) if outside.any() else None,
               "spearman_distance_abs_error": float(spearmanr(distance, abs_err).statistic),
               "quintiles": quintile_table(distance, abs_err)}
        results["domain"].append(row)
        print(f"\nApplicabilityDomain(n_neighbors={args.neighbors}, quantile="
              f"{args.quantile}, scale={scale}): threshold {row['threshold']:.4g}; "
              f"Spearman(distance, |error|) = {row['spearman_distance_abs_error']:.3f}")
        print(pd.DataFrame(row["quintiles"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"outside: {row['test_outside']:.3f} of test ({row['cal_outside']:.3f} of "
              f"calibration, {row['train_inside']:.3f} of train inside); test MAE inside "
              f"{row['mae_inside']:.4f}, outside {row['mae_outside']}", flush=True)

    # 2. band gap: embeddings of the formation-energy network beside training from scratch
    rows = []
    embedder = CGCNNEmbedder(reg)
    for name, head in (("CGCNNEmbedder + HistGradientBoostingRegressor",
                        HistGradientBoostingRegressor(random_state=args.seed)),
                       ("CGCNNEmbedder + StandardScaler + RidgeCV",
                        make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13))))):
        begin = time.perf_counter()
        model = make_pipeline(embedder, head).fit(graphs[train], gap[train])
        rows.append({"model": name, "test_mae": float(mean_absolute_error(
            gap[test], model.predict(graphs[test]))),
            "seconds": time.perf_counter() - begin})
    scratch, gap_seconds = fitted_regressor(cache / f"band-gap-{tag}.pt", graphs[train],
                                            gap[train], params, "band-gap model")
    rows.append({"model": "CGCNNRegressor from scratch", "test_mae": float(
        mean_absolute_error(gap[test], scratch.predict(graphs[test]))),
        "seconds": gap_seconds})
    rows.append({"model": "train mean", "test_mae": float(
        mean_absolute_error(gap[test], np.full(len(test), gap[train].mean()))),
        "seconds": 0.0})
    results["band_gap"] = rows
    print("\nband gap (eV), test rows:")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"),
          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
