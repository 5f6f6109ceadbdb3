"""
CGCNN against descriptor baselines
==================================

:func:`skcgcnn.benchmark.run_benchmark` fits every model on the same cross-validation
folds and writes a table, per-fold numbers, out-of-fold predictions, parity plots and an
MAE bar chart, as ``skcgcnn benchmark`` does from the command line (see
:doc:`/benchmark`).

**Small settings:** 200 crystals of ``sample-500``, 3 folds, 10 CGCNN epochs. On so few
crystals and epochs the matminer magpie random forest beats CGCNN; the stored results of
the full runs (5,000 and 36,737 crystals, where CGCNN wins) are in :doc:`/benchmark`.
"""

# %%
import tempfile
from pathlib import Path

from skcgcnn.benchmark import make_models, run_benchmark
from skcgcnn.datasets import load_cgcnn_folder

# sphinx_gallery_start_ignore
if "__file__" not in globals():  # sphinx-gallery runs examples in their folder
    __file__ = str(Path.cwd() / "benchmark_plot.py")
# sphinx_gallery_end_ignore
FOLDER = (Path(__file__).resolve().parents[2] / "shared" / "data" /
          "mp-formation-energy-36737" / "sample-500")
OUT = Path(tempfile.mkdtemp(prefix="skcgcnn-benchmark-"))

data = load_cgcnn_folder(FOLDER, limit=200)
models = make_models(["cgcnn", "magpie-rf", "dummy"], epochs=10, batch_size=32)
result = run_benchmark(models, data["structure"], data["target"].to_numpy(), cv=3,
                       ids=data.index, output_dir=OUT, target_name="E_form (eV/atom)",
                       verbose=0)
result.summary.round(3)
