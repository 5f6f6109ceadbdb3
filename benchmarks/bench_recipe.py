"""Learning curves of the training recipes on Materials Project data (issue 14).

One fixed 60/20/20 split of ``mp-formation-energy-36737`` (``train_val_test_split``,
seed 0): 22,043 training, 7,347 validation and 7,347 test crystals.  Nested training
subsets (the first N of a seeded permutation of the training rows) of every size in
``--sizes``; every model is fitted on the subset and scored on the same test rows:

- ``new``: ``CGCNNRegressor()`` with the package's default recipe;
- ``original``: ``CGCNNRegressor(**ORIGINAL_RECIPE)`` (the 2018 ``main.py`` recipe) at
  the same number of epochs as ``new``;
- ``magpie-rf`` and ``structure-gb``: ``skcgcnn.baselines.make_baseline``.

Graphs and descriptors are built once for all rows (``prepare``; they are per crystal
and learn nothing from the data) and kept in ``--work-dir``; every fitted model appends
one row to ``results.csv`` there, and a rerun skips the rows it already holds, so the
run can be killed and resumed.  ``report`` writes the table (markdown) and the log-log
plot of test MAE against training size.

Usage::

    python benchmarks/bench_recipe.py prepare [--n-jobs 2]
    python benchmarks/bench_recipe.py run --sizes 500,2000,5000 --models new,original
    python benchmarks/bench_recipe.py run --sizes 22042 --models new --epochs 100 \
        --curve           # the validation MAE of every epoch, in curve_<...>.csv
    python benchmarks/bench_recipe.py search --size 2000       # the recipe search
    python benchmarks/bench_recipe.py report --png docs/_static/learning_curve.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
TARGETS = {"e_form": "E_form (eV/atom)", "band_gap": "band gap (eV)"}
SEED = 0
# epochs of both CGCNN recipes at each training size (the same for both: the
# comparison is at equal epochs); smaller sets get more passes
EPOCHS = {500: 200, 2000: 100, 5000: 50, 22043: 30}


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# -- prepare: split, graphs and descriptors of every row, once --------------------------
def prepare(args) -> None:
    from skcgcnn.baselines import make_baseline
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.model_selection import split_sizes, train_val_test_split
    from skcgcnn.transformers import StructureGraphTransformer

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    featurizers = [name for name in ("magpie-rf", "structure-gb")
                   if not (work / f"features_{name}.npy").exists()]
    if (work / "graphs.npz").exists() and not featurizers:
        log(f"{work} is prepared")
        return
    t0 = time.perf_counter()
    df = load_cgcnn_folder(args.data, id_prop="id_prop_multi.csv", n_jobs=args.n_jobs,
                           target_names=["e_form", "band_gap", "efermi", "volume",
                                         "magnetization"], missing_target="nan",
                           on_error="raise", cache=True)
    log(f"{len(df)} structures read in {time.perf_counter() - t0:.0f} s")
    names = [c for c in df.columns if c != "structure"]
    y = df[names].to_numpy(dtype=float)
    train, val, test = train_val_test_split(
        y[:, 0], split_sizes(len(df), val_ratio=0.2, test_ratio=0.2), random_state=SEED)
    order = np.random.default_rng(SEED).permutation(train)  # nested training subsets
    split = pd.DataFrame({"id": df.index.astype(str), "split": "train"})
    split.loc[val, "split"] = "val"
    split.loc[test, "split"] = "test"
    split.to_csv(work / "split.csv", index=False)
    np.savez(work / "rows.npz", train=order, val=val, test=test, y=y,
             names=np.array(names))
    log(f"split: {len(train)} train, {len(val)} val, {len(test)} test")

    if not (work / "graphs.npz").exists():
        t0 = time.perf_counter()
        graphs = StructureGraphTransformer(n_jobs=args.n_jobs).fit_transform(df["structure"])
        graphs.save(work / "graphs.npz")
        log(f"graphs built in {time.perf_counter() - t0:.0f} s")

    for name in featurizers:
        t0 = time.perf_counter()
        featurize = make_baseline(name, n_jobs=args.n_jobs).steps[0][1]
        features = np.asarray(featurize.fit_transform(df["structure"]), dtype=float)
        np.save(work / f"features_{name}.npy", features)
        log(f"{name} features {features.shape} in {time.perf_counter() - t0:.0f} s")


def load_prepared(work: Path):
    from skcgcnn.graph import GraphCollection

    rows = np.load(work / "rows.npz")
    return rows, GraphCollection.load(work / "graphs.npz")


# -- models -------------------------------------------------------------------------
def cgcnn(recipe: str, epochs: int, **params):
    from skcgcnn.estimators import ORIGINAL_RECIPE, CGCNNRegressor

    base = dict(ORIGINAL_RECIPE) if recipe == "original" else {}
    base.update(max_epochs=epochs, random_state=SEED, device="cpu")
    base.update(params)
    return CGCNNRegressor(**base)


def epoch_mae(graphs, y):
    """A skorch callback recording the MAE of ``graphs`` against ``y`` after every epoch
    (``val_mae`` in the history), to draw the curve of a long run."""
    from skorch.callbacks import Callback

    class EpochMAE(Callback):
        def on_epoch_end(self, net, **kwargs):
            pred = net.predict(graphs).reshape(-1)
            net.history.record("val_mae", float(np.mean(np.abs(pred - y))))

    return EpochMAE()


def done_keys(path: Path) -> set:
    if not path.exists():
        return set()
    table = pd.read_csv(path)
    return set(zip(table["target"], table["size"], table["model"], table["epochs"]))


def append_row(path: Path, row: dict) -> None:
    frame = pd.DataFrame([row])
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def run(args) -> None:
    import torch
    from sklearn.metrics import mean_absolute_error

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    rows, graphs = load_prepared(work)
    names = [str(n) for n in rows["names"]]
    y = rows["y"][:, names.index(args.target)]
    order, test, val = rows["train"], rows["test"], rows["val"]
    out = work / "results.csv"
    done = done_keys(out)
    for size in args.sizes:
        train = order[:size]
        for model in args.models:
            epochs = args.epochs or EPOCHS.get(size, 60)
            if model not in ("new", "original"):
                epochs = 0
            key = (args.target, size, model, epochs)
            if key in done:
                log(f"skip {key}: in {out}")
                continue
            log(f"fit {model} on {size} ({args.target}, {epochs} epochs)")
            t0 = time.perf_counter()
            if epochs:
                est = cgcnn(model, epochs)
                if args.curve:
                    est.set_params(callbacks=[("val_mae", epoch_mae(graphs[val], y[val]))])
                est.fit(graphs[train], y[train])
                fit_s = time.perf_counter() - t0
                pred = est.predict(graphs[test]).reshape(-1)
                if args.curve:
                    curve = pd.DataFrame({k: est.history[:, k] for k in
                                          ("epoch", "train_loss", "val_mae", "dur")})
                    curve.to_csv(work / f"curve_{args.target}_{size}_{model}_{epochs}.csv",
                                 index=False)
            else:
                from skcgcnn.baselines import make_baseline

                features = np.load(work / f"features_{model}.npy")
                est = make_baseline(model, n_jobs=args.threads, random_state=SEED)
                est = est[1:]  # the descriptors were computed once, in prepare
                est.fit(features[train], y[train])
                fit_s = time.perf_counter() - t0
                pred = est.predict(features[test])
            row = {"target": args.target, "size": size, "model": model, "epochs": epochs,
                   "test_mae": mean_absolute_error(y[test], pred), "n_test": len(test),
                   "fit_s": round(fit_s, 1), "threads": args.threads}
            append_row(out, row)
            log(json.dumps(row))


# -- the recipe search: candidates on one training size, scored on the validation rows ---
_LOSS_NAMES = {"mse": "squared_error", "huber": "huber", "l1": "absolute_error"}
SEARCH = {"original": ("original", {})}
for _lr, _batch, _schedule, _loss in [
        ("1e-3", 64, "onecycle", "mse"), ("3e-3", 64, "onecycle", "mse"),
        ("3e-3", 64, "onecycle", "huber"), ("3e-3", 64, "onecycle", "l1"),
        ("3e-3", 64, "cosine", "huber"), ("3e-3", 128, "onecycle", "huber"),
        ("1e-2", 64, "onecycle", "huber"),
        # second round, around the first round's best (lr 1e-2)
        ("1e-2", 64, "onecycle", "l1"), ("1e-2", 64, "cosine", "l1"),
        ("1e-2", 128, "onecycle", "l1")]:
    SEARCH[f"adamw-{_lr}-b{_batch}-{_schedule}-{_loss}"] = ("new", dict(
        optimizer="adamw", lr=float(_lr), batch_size=_batch, lr_schedule=_schedule,
        loss=_LOSS_NAMES[_loss]))


def search(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    rows, graphs = load_prepared(work)
    names = [str(n) for n in rows["names"]]
    classify = args.task == "metal"  # band gap 0 (metal) or not: the classifier's recipe
    y = rows["y"][:, names.index("band_gap" if classify else "e_form")]
    if classify:
        y = (y > 0).astype(int)
    train, val = rows["train"][:args.size], rows["val"]
    out = work / ("search_metal.csv" if classify else "search.csv")
    done = set(pd.read_csv(out)["candidate"]) if out.exists() else set()
    for name in args.candidates or list(SEARCH):
        if name in done:
            continue
        recipe, params = SEARCH[name]
        params = {"optimizer__momentum": 0.9, **params} if recipe == "original" else params
        if recipe == "new":  # every candidate spelled out, not the defaults of the day
            params = {"optimizer__weight_decay": 0.01, "warmup_fraction": 0.1, **params}
        if classify:
            from skcgcnn.estimators import ORIGINAL_CLASSIFIER_RECIPE, CGCNNClassifier

            params.pop("loss", None)
            base = dict(ORIGINAL_CLASSIFIER_RECIPE) if recipe == "original" else {}
            est = CGCNNClassifier(**{**base, "max_epochs": args.epochs, "random_state": SEED,
                                     **params})
        else:
            est = cgcnn(recipe, args.epochs, **params)
        t0 = time.perf_counter()
        est.fit(graphs[train], y[train])
        fit_s = time.perf_counter() - t0
        row = {"candidate": name, "size": args.size, "epochs": args.epochs}
        if classify:
            from sklearn.metrics import accuracy_score, roc_auc_score

            proba = est.predict_proba(graphs[val])[:, 1]
            row.update(val_roc_auc=float(roc_auc_score(y[val], proba)),
                       val_accuracy=float(accuracy_score(y[val], proba > 0.5)))
        else:
            pred = est.predict(graphs[val]).reshape(-1)
            row["val_mae"] = float(np.mean(np.abs(pred - y[val])))
        row.update(fit_s=round(fit_s, 1),
                   final_train_loss=float(est.history[-1, "train_loss"]))
        append_row(out, row)
        log(json.dumps(row))


# -- report: the table and the log-log plot -------------------------------------------
LABELS = {"new": "CGCNN, default recipe", "original": "CGCNN, 2018 recipe",
          "magpie-rf": "magpie-rf", "structure-gb": "structure-gb"}


def report(args) -> None:
    work = Path(args.work_dir)
    table = pd.read_csv(work / "results.csv")
    lines = []
    for target, part in table.groupby("target", sort=False):
        wide = part.pivot_table(index="size", columns="model", values="test_mae",
                                aggfunc="last")
        epochs = part[part["epochs"] > 0].groupby("size")["epochs"].max()
        models = [m for m in LABELS if m in wide.columns]
        lines.append(f"Test MAE, {TARGETS[target]}, on the same {int(part['n_test'].iloc[0])} "
                     "test crystals:\n")
        head = ["training crystals", "epochs"] + [LABELS[m] for m in models]
        if {"new", "original"} <= set(models):
            head.append("default / 2018")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for size, row in wide.iterrows():
            best = row[models].min()
            cells = [f"{size:,}", str(int(epochs.get(size, 0)))]
            cells += [("**%.3f**" if row[m] == best else "%.3f") % row[m]
                      if pd.notna(row[m]) else "" for m in models]
            if {"new", "original"} <= set(models):
                cells.append(f"{row['new'] / row['original']:.2f}"
                             if pd.notna(row["new"]) and pd.notna(row["original"]) else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.png:
        plot(table[table["target"] == "e_form"], args.png)
    for path in sorted(work.glob("curve_*.csv")):
        curve = pd.read_csv(path)
        best = curve["val_mae"].idxmin()
        print(f"{path.name}: {len(curve)} epochs, validation MAE {curve['val_mae'].iloc[-1]:.4f} "
              f"at the end (best {curve['val_mae'][best]:.4f} at epoch {best + 1}); "
              f"{curve['dur'].median():.1f} s per epoch (median)")
        if args.curve_png:
            plot_curve(curve, args.curve_png)


def plot_curve(curve: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(curve["epoch"], curve["val_mae"], "-", label="validation MAE (eV/atom)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MAE, E_form (eV/atom)")
    ax.set_title(f"default recipe, {len(curve)} epochs on 22,043 MP crystals")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for model, style in zip(LABELS, ("o-", "s--", "^:", "v:")):
        part = table[table["model"] == model].drop_duplicates("size", keep="last")
        part = part.sort_values("size")
        if len(part):
            ax.plot(part["size"], part["test_mae"], style, label=LABELS[model])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training crystals")
    ax.set_ylabel(f"test MAE, {TARGETS['e_form']}")
    ax.set_title("MP formation energy, fixed 60/20/20 split")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work-dir", default="results/bench_recipe")
    parser.add_argument("--n-jobs", type=int, default=1)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare")
    p = sub.add_parser("run")
    p.add_argument("--sizes", default="500,2000,5000,22043",
                   type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--models", default="new,original,magpie-rf,structure-gb",
                   type=lambda s: s.split(","))
    p.add_argument("--target", default="e_form", choices=list(TARGETS))
    p.add_argument("--epochs", type=int, default=None,
                   help="CGCNN epochs (default: EPOCHS of the size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--curve", action="store_true",
                   help="record the validation MAE of every epoch")
    p = sub.add_parser("search")
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", choices=("e_form", "metal"), default="e_form",
                   help="regression of E_form, or metal / non-metal classification")
    p.add_argument("--candidates", type=lambda s: s.split(","), default=None,
                   help=f"some of {list(SEARCH)}")
    p = sub.add_parser("report")
    p.add_argument("--png", help="the log-log learning-curve plot")
    p.add_argument("--markdown", help="write the tables here too")
    p.add_argument("--curve-png", help="the validation curve of the --curve run")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    elif args.command == "run":
        run(args)
    elif args.command == "search":
        search(args)
    elif args.command == "report":
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
