"""The models of ``skcgcnn benchmark`` by name: :func:`make_models` (re-exported by
:mod:`skcgcnn.benchmark`, which runs them side by side)."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Models of ``skcgcnn benchmark`` when ``--models`` is not given.
DEFAULT_MODELS = ("cgcnn", "magpie-rf", "dummy")
#: Every model :func:`make_models` builds by name.
MODEL_NAMES = ("cgcnn", "cgcnn-finetuned", "magpie-rf", "structure-gb", "dummy")
#: Training epochs and mini-batch size of the CGCNN model in ``skcgcnn benchmark``:
#: None, the estimator's default recipe (:data:`skcgcnn.estimators.DEFAULT_RECIPE`).
DEFAULT_EPOCHS = DEFAULT_BATCH_SIZE = None


def make_models(names: list[str] | tuple[str, ...] = DEFAULT_MODELS, *,
                epochs: int | None = DEFAULT_EPOCHS,
                batch_size: int | None = DEFAULT_BATCH_SIZE,
                n_jobs: int | None = None, random_state: int | None = 0,
                device: str = "cpu", verbose: int = 0, init: Any = None,
                freeze: str | None = None, init_lr_factor: float = 1.0) -> dict[str, Any]:
    """Build the named models with the benchmark's settings.

    Parameters
    ----------
    names : list of str, default=("cgcnn", "magpie-rf", "dummy")
        Among :data:`MODEL_NAMES`: ``"cgcnn"`` (``make_cgcnn_pipeline(max_epochs=epochs,
        batch_size=batch_size)``, otherwise the estimator's default recipe),
        ``"cgcnn-finetuned"`` (the same recipe started from ``init``:
        :func:`skcgcnn.pretrained.finetune_pipeline`, the pretrained model's graph step
        then ``CGCNNRegressor(init=init, freeze=freeze, init_lr_factor=init_lr_factor)``)
        or a name of :data:`skcgcnn.baselines.BASELINES`.
    epochs : int, default=None
        Training epochs of CGCNN (None: the default recipe's).
    batch_size : int, default=None
        Mini-batch size of CGCNN (None: the default recipe's).
    n_jobs : int, default=None
        Processes for featurization and graph building, trees of the random forest.
    random_state : int or None, default=0
        Seed of every model.
    device : str, default="cpu"
        Torch device of CGCNN ("cpu", "cuda" or "auto").
    verbose : int, default=0
        Verbosity of the models (progress bars of featurization, CGCNN epoch table).
    init : str, path or fitted Pipeline, default=None
        What ``"cgcnn-finetuned"`` starts from: a pretrained model's name
        (:func:`skcgcnn.list_pretrained`), the path of a Pipeline saved with
        :func:`skcgcnn.save_model`, or a fitted Pipeline. Needed for it, refused without.
    freeze : {None, "embedding", "conv"}, default=None
        Layers of ``init`` that ``"cgcnn-finetuned"`` keeps as they are.
    init_lr_factor : float, default=1.0
        Learning-rate factor of the pretrained layers in ``"cgcnn-finetuned"``.

    Returns
    -------
    models : dict of str -> Pipeline
    """
    names = list(names)
    unknown = [nm for nm in names if nm not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model name(s) {unknown}; choose from {list(MODEL_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"model names repeat in {names}")
    if ("cgcnn-finetuned" in names) != (init is not None):
        raise ValueError("cgcnn-finetuned needs init, the model to fine-tune (a pretrained "
                         "model's name or a saved model's path)" if init is None else
                         "init is given but the models do not include cgcnn-finetuned")
    recipe = {"max_epochs": epochs, "batch_size": batch_size}
    for key, value in recipe.items():
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{key.removeprefix('max_')}={value!r}: use a positive integer")
    recipe = {key: int(value) for key, value in recipe.items() if value is not None}
    models: dict[str, Any] = {}
    for name in names:
        if name == "cgcnn":
            from skcgcnn.estimators import make_cgcnn_pipeline

            # Graph building is ~1 ms per crystal: worker processes would cost more.
            models[name] = make_cgcnn_pipeline(
                **recipe,
                random_state=random_state,
                device=device,
                verbose=verbose,
            )
        elif name == "cgcnn-finetuned":
            from skcgcnn.pretrained import finetune_pipeline

            models[name] = finetune_pipeline(
                init, freeze=freeze, init_lr_factor=init_lr_factor, **recipe,
                random_state=random_state, device=device, verbose=verbose)
        elif name == "dummy":
            # scikit-learn only (make_baseline("dummy") builds the same Pipeline, but its
            # module needs matminer, the baselines extra)
            from sklearn.dummy import DummyRegressor
            from sklearn.pipeline import Pipeline

            models[name] = Pipeline([("model", DummyRegressor(strategy="mean"))])
        else:
            from skcgcnn.baselines import make_baseline

            models[name] = make_baseline(
                name, n_jobs=n_jobs, random_state=random_state, verbose=verbose
            )
    return models
