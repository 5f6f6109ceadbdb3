"""Deep ensembles and split-conformal intervals on MP formation energy (issue 17).

A seeded subset of ``--n`` crystals of ``mp-formation-energy-36737`` is split into
train / calibration / test (60 / 20 / 20 %).  A :class:`CGCNNEnsembleRegressor` of
``--members`` networks is fitted on the train rows (in a Pipeline with the graph
transformer); then, on the test rows, which neither training nor calibration saw:

1. MAE of the ensemble mean beside each member's MAE (and their mean);
2. Spearman correlation between the ensemble std and the absolute error; with
   ``--loss gaussian_nll`` (members with a mean-variance head) also of its epistemic
   part (the members' disagreement) and its aleatoric part (their predicted noise),
   and of member 0's own predicted std against member 0's error;
3. MAPIE's ``SplitConformalRegressor(pipe, prefit=True)`` conformalized on the
   calibration rows, for the ensemble and for member 0 alone: empirical coverage and
   mean width of the intervals at 80 / 90 / 95 %;
4. the same with the ensemble std as the normaliser (score ``|y - mean| / std``,
   interval ``mean ± q std``), computed here (MAPIE's normalised score fits its own
   residual model instead);
5. with ``--domain`` (the ensemble fitted with ``domain="knn"``): the Spearman
   correlation of the applicability-domain distance with the absolute error, of the
   mean of the std's and the distance's ranks, and of the error predicted from both:
   MAPIE's ``ResidualNormalisedScore`` with ``make_pipeline(UncertaintyFeatures(pipe),
   LinearRegression())`` as its residual estimator, fitted on half of the calibration
   rows to the log absolute residual (the other half conformalizes); its intervals'
   coverage and width at the same levels.  With variance heads also the same from the
   epistemic and aleatoric parts and the distance.

Usage::

    python benchmarks/bench_uncertainty.py [--data DIR] [--n 5000] [--members 5]
        [--epochs 30] [--loss gaussian_nll] [--bootstrap] [--domain] [--n-jobs 1]
        [--threads 1] [--seed 0] [--json out.json] [--save-model ens.pt] [--verbose]

Members take CGCNNRegressor's defaults except ``--epochs`` (``max_epochs``) and
``--loss``.  ``--save-model`` writes the fitted Pipeline (graph transformer and
ensemble) with ``skcgcnn.save_model``, for ``skcgcnn.load_model`` in another script.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
LEVELS = (0.8, 0.9, 0.95)


def seeded_split(data: str, n: int, seed: int, **load_kwargs):
    """``(frame, train, cal, test)``: ``n`` ids of ``data``'s ``id_prop.csv`` drawn with
    ``default_rng(seed)``, loaded with ``load_cgcnn_folder(data, ids=..., **load_kwargs)``,
    then a permutation by the same generator cut 60 / 20 / 20 (positions in ``frame``)."""
    import pandas as pd

    from skcgcnn.datasets import load_cgcnn_folder

    all_ids = pd.read_csv(Path(data) / "id_prop.csv", header=None, dtype={0: str})[0]
    rng = np.random.default_rng(seed)
    ids = rng.choice(all_ids.to_numpy(), size=min(n, len(all_ids)), replace=False)
    frame = load_cgcnn_folder(data, ids=ids, n_jobs=2, **load_kwargs)
    order = rng.permutation(len(frame))
    n_train, n_cal = int(0.6 * len(frame)), int(0.2 * len(frame))
    train, cal, test = np.split(order, [n_train, n_train + n_cal])
    return frame, train, cal, test


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score."""
    n = len(scores)
    k = int(np.ceil((n + 1) * level))
    return float(np.sort(scores)[min(k, n) - 1])


def interval_rows(name: str, lower: np.ndarray, upper: np.ndarray, y: np.ndarray,
                  level: float) -> dict:
    return {"model": name, "level": level,
            "coverage": float(np.mean((y >= lower) & (y <= upper))),
            "mean_width": float(np.mean(upper - lower))}


def spread_and_distance(ensemble, graph, graphs, pick, y, cal, test, abs_err, parts, rows,
                        seed: int) -> dict:
    """Section 5: the domain distance, and spread and distance together (appends the
    intervals to ``rows``)."""
    import warnings

    from mapie.conformity_scores import ResidualNormalisedScore
    from mapie.regression import SplitConformalRegressor
    from scipy.stats import rankdata, spearmanr
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline, make_pipeline

    from skcgcnn import OutsideDomainWarning, UncertaintyFeatures

    warnings.simplefilter("ignore", OutsideDomainWarning)
    pipe = Pipeline([("graph", graph), ("cgcnn", ensemble)])
    distance = ensemble.predict(graphs[test], return_domain=True)[1]
    out = {"spearman_distance_abs_error": float(spearmanr(distance, abs_err).statistic),
           "spearman_mean_rank_std_distance_abs_error": float(spearmanr(
               rankdata(parts.std) + rankdata(distance), abs_err).statistic),
           "outside_test": float(np.mean(distance > ensemble.domain_.threshold_))}
    feature_sets = [("std", "distance")]
    if parts.aleatoric_std is not None:
        feature_sets.append(("epistemic_std", "aleatoric_std", "distance"))
    for features in feature_sets:
        name = "+".join(features)
        score = ResidualNormalisedScore(
            residual_estimator=make_pipeline(UncertaintyFeatures(pipe, features=features),
                                             LinearRegression()),
            split_size=0.5, random_state=seed)
        mapie = SplitConformalRegressor(pipe, confidence_level=list(LEVELS), prefit=True,
                                        conformity_score=score)
        mapie.conformalize(pick(cal), y[cal])
        _, bounds = mapie.predict_interval(pick(test))
        error_model = score.residual_estimator_
        predicted = np.exp(error_model.predict(pick(test)))
        out[f"spearman_predicted_error_{name}_abs_error"] = float(
            spearmanr(predicted, abs_err).statistic)
        out[f"coefficients_{name}"] = error_model[-1].coef_.tolist()
        for j, level in enumerate(LEVELS):
            rows.append(interval_rows(f"ensemble (normalised by {name})", bounds[:, 0, j],
                                      bounds[:, 1, j], y[test], level))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=5000, help="crystals in the subset")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None,
                        help="max_epochs of each member (default: CGCNNRegressor's)")
    parser.add_argument("--loss", default=None,
                        help="loss of each member (default: CGCNNRegressor's), e.g. "
                             "gaussian_nll for mean-variance members")
    parser.add_argument("--beta", type=float, default=None,
                        help="with --loss gaussian_nll: criterion__beta (the beta-NLL)")
    parser.add_argument("--bootstrap", action="store_true",
                        help="each member on a bootstrap sample of the train rows")
    parser.add_argument("--domain", action="store_true",
                        help="fit the ensemble with domain='knn' and rank the errors by "
                             "the distance and by spread and distance together")
    parser.add_argument("--save-model", default=None,
                        help="save the fitted Pipeline here (skcgcnn.save_model)")
    parser.add_argument("--n-jobs", type=int, default=1, help="members fitted in parallel")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (the members' fits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--verbose", action="store_true", help="each member's epoch table")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch
    from mapie.regression import SplitConformalRegressor
    from scipy.stats import spearmanr
    from sklearn.pipeline import Pipeline

    from skcgcnn import CGCNNEnsembleRegressor, StructureGraphTransformer, save_model
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frame, train, cal, test = seeded_split(args.data, args.n, args.seed)
    structures = list(frame["structure"])
    y = frame.iloc[:, -1].to_numpy(dtype=float)
    n = len(y)
    pick = (lambda rows: [structures[i] for i in rows])
    print(f"loaded {n} crystals in {time.perf_counter() - start:.0f} s: "
          f"{len(train)} train, {len(cal)} calibration, {len(test)} test", flush=True)

    graph = StructureGraphTransformer(n_jobs=2).fit()
    graphs = graph.transform(structures)
    member_params = {} if args.epochs is None else {"max_epochs": args.epochs}
    if args.loss is not None:
        member_params["loss"] = args.loss
    if args.beta is not None:
        member_params["criterion__beta"] = args.beta
    if args.verbose:
        member_params["verbose"] = 1
    ensemble = CGCNNEnsembleRegressor(n_estimators=args.members, n_jobs=args.n_jobs,
                                      bootstrap=args.bootstrap, random_state=args.seed,
                                      domain="knn" if args.domain else None,
                                      **member_params)
    start = time.perf_counter()
    ensemble.fit(graphs[train], y[train])
    fit_seconds = time.perf_counter() - start
    print(f"fitted {args.members} members in {fit_seconds:.0f} s", flush=True)
    if args.save_model:
        save_model(Pipeline([("graph", graph), ("cgcnn", ensemble)]), args.save_model)
        print(f"saved the fitted Pipeline to {args.save_model}", flush=True)

    results: dict = {"settings": {**vars(args), "n_loaded": n, "n_train": len(train),
                                  "n_calibration": len(cal), "n_test": len(test),
                                  "member_params": ensemble.estimators_[0].get_params(),
                                  "fit_seconds": fit_seconds}}
    results["settings"]["member_params"] = {
        k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
        for k, v in results["settings"]["member_params"].items()}

    # 1-2. ensemble mean against its members; std against the error
    members = ensemble.predict_members(graphs[test])
    parts = ensemble.predict_uncertainty(graphs[test])
    mean, std = parts.mean, parts.std
    member_mae = np.abs(members - y[test]).mean(axis=1)
    abs_err = np.abs(mean - y[test])
    results["ensemble"] = {
        "mae_ensemble": float(abs_err.mean()),
        "mae_members": member_mae.tolist(),
        "mae_member_mean": float(member_mae.mean()),
        "ratio_to_member_0": float(abs_err.mean() / member_mae[0]),
        "ratio_to_member_mean": float(abs_err.mean() / member_mae.mean()),
        "spearman_std_abs_error": float(spearmanr(std, abs_err).statistic),
    }
    if parts.aleatoric_std is not None:
        single_mean, single_std = ensemble.estimators_[0].predict(graphs[test],
                                                                  return_std=True)
        results["ensemble"].update({
            "spearman_epistemic_std_abs_error": float(
                spearmanr(parts.epistemic_std, abs_err).statistic),
            "spearman_aleatoric_std_abs_error": float(
                spearmanr(parts.aleatoric_std, abs_err).statistic),
            "mean_epistemic_std": float(parts.epistemic_std.mean()),
            "mean_aleatoric_std": float(parts.aleatoric_std.mean()),
            "spearman_member_0_std_its_abs_error": float(
                spearmanr(single_std, np.abs(single_mean - y[test])).statistic),
        })
    print(json.dumps(results["ensemble"], indent=1), flush=True)

    # 3. MAPIE split conformal, prefit Pipelines (structures in, graphs rebuilt)
    rows = []
    single = ensemble.estimators_[0]
    for name, est in (("ensemble", ensemble), ("member 0", single)):
        pipe = Pipeline([("graph", graph), ("cgcnn", est)])
        mapie = SplitConformalRegressor(pipe, confidence_level=list(LEVELS), prefit=True)
        mapie.conformalize(pick(cal), y[cal])
        _, bounds = mapie.predict_interval(pick(test))
        for j, level in enumerate(LEVELS):
            rows.append(interval_rows(f"{name} (MAPIE absolute)", bounds[:, 0, j],
                                      bounds[:, 1, j], y[test], level))

    # 4. the ensemble std (and with variance heads its epistemic part) as the normaliser
    cal_parts = ensemble.predict_uncertainty(graphs[cal])
    normalisers = [("ensemble (std-normalised)", "std")]
    if parts.aleatoric_std is not None:
        normalisers.append(("ensemble (epistemic-std-normalised)", "epistemic_std"))
    for name, key in normalisers:
        scores = np.abs(y[cal] - cal_parts.mean) / np.maximum(cal_parts[key], 1e-12)
        for level in LEVELS:
            q = conformal_quantile(scores, level)
            rows.append(interval_rows(name, mean - q * parts[key], mean + q * parts[key],
                                      y[test], level))
    if args.domain:
        results["domain"] = spread_and_distance(ensemble, graph, graphs, pick, y, cal, test,
                                                abs_err, parts, rows, args.seed)
        print(json.dumps(results["domain"], indent=1), flush=True)
    results["intervals"] = rows
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
