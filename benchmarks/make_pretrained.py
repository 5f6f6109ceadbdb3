"""Train and package the pretrained models shipped in ``skcgcnn/pretrained`` (issue 26).

Every model is trained by ``skcgcnn train`` on the training rows of one fixed split of
``mp-formation-energy-36737``: bench_recipe.py's 60/20/20 split
(``train_val_test_split``, seed 0; 22,043 / 7,347 / 7,347 crystals), so its test rows
stay unseen by the shipped models and by what is fine-tuned from them.  The validation
rows choose the kept epoch; the test rows give the recorded metrics.

Usage::

    python benchmarks/make_pretrained.py split runs/split_bench_recipe.csv
    python benchmarks/make_pretrained.py train mp-formation-energy --output-dir runs/fe
        # prints and runs the skcgcnn train command (killed: `skcgcnn train --resume DIR`)
    python benchmarks/make_pretrained.py export mp-formation-energy runs/fe

``export`` copies the run's model.pt into the package with its model card completed
(description, target and unit, SHA-256 of the data files, the split and its digest,
the recipe, validation and test metrics, training time) and predictions of the
sample-500 crystals that are test rows, which tests/test_pretrained.py reproduces; it
writes the split (gzip CSV) and updates ``skcgcnn/pretrained/index.json``.  Run it with
the test suite's numpy kernels (``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL
AVX512_SPR"``, as ``make test``): they decide ties at the 12-neighbour cut, so the
recorded predictions are those the tests reproduce.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skcgcnn.pretrained import _sha256 as sha256  # the check load_pretrained makes

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "skcgcnn" / "pretrained"
DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
DATASET = "mp-formation-energy-36737"
SPLIT_FILE = f"{DATASET}.split.csv.gz"
MAX_BYTES = 2 * 1024 * 1024

#: What each shipped model is: its target column of id_prop_multi.csv, unit, epochs.
MODELS = {
    "mp-formation-energy": {
        "target": "e_form", "unit": "eV/atom", "epochs": 300,
        "label": "formation energy per atom (eV/atom)",
        "description": "CGCNN, the default recipe, trained on the formation energy per "
                       "atom of 22,043 Materials Project crystals (PBE/PBE+U, MP release "
                       "of about 2018)"},
    "mp-band-gap": {
        "target": "band_gap", "unit": "eV", "epochs": 150,
        "label": "band gap (eV)",
        "description": "CGCNN, the default recipe, trained on the PBE band gap of 22,043 "
                       "Materials Project crystals (MP release of about 2018)"},
}
TARGET_NAMES = ["e_form", "band_gap", "efermi", "volume", "magnetization"]


def make_split(args) -> None:
    """bench_recipe.py's split (its ``prepare``), as the id,split CSV train reads."""
    from skcgcnn.model_selection import split_sizes, train_val_test_split

    table = pd.read_csv(DATA / "id_prop_multi.csv", header=None)
    train, val, test = train_val_test_split(
        table[1].to_numpy(float), split_sizes(len(table), val_ratio=0.2, test_ratio=0.2),
        random_state=0)
    split = pd.DataFrame({"id": table[0].astype(str), "split": "train"})
    split.loc[val, "split"] = "val"
    split.loc[test, "split"] = "test"
    split.to_csv(args.out, index=False)
    print(f"wrote {args.out}: {split['split'].value_counts().to_dict()}")


def train_command(name: str, split: str, output_dir: str, epochs: int | None) -> list[str]:
    spec = MODELS[name]
    command = ["skcgcnn", "train", str(DATA), "--id-prop", "id_prop_multi.csv",
               "--target", f"target_{TARGET_NAMES.index(spec['target'])}", "--split", split,
               "--epochs", str(epochs or spec["epochs"]), "--device", "cpu",
               "--random-state", "0", "--target-label", spec["label"],
               "--output-dir", output_dir]
    return command


def train(args) -> None:
    command = train_command(args.name, args.split, args.output_dir, args.epochs)
    print(shlex.join(command), flush=True)
    if not args.dry_run:  # this interpreter's skcgcnn, whatever is on PATH
        sys.exit(subprocess.call([sys.executable, "-m", "skcgcnn", *command[1:]]))


def _recorded_predictions(pipe, split: pd.DataFrame) -> dict:
    """Predictions of the sample-500 crystals that are test rows (for the tests)."""
    from skcgcnn.datasets import load_cgcnn_folder

    sample = load_cgcnn_folder(DATA / "sample-500", cache=False)
    test_ids = set(split.loc[split["split"] == "test", "id"])
    keep = [str(i) in test_ids for i in sample.index]
    rows = sample[keep]
    pred = np.asarray(pipe.predict(rows["structure"]), dtype=float).reshape(len(rows), -1)
    return {"source": "mp-formation-energy-36737/sample-500, its test rows",
            "ids": [str(i) for i in rows.index], "predictions": pred[:, 0].tolist()}


def export(args) -> None:
    import os

    import torch

    if "AVX512" not in os.environ.get("NPY_DISABLE_CPU_FEATURES", ""):
        raise SystemExit('export with the tests\' numpy kernels: NPY_DISABLE_CPU_FEATURES='
                         '"X86_V4 AVX512_ICL AVX512_SPR" python benchmarks/make_pretrained.py '
                         'export ...')

    from skcgcnn.estimators import load_model
    from skcgcnn.estimators._card import ids_digest

    spec = MODELS[args.name]
    run = Path(args.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    split = pd.read_csv(run / "split.csv", dtype={"id": str, "split": str})
    payload = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    pipe = load_model(run / "model.pt")
    buffer = io.StringIO()
    split.to_csv(buffer, index=False)
    PACKAGE.mkdir(parents=True, exist_ok=True)
    split_path = PACKAGE / SPLIT_FILE
    if split_path.exists():
        with gzip.open(split_path, "rt", encoding="utf-8") as fh:
            if fh.read() != buffer.getvalue():
                raise SystemExit(f"{run} was trained on another split than {split_path}")
    else:
        with gzip.GzipFile(split_path, "wb", mtime=0) as fh:
            fh.write(buffer.getvalue().encode())
    history = json.loads((run / "history.json").read_text())
    card = dict(payload["card"])
    card.update({
        "name": args.name,
        "description": spec["description"],
        "target_names": [spec["target"]], "target_units": [spec["unit"]],
        "target_label": spec["label"],
        "dataset": {"name": DATASET,
                    "files": {f: sha256(DATA / f) for f in ("cifs.tar.gz", "id_prop.csv",
                                                            "id_prop_multi.csv")},
                    "target_column": TARGET_NAMES.index(spec["target"]) + 1},
        "split": {"file": SPLIT_FILE, "sha256": sha256(split_path),
                  "method": "skcgcnn.model_selection.train_val_test_split(y, "
                            "split_sizes(36737, val_ratio=0.2, test_ratio=0.2), "
                            "random_state=0) on the e_form column",
                  **{f"n_{k}": int((split["split"] == k).sum())
                     for k in ("train", "val", "test")},
                  **{f"{k}_ids_digest": ids_digest(split.loc[split["split"] == k, "id"])
                     for k in ("train", "val", "test")}},
        "training_run": {key: metrics[key] for key in (
            "epochs", "epochs_trained", "best_epoch", "valid", "fit_seconds", "network",
            "optimizer", "graph_params", "resumed_after_epoch") if key in metrics},
        "epoch_seconds_total": round(float(sum(h["dur"] for h in history)), 1),
        "test_metrics": metrics["test"], "n_test": metrics["n_test"],
        "recorded_predictions": _recorded_predictions(pipe, split),
    })
    payload["card"] = card
    out = PACKAGE / f"{args.name}.pt"
    torch.save(payload, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size} bytes, over the {MAX_BYTES} shipped at most")
    index_path = PACKAGE / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": {}}
    index["models"][args.name] = {
        "file": out.name, "sha256": sha256(out), "split_file": SPLIT_FILE,
        "target": spec["label"], "unit": spec["unit"],
        "training_crystals": card["split"]["n_train"],
        "test_metrics": metrics["test"], "description": spec["description"]}
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({size / 1024:.0f} kB), test {metrics['test']}, "
          f"{len(card['recorded_predictions']['ids'])} recorded predictions")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="write bench_recipe.py's split as id,split")
    p.add_argument("out")
    p.set_defaults(func=make_split)
    p = sub.add_parser("train", help="train one of the shipped models (skcgcnn train)")
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("--split", default="runs/split_bench_recipe.csv")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=train)
    p = sub.add_parser("export", help="package a finished run into skcgcnn/pretrained")
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("run_dir")
    p.set_defaults(func=export)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
