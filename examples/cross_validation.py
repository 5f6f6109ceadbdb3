"""
Pipeline and cross-validation
=============================

CGCNN inside scikit-learn's model selection: the crystal graphs are built once and the
regressor is cross-validated on them; then the whole Pipeline (structures in) goes into
a grid search, with ``memory=`` so that each fold's graphs are built only once.

**Small settings:** 240 of the 500 crystals of ``sample-500`` (Materials Project
formation energies), 3 folds, 15 epochs for cross-validation and 8 for the grid search.
Run ``python examples/cross_validation.py`` after raising them for real numbers.
"""

# %%
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict

from skcgcnn import CGCNNRegressor, StructureGraphTransformer
from skcgcnn.datasets import load_cgcnn_folder
from skcgcnn.estimators import make_cgcnn_pipeline
from skcgcnn.reporting import plot_parity, regression_metrics

N_CRYSTALS, EPOCHS, SEARCH_EPOCHS = 240, 15, 8
# sphinx_gallery_start_ignore
if "__file__" not in globals():  # sphinx-gallery runs examples in their folder
    __file__ = str(Path.cwd() / "cross_validation.py")
# sphinx_gallery_end_ignore
FOLDER = (Path(__file__).resolve().parents[2] / "shared" / "data" /
          "mp-formation-energy-36737" / "sample-500")
OUT = Path(tempfile.mkdtemp(prefix="skcgcnn-cv-"))

data = load_cgcnn_folder(FOLDER, limit=N_CRYSTALS)
structures, y = data["structure"], data["target"].to_numpy()
cv = KFold(3, shuffle=True, random_state=0)

# %%
# Graphs once, then cross-validation of the regressor
# ---------------------------------------------------
# The transformer learns nothing from the data (the graph depends on each crystal
# alone), so building the graphs of all crystals before splitting leaks nothing.
start = time.perf_counter()
graphs = StructureGraphTransformer().fit_transform(structures)
model = CGCNNRegressor(max_epochs=EPOCHS, batch_size=32, random_state=0)
pred = cross_val_predict(model, graphs, y, cv=cv)
metrics = regression_metrics(y, pred)
print(f"3-fold out-of-fold MAE {metrics['mae']:.3f} eV/atom "
      f"({time.perf_counter() - start:.0f} s)")
plot_parity({"out of fold": (y, pred)}, OUT / "parity.png", target="E_form (eV/atom)",
            title=f"3-fold CV, {N_CRYSTALS} crystals, {EPOCHS} epochs",
            text="MAE {mae:.3f}\nRMSE {rmse:.3f}\nR² {r2:.3f}".format(**metrics))

# %%
# The whole Pipeline in a grid search
# -----------------------------------
# :func:`~skcgcnn.estimators.make_cgcnn_pipeline` is
# ``Pipeline([("graph", StructureGraphTransformer()), ("cgcnn", CGCNNRegressor())])``;
# nested parameters use skorch's double underscore (``cgcnn__module__n_conv``).
with tempfile.TemporaryDirectory() as cache:
    pipe = make_cgcnn_pipeline(memory=cache, max_epochs=SEARCH_EPOCHS, batch_size=32,
                               random_state=0)
    search = GridSearchCV(pipe, {"cgcnn__module__n_conv": [1, 3]}, cv=2,
                          scoring="neg_mean_absolute_error")
    search.fit(structures, y)
    print("best:", search.best_params_, f"MAE {-search.best_score_:.3f} eV/atom")
    print("the refit pipeline predicts structures:",
          np.round(search.predict(structures[:3]), 3))
