"""Fine-tuning the formation-energy model for other targets, at small training sizes
(issue 26): fine-tuned CGCNN against CGCNN from scratch and the descriptor baselines.

The rows are those of one split of ``mp-formation-energy-36737``, the split the
pretrained model was made on (``--split``: by default, for a shipped model's name,
``skcgcnn.pretrained.pretrained_split``; else an ``id,split`` CSV such as
``runs/split_bench_recipe.csv``):

- training subsets: the first N (every N of ``--sizes``) of a seeded permutation of the
  split's train rows, so the subsets are nested;
- test rows: one seeded subset of ``--n-test`` of the split's test rows, which the
  pretrained model never saw, the same for every model, size and run;
- validation rows, which choose the fine-tuning settings when ``--grid`` has several:
  the last ``--n-val`` rows of the permutation (train rows, in no training subset).

Models (``--models``), fitted on each subset of each target of ``--targets`` and scored
on the test rows:

- ``finetuned``: ``CGCNNRegressor(init=INIT, freeze=..., init_lr_factor=...)`` with the
  default recipe, on graphs built by the pretrained pipeline's own transformer. Every
  candidate of ``--grid`` (``freeze:init_lr_factor``) is fitted and scored on the
  validation rows (``select.csv``); the one with the lowest validation MAE is scored on
  the test rows. ``--grid none:1`` is the estimator's defaults alone.
- ``scratch``: ``CGCNNRegressor()`` with the default recipe and the same epochs, on the
  default graphs.
- ``structure-gb``, ``magpie-rf``: ``skcgcnn.baselines.make_baseline``; their
  descriptors are computed once per crystal and kept in ``--work-dir``.

Epochs are those of ``EPOCHS`` for each size (``--epochs`` sets one number for all).
Every result is appended to ``results.csv`` in ``--work-dir``; a rerun skips what is
there, so a killed run resumes. ``report`` writes the table (markdown) and the plot of
test MAE against training size, one panel per target.

Usage::

    python benchmarks/bench_finetune.py run --init mp-formation-energy
    python benchmarks/bench_finetune.py run --init /tmp/ft_init.pt \\
        --split runs/split_bench_recipe.csv --sizes 100 --n-test 200 --epochs 5
    python benchmarks/bench_finetune.py report --markdown results/bench_finetune/table.md \\
        --png docs/_static/finetune_curve.png
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_recipe import DEFAULT_DATA, append_row, done_keys, log  # benchmarks/ is on sys.path

#: The columns of id_prop_multi.csv, and the label of each target this script fits.
COLUMNS = ["e_form", "band_gap", "efermi", "volume", "magnetization"]
TARGETS = {"band_gap": "band gap (eV)", "efermi": "Fermi energy (eV)",
           "magnetization": "total magnetization (μB/cell)"}
MODELS = ("finetuned", "scratch", "structure-gb", "magpie-rf")
LABELS = {"finetuned": "CGCNN, fine-tuned", "scratch": "CGCNN, from scratch",
          "structure-gb": "structure-gb", "magpie-rf": "magpie-rf"}
#: Epochs of both CGCNN models at each training size (bench_recipe's, 1,000 between);
#: other sizes take the nearest size's.
EPOCHS = {500: 200, 1000: 150, 2000: 100}
#: Fine-tuning candidates, freeze:init_lr_factor ("none": train every layer).
GRID = "none:1,none:0.1,embedding:1,conv:1"
SEED = 0


def epochs_of(size: int, epochs: int | None) -> int:
    if epochs:
        return epochs
    return EPOCHS[min(EPOCHS, key=lambda known: abs(np.log(known / size)))]


def parse_grid(text: str) -> list[tuple[str, str | None, float]]:
    """``"none:1,conv:0.1"`` -> [(candidate, freeze, init_lr_factor), ...]."""
    out = []
    for item in text.split(","):
        freeze, _, factor = item.strip().partition(":")
        if freeze not in ("none", "embedding", "conv") or not factor:
            raise SystemExit(f"--grid item {item!r}: use freeze:factor with freeze none, "
                             "embedding or conv, e.g. none:1")
        out.append((f"{freeze}:{factor}", None if freeze == "none" else freeze,
                    float(factor)))
    return out


# -- rows: the split, the nested training subsets, the test and validation rows --------
def choose_rows(split: pd.DataFrame, sizes: list[int], n_test: int, n_val: int
                ) -> dict[str, list[str]]:
    """Ids of the permuted train rows (``order``), of the test and validation rows."""
    from skcgcnn.datasets import sample_rows

    split = split.astype({"id": str, "split": str})
    train = split.loc[split["split"] == "train", "id"].to_numpy()
    test = split.loc[split["split"] == "test", "id"].to_numpy()
    order = np.random.default_rng(SEED).permutation(train)
    keep = sample_rows(len(test), n_test, SEED)
    test = test if keep is None else test[keep]
    val = order[len(order) - n_val:] if n_val else order[:0]
    if max(sizes) > len(order) - n_val:
        raise SystemExit(f"the largest size {max(sizes)} and the {n_val} validation rows "
                         f"need more than the {len(order)} train rows of the split")
    return {"order": list(order[:max(sizes)]), "test": list(test), "val": list(val)}


def read_split(args) -> pd.DataFrame:
    if args.split:
        return pd.read_csv(args.split, dtype={"id": str, "split": str})
    from skcgcnn.pretrained import is_pretrained_name, pretrained_split

    if not is_pretrained_name(args.init):
        raise SystemExit(f"--init {args.init} is no shipped model's name: give the split it "
                         "was trained on with --split FILE")
    return pretrained_split(args.init)


def check_work_dir(work: Path, init: str, init_file: Path, rows: dict) -> None:
    """One work folder holds the results of one pretrained model on one set of rows: a
    rerun with another model, other test or validation rows or other training subsets
    is refused (larger --sizes extend the subsets and are fine)."""
    digest = hashlib.sha256(init_file.read_bytes()).hexdigest()
    path = work / "rows.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["init_sha256"] != digest:
            raise SystemExit(f"{work} holds results of another model to fine-tune "
                             f"({old['init']}); use another --work-dir")
        for part in ("test", "val"):  # no validation rows: a run without --grid choice
            if old["rows"][part] != rows[part] and (part == "test" or
                                                     (rows[part] and old["rows"][part])):
                raise SystemExit(f"{work} holds results on other {part} rows (another "
                                 "--split, --n-test or --n-val); use another --work-dir")
        short, long = sorted((old["rows"]["order"], rows["order"]), key=len)
        if long[:len(short)] != short:
            raise SystemExit(f"{work} holds results of other training subsets (another "
                             "--split); use another --work-dir")
        rows = {"order": long, "test": rows["test"],
                "val": rows["val"] or old["rows"]["val"]}
        if rows == old["rows"]:
            return
    path.write_text(json.dumps({"init": init, "init_sha256": digest, "rows": rows}) + "\n")


def init_file(init: str) -> Path:
    from skcgcnn.pretrained import is_pretrained_name, list_pretrained, pretrained_path

    if is_pretrained_name(init):
        return pretrained_path(init)
    if not Path(init).is_file():
        raise SystemExit(f"--init {init}: no such file, nor a pretrained model's name "
                         f"(shipped: {', '.join(list_pretrained()) or 'none'})")
    return Path(init)


# -- inputs: structures, graphs and cached descriptors ---------------------------------
def load_rows(data: str, ids: list[str], n_jobs: int | None) -> pd.DataFrame:
    from skcgcnn.datasets import load_cgcnn_folder

    t0 = time.perf_counter()
    df = load_cgcnn_folder(data, id_prop="id_prop_multi.csv", target_names=COLUMNS,
                           ids=ids, missing_target="nan", n_jobs=n_jobs, cache=True)
    log(f"{len(df)} structures read in {time.perf_counter() - t0:.0f} s")
    return df


def cached_features(work: Path, name: str, structures: pd.Series, n_jobs: int | None
                    ) -> np.ndarray:
    """The descriptors of ``name``'s featurizer for ``structures``, in their order; those
    of crystals not in ``features_<name>.npz`` yet are computed and added to it."""
    from skcgcnn.baselines import make_baseline

    path = work / f"features_{name}.npz"
    ids, table = np.array([], dtype=str), None
    if path.exists():
        with np.load(path) as saved:
            ids, table = saved["ids"], saved["features"]
    known = {ident: i for i, ident in enumerate(ids)}
    missing = [ident for ident in structures.index if ident not in known]
    if missing:
        t0 = time.perf_counter()
        featurize = make_baseline(name, n_jobs=n_jobs).steps[0][1]
        new = np.asarray(featurize.fit_transform(structures.loc[missing]), dtype=float)
        table = new if table is None else np.vstack([table, new])
        ids = np.concatenate([ids, np.asarray(missing, dtype=str)])
        np.savez(path, ids=ids, features=table)
        known = {ident: i for i, ident in enumerate(ids)}
        log(f"{name} descriptors of {len(missing)} crystals in "
            f"{time.perf_counter() - t0:.0f} s")
    return table[[known[ident] for ident in structures.index]]


class Inputs:
    """The graphs (fine-tuning's and the default ones) and descriptors of the rows, and
    their positions by id."""

    def __init__(self, df: pd.DataFrame, transformer, models, work: Path, n_jobs):
        from skcgcnn.transformers import StructureGraphTransformer

        self.df = df
        self.position = {ident: i for i, ident in enumerate(df.index)}
        t0 = time.perf_counter()
        self.graphs = {}
        if "scratch" in models:
            self.graphs["scratch"] = StructureGraphTransformer().fit_transform(df["structure"])
        if "finetuned" in models:
            self.graphs["finetuned"] = transformer.fit_transform(df["structure"])
        log(f"graphs of {len(df)} crystals in {time.perf_counter() - t0:.0f} s")
        self.features = {name: cached_features(work, name, df["structure"], n_jobs)
                         for name in models if name in ("structure-gb", "magpie-rf")}

    def rows(self, ids: list[str], y: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` whose target is known."""
        pos = np.array([self.position[ident] for ident in ids], dtype=np.intp)
        return pos[np.isfinite(y[pos])]


# -- fitting --------------------------------------------------------------------------
def cgcnn(epochs: int, **params):
    from skcgcnn.estimators import CGCNNRegressor

    return CGCNNRegressor(max_epochs=epochs, random_state=SEED, device="cpu", **params)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(a).reshape(-1) - np.asarray(b).reshape(-1))))


def fit_baseline(name: str, inputs: Inputs, train, y, n_jobs):
    from skcgcnn.baselines import make_baseline

    est = make_baseline(name, n_jobs=n_jobs, random_state=SEED)[1:]  # descriptors: cached
    return est.fit(inputs.features[name][train], y[train])


def fit_finetuned(target: str, size: int, epochs: int, init: str, inputs: Inputs,
                  train, val, y, grid, select_csv: Path):
    """Fit every candidate of ``grid``, record its validation MAE in ``select_csv``, and
    return the chosen one, fitted, with its row of settings."""
    graphs = inputs.graphs["finetuned"]
    done = pd.read_csv(select_csv) if select_csv.exists() else pd.DataFrame(
        columns=["target", "size", "epochs", "candidate", "val_mae"])
    done = done[(done["target"] == target) & (done["size"] == size)
                & (done["epochs"] == epochs)]
    scores = dict(zip(done["candidate"], done["val_mae"]))
    fitted = {}
    for name, freeze, factor in grid:
        if name in scores or len(grid) == 1:
            continue
        t0 = time.perf_counter()
        est = cgcnn(epochs, init=init, freeze=freeze, init_lr_factor=factor)
        est.fit(graphs[train], y[train])
        scores[name] = mae(est.predict(graphs[val]), y[val])
        fitted[name] = (est, time.perf_counter() - t0)
        append_row(select_csv, {"target": target, "size": size, "epochs": epochs,
                                "candidate": name, "val_mae": scores[name],
                                "n_val": len(val), "fit_s": round(fitted[name][1], 1)})
        log(f"  finetuned {name}: validation MAE {scores[name]:.4f}")
    best = grid[0][0] if len(grid) == 1 else min(
        (name for name, _, _ in grid), key=lambda name: scores[name])
    _, freeze, factor = next(item for item in grid if item[0] == best)
    if best not in fitted:  # resumed, or the one candidate: fit it (the same seed)
        t0 = time.perf_counter()
        est = cgcnn(epochs, init=init, freeze=freeze, init_lr_factor=factor)
        est.fit(graphs[train], y[train])
        fitted[best] = (est, time.perf_counter() - t0)
    est, fit_s = fitted[best]
    return est, fit_s, {"freeze": freeze or "none", "init_lr_factor": factor,
                        "val_mae": scores.get(best, np.nan),
                        "n_val": len(val) if len(grid) > 1 else 0}


def run(args) -> None:
    from skcgcnn.pretrained import finetune_pipeline

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = args.models
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown --models {unknown}; choose from {list(MODELS)}")
    grid = parse_grid(args.grid)
    n_val = args.n_val if "finetuned" in models and len(grid) > 1 else 0
    rows = choose_rows(read_split(args), args.sizes, args.n_test, n_val)
    check_work_dir(work, args.init, init_file(args.init), rows)
    transformer = finetune_pipeline(args.init)[0]  # the pretrained model's graph step
    needed = list(dict.fromkeys(rows["order"] + rows["val"] + rows["test"]))
    inputs = Inputs(load_rows(args.data, needed, args.n_jobs), transformer, models, work,
                    args.n_jobs)
    out, select_csv = work / "results.csv", work / "select.csv"
    done = done_keys(out)
    for target in args.targets:
        y = inputs.df[target].to_numpy(dtype=float)
        test, val = inputs.rows(rows["test"], y), inputs.rows(rows["val"], y)
        order = inputs.rows(rows["order"], y)
        for size in args.sizes:
            train = order[:size]
            for model in models:
                epochs = epochs_of(size, args.epochs) if model in ("finetuned", "scratch") \
                    else 0
                if (target, size, model, epochs) in done:
                    log(f"skip {target} {size} {model}: in {out}")
                    continue
                log(f"fit {model} on {size} crystals ({target}, {epochs} epochs)")
                # every row has every column: append_row writes the header once
                extra = {"freeze": "", "init_lr_factor": np.nan, "val_mae": np.nan,
                         "n_val": np.nan}
                t0 = time.perf_counter()
                if model == "finetuned":
                    est, fit_s, extra = fit_finetuned(target, size, epochs, args.init,
                                                      inputs, train, val, y, grid, select_csv)
                    pred = est.predict(inputs.graphs[model][test])
                elif model == "scratch":
                    est = cgcnn(epochs).fit(inputs.graphs[model][train], y[train])
                    fit_s = time.perf_counter() - t0
                    pred = est.predict(inputs.graphs[model][test])
                else:
                    est = fit_baseline(model, inputs, train, y, args.n_jobs)
                    fit_s = time.perf_counter() - t0
                    pred = est.predict(inputs.features[model][test])
                row = {"target": target, "size": size, "model": model, "epochs": epochs,
                       "test_mae": mae(pred, y[test]), "n_test": len(test),
                       "fit_s": round(fit_s, 1), "init": args.init, **extra}
                append_row(out, row)
                log(json.dumps(row))


# -- report: the table and the plot -------------------------------------------------
def below(a: float, b: float) -> str:
    """How far ``a`` is below ``b``, in per cent (negative: above)."""
    return f"{100 * (1 - a / b):.0f} %" if pd.notna(a) and pd.notna(b) else ""


def report_tables(table: pd.DataFrame) -> str:
    lines = []
    for target, part in table.groupby("target", sort=False):
        wide = part.pivot_table(index="size", columns="model", values="test_mae",
                                aggfunc="last")
        models = [m for m in MODELS if m in wide.columns]
        descriptors = [m for m in ("structure-gb", "magpie-rf") if m in models]
        ft = part[part["model"] == "finetuned"].drop_duplicates("size", keep="last")
        ft = ft.set_index("size")
        epochs = part[part["epochs"] > 0].groupby("size")["epochs"].max()
        lines.append(f"Test MAE, {TARGETS.get(target, target)}, on the same "
                     f"{int(part['n_test'].iloc[0]):,} test crystals:\n")
        head = ["training crystals", "epochs"] + [LABELS[m] for m in models]
        if "finetuned" in models and "scratch" in models:
            head.append("fine-tuned below scratch")
        if "finetuned" in models and descriptors:
            head.append("fine-tuned below the best descriptor model")
        if "freeze" in ft.columns and len(ft):
            head.append("fine-tuning (freeze, lr factor)")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for size, row in wide.iterrows():
            best = row[models].min()
            cells = [f"{size:,}", str(int(epochs.get(size, 0)))]
            cells += [("**%.3f**" if row[m] == best else "%.3f") % row[m]
                      if pd.notna(row[m]) else "" for m in models]
            if "finetuned" in models and "scratch" in models:
                cells.append(below(row["finetuned"], row["scratch"]))
            if "finetuned" in models and descriptors:
                cells.append(below(row["finetuned"], row[descriptors].min()))
            if "freeze" in ft.columns and len(ft):
                cells.append(f"{ft.loc[size, 'freeze']}, {ft.loc[size, 'init_lr_factor']:g}"
                             if size in ft.index else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if "finetuned" in models:
            n_val = int(ft["n_val"].max()) if "n_val" in ft and ft["n_val"].notna().any() \
                else 0
            chosen = (f"those of the lowest MAE on {n_val:,} validation crystals (training "
                      "rows in no subset), never the test rows" if n_val else "those given")
            lines.append("Below: 1 - fine-tuned MAE / the other's (negative: fine-tuned is "
                         f"worse). The fine-tuning settings are {chosen}.\n")
        if 500 in wide.index and {"finetuned", "scratch", "structure-gb"} <= set(models):
            row = wide.loc[500]
            gains = [1 - row["finetuned"] / row[m] for m in ("structure-gb", "scratch")]
            met = all(g >= 0.15 for g in gains)
            lines.append(f"Issue 26's target at 500 crystals (fine-tuned >= 15 % below both "
                         f"structure-gb and scratch): {'met' if met else 'not met'} "
                         f"({100 * gains[0]:.0f} % and {100 * gains[1]:.0f} %).\n")
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.0 * len(targets), 4.2),
                             squeeze=False)
    for ax, target in zip(axes[0], targets):
        part = table[table["target"] == target]
        for model, style in zip(MODELS, ("o-", "s--", "^:", "v:")):
            rows = part[part["model"] == model].drop_duplicates("size", keep="last")
            rows = rows.sort_values("size")
            if len(rows):
                ax.plot(rows["size"], rows["test_mae"], style, label=LABELS[model])
        sizes = sorted(set(part["size"]))
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("training crystals")
        ax.set_ylabel(f"test MAE, {TARGETS.get(target, target)}")
        ax.set_title(f"{TARGETS.get(target, target).split(' (')[0]}, "
                     f"{int(part['n_test'].iloc[0]):,} test crystals")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log(f"wrote {path}")


def report(args) -> None:
    table = pd.read_csv(Path(args.work_dir) / "results.csv")
    text = report_tables(table)
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    if args.png:
        plot(table, args.png)


def main(argv=None) -> int:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work-dir", default="results/bench_finetune")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="processes for CIF parsing and descriptors, trees of the forest")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--init", required=True,
                   help="the model to fine-tune: a pretrained name or a save_model file")
    p.add_argument("--split", help="id,split CSV of the rows INIT was made on (default: "
                                   "the shipped model's own split)")
    p.add_argument("--sizes", default="500,1000,2000", type=ints)
    p.add_argument("--targets", default="band_gap,efermi",
                   type=lambda s: s.split(","))
    p.add_argument("--models", default=",".join(MODELS), type=lambda s: s.split(","))
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=1000,
                   help="validation rows that choose among the --grid candidates")
    p.add_argument("--grid", default=GRID,
                   help=f"fine-tuning candidates freeze:init_lr_factor (default: {GRID})")
    p.add_argument("--epochs", type=int, default=None,
                   help="CGCNN epochs at every size (default: EPOCHS of the size)")
    p = sub.add_parser("report")
    p.add_argument("--png", help="the plot of test MAE against training size")
    p.add_argument("--markdown", help="write the tables here too")
    args = parser.parse_args(argv)
    if args.command == "run":
        unknown = [t for t in args.targets if t not in TARGETS]
        if unknown:
            parser.error(f"--targets {unknown}: choose from {list(TARGETS)}")
        run(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
