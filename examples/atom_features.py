"""
Comparing atom-feature sets
===========================

The same network and graphs, with different vectors for the atoms: the 92 CGCNN
features, a one-hot encoding of the element, matminer's magpie properties and the
matscholar word embeddings (see :doc:`/graphs`). The neighbour lists are built once;
:meth:`~skcgcnn.graph.GraphCollection.with_atom_features` only swaps the feature table.

**Small settings:** 300 crystals of ``sample-500``, 225 for training and 75 held out,
15 epochs per model, one seed. Differences this small are within the noise; the page
shows how to run the comparison, not which set wins.
"""

# %%
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from skcgcnn import CGCNNRegressor, StructureGraphTransformer, get_atom_features
from skcgcnn.datasets import load_cgcnn_folder
from skcgcnn.reporting import plot_bars, regression_metrics

N_CRYSTALS, EPOCHS = 300, 15
# sphinx_gallery_start_ignore
if "__file__" not in globals():  # sphinx-gallery runs examples in their folder
    __file__ = str(Path.cwd() / "atom_features.py")
# sphinx_gallery_end_ignore
FOLDER = (Path(__file__).resolve().parents[2] / "shared" / "data" /
          "mp-formation-energy-36737" / "sample-500")
OUT = Path(tempfile.mkdtemp(prefix="skcgcnn-atom-features-"))

data = load_cgcnn_folder(FOLDER, limit=N_CRYSTALS)
y = data["target"].to_numpy()
graphs = StructureGraphTransformer().fit_transform(data["structure"])
train, test = train_test_split(np.arange(len(y)), test_size=75, random_state=0)

# %%
# One model per feature set
# -------------------------
mae = {}
for name in ("cgcnn", "onehot", "magpie", "matscholar"):
    table = get_atom_features(name)
    start = time.perf_counter()
    swapped = graphs.with_atom_features(table)
    model = CGCNNRegressor(max_epochs=EPOCHS, batch_size=32, random_state=0)
    model.fit(swapped[train], y[train])
    mae[name] = regression_metrics(y[test], model.predict(swapped[test]))["mae"]
    print(f"{name:10s} {table.n_features:3d} features  test MAE {mae[name]:.3f} eV/atom "
          f"({time.perf_counter() - start:.0f} s)")
plot_bars(mae, OUT / "atom_features.png", label="test MAE (eV/atom)",
          title=f"{len(train)} training crystals, {EPOCHS} epochs")
