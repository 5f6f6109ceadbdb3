"""Defaults written once: the crystal graph, the split, the original optimiser, devices,
caches.

Every module takes these names instead of repeating the numbers, so a default changes in
one place.  The graph defaults are the original CGCNN's (``main.py``/``predict.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

#: Neighbour search radius in Å.
RADIUS = 8.0
#: Neighbours kept per atom.
MAX_NUM_NBR = 12
#: First Gaussian centre of the distance expansion, in Å.
DMIN = 0.0
#: Spacing of the Gaussian centres, in Å.
STEP = 0.2
#: The four graph parameters by their estimator and checkpoint names.
GRAPH_PARAMS = {"radius": RADIUS, "max_num_nbr": MAX_NUM_NBR, "dmin": DMIN, "step": STEP}

#: Validation share of ``skcgcnn train`` when neither a ratio nor a size is given (main.py).
VAL_RATIO = 0.1
#: Test share of ``skcgcnn train`` when neither a ratio nor a size is given (main.py).
TEST_RATIO = 0.1

#: The original's SGD momentum.
MOMENTUM = 0.9
#: CGCNN mini-batch size in benchmarks and searches (the original trains with 256).
BENCHMARK_BATCH_SIZE = 64

#: The estimators' default training recipe (CGCNNClassifier's; CGCNNRegressor adds
#: ``DEFAULT_RECIPE["loss"]``), chosen by measurement: benchmarks/bench_recipe.py and
#: docs/benchmark.md.  AdamW with a one-cycle learning-rate schedule, stepped per batch.
DEFAULT_CLASSIFIER_RECIPE = {
    "optimizer": "adamw", "lr": 0.01, "optimizer__weight_decay": 0.01, "batch_size": 128,
    "max_epochs": 50, "lr_schedule": "onecycle", "early_stopping": False,
}
#: CGCNNRegressor's default recipe: :data:`DEFAULT_CLASSIFIER_RECIPE` and the loss.
DEFAULT_RECIPE = {**DEFAULT_CLASSIFIER_RECIPE, "loss": "absolute_error"}
#: CGCNNRegressor's ``loss`` values, the keys of ``skcgcnn.estimators.LOSSES`` (here for
#: ``skcgcnn train --help``, which loads no torch); ``"gaussian_nll"`` adds a variance head.
REGRESSION_LOSSES = ("squared_error", "absolute_error", "huber", "gaussian_nll")

#: Torch devices an estimator or command accepts ("auto": the GPU when there is one).
DEVICES = ("cpu", "cuda", "auto")
#: The estimators' ``batch_on_device`` values ("auto": on for CUDA); the first is the default.
BATCH_ON_DEVICE = ("auto", True, False)
#: The estimators' ``precision`` values (the autocast type); the first is the default.
PRECISIONS = ("float32", "bfloat16")


def resolve_device(device: str | None) -> str | None:
    """``device`` with ``"auto"`` replaced by ``"cuda"`` or ``"cpu"``.

    Raises
    ------
    ValueError
        For ``"cuda"`` when torch sees no CUDA device.
    """
    if device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' "
                         "or 'auto' (the GPU when there is one)")
    return "cpu"


def default_cache_dir() -> Path:
    """Folder of the parsed-structure, graph and download caches.

    ``$SKCGCNN_CACHE`` if set, else ``$XDG_CACHE_HOME/skcgcnn``, else
    ``~/.cache/skcgcnn``.
    """
    env = os.environ.get("SKCGCNN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "skcgcnn"
