"""Predict with the original CGCNN's published checkpoints, as its predict.py did.

    python examples/pretrained.py [CHECKPOINT] [CGCNN_FOLDER]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from skcgcnn import load_cgcnn_checkpoint
from skcgcnn.datasets import load_cgcnn_folder

shared = Path(__file__).resolve().parents[2] / "shared" / "data"
checkpoint = sys.argv[1] if len(sys.argv) > 1 else \
    shared / "cgcnn-reference" / "pre-trained" / "formation-energy-per-atom.pth.tar"
folder = sys.argv[2] if len(sys.argv) > 2 else \
    shared / "mp-formation-energy-36737" / "sample-500"

pipe = load_cgcnn_checkpoint(checkpoint)   # trusted=True for the classification file
data = load_cgcnn_folder(folder)
pred = pipe.predict(data["structure"])
print(f"{len(pred)} crystals, MAE {np.abs(pred - data['target'].to_numpy()).mean():.4f}")
for ident, value in list(zip(data.index, pred))[:5]:
    print(ident, round(float(value), 4))
