"""Cross-validate CGCNN on Materials Project formation energies, building graphs once.

    python examples/cross_validation.py [CGCNN_FOLDER] [--epochs 30]

CGCNN_FOLDER defaults to ../shared/data/mp-formation-energy-36737/sample-500.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from skcgcnn import CGCNNRegressor, StructureGraphTransformer
from skcgcnn.datasets import load_cgcnn_folder
from skcgcnn.estimators import make_cgcnn_pipeline

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "mp-formation-energy-36737" / "sample-500"

parser = argparse.ArgumentParser()
parser.add_argument("folder", nargs="?", default=str(DEFAULT))
parser.add_argument("--epochs", type=int, default=30)
args = parser.parse_args()

data = load_cgcnn_folder(args.folder)
structures, y = data["structure"], data["target"].to_numpy()
cv = KFold(5, shuffle=True, random_state=0)

# 1. build the graphs once, cross-validate the regressor on them
start = time.perf_counter()
graphs = StructureGraphTransformer().fit_transform(structures)
scores = cross_val_score(CGCNNRegressor(max_epochs=args.epochs, batch_size=64, random_state=0),
                         graphs, y, cv=cv, scoring="neg_mean_absolute_error")
print(f"5-fold MAE {-scores.mean():.3f} ± {scores.std():.3f} eV/atom "
      f"({time.perf_counter() - start:.0f} s)")

# 2. the whole Pipeline in a grid search; memory= caches each fold's graphs
with tempfile.TemporaryDirectory() as cache:
    pipe = make_cgcnn_pipeline(memory=cache, max_epochs=args.epochs, batch_size=64,
                               random_state=0)
    search = GridSearchCV(pipe, {"cgcnn__module__n_conv": [2, 3]}, cv=3,
                          scoring="neg_mean_absolute_error")
    search.fit(structures, y)
    print("best:", search.best_params_, f"MAE {-search.best_score_:.3f} eV/atom")
    print("predictions of the refit pipeline:", np.round(search.predict(structures[:3]), 3))
