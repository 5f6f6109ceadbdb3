"""
A small Optuna study
====================

:func:`skcgcnn.tuning.tune` runs an Optuna study over CGCNN's hyper-parameters: the
atom-feature set, the depth and widths of the network, the optimiser and learning rate,
and the graph parameters. Trials are pruned on the validation MAE, graphs are built once
per graph-parameter set, and the study can live in a database shared by many workers
(see :doc:`/tuning`).

**Small settings:** 200 crystals of ``sample-500`` (160 to train, 40 to validate), 8
trials of 8 epochs, a search space narrowed to two feature sets and one to three
convolutions, the study kept in memory. A real study (2,000 crystals, 40 trials) is
described in :doc:`/tuning` with its stored results.
"""

# %%
import tempfile
from pathlib import Path

from skcgcnn.datasets import load_cgcnn_folder
from skcgcnn.tuning import SearchSpace, tune

# sphinx_gallery_start_ignore
if "__file__" not in globals():  # sphinx-gallery runs examples in their folder
    __file__ = str(Path.cwd() / "optuna_study.py")
# sphinx_gallery_end_ignore
FOLDER = (Path(__file__).resolve().parents[2] / "shared" / "data" /
          "mp-formation-energy-36737" / "sample-500")
OUT = Path(tempfile.mkdtemp(prefix="skcgcnn-tune-"))

data = load_cgcnn_folder(FOLDER, limit=200)
space = SearchSpace(atom_features=("cgcnn", "onehot"), n_conv=(1, 3), atom_fea_len=32,
                    h_fea_len=64, n_h=1, conv="gated", batch_size=32, radius=8.0,
                    max_num_nbr=12)
result = tune(data["structure"], data["target"], space=space, n_trials=8, max_epochs=8,
              storage=":memory:", output_dir=OUT, refit=False, baselines=["dummy"],
              verbose=0)

# %%
# The best trial, and the reference
# ---------------------------------
print(f"best validation MAE {result.best_value:.3f} eV/atom "
      f"(predicting the mean: {result.baselines['dummy']:.3f})")
print("best parameters:", result.best_params)
result.trials.head(8)
