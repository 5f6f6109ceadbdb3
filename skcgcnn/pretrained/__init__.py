"""Pretrained CGCNN models shipped with skcgcnn.

Each model is a file of :func:`skcgcnn.save_model` in this folder (tensors only: it loads
with ``torch.load(weights_only=True)``, no pickle), listed in ``index.json`` with its
SHA-256, and a model card inside it: the data (their digests), the split, the recipe,
the metrics on the test rows, the package versions.  The models were trained on the
training rows of one fixed split of the Materials Project set
``mp-formation-energy-36737``; :func:`pretrained_split` gives that split, so that the
test rows stay a fair test (of the model itself, and of what is fine-tuned from it).

>>> import skcgcnn
>>> skcgcnn.list_pretrained()                                # doctest: +SKIP
['mp-band-gap', 'mp-formation-energy']
>>> pipe = skcgcnn.load_pretrained("mp-formation-energy")    # doctest: +SKIP
>>> pipe.predict(structures)                                 # doctest: +SKIP

Fine-tuning starts from one by name: ``CGCNNRegressor(init="mp-formation-energy")``
(:doc:`/models`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["PretrainedError", "finetune_pipeline", "list_pretrained", "load_pretrained", "pretrained_card",
           "pretrained_path", "pretrained_split", "is_pretrained_name",
           "load_model_or_pretrained"]

HERE = Path(__file__).resolve().parent
#: The index of the shipped models: name -> file, SHA-256, split file and a summary.
INDEX = HERE / "index.json"


class PretrainedError(ValueError):
    """An unknown pretrained model's name, or a shipped file that fails its check."""


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    if not INDEX.exists():
        return {}
    with open(INDEX, encoding="utf-8") as fh:
        return json.load(fh)["models"]


def list_pretrained(details: bool = False) -> Any:
    """The names of the pretrained models shipped with skcgcnn.

    Parameters
    ----------
    details : bool, default=False
        Return a pandas DataFrame instead, one row a model: its target and unit, the
        number of training crystals, the test MAE, the file size in kB.

    Returns
    -------
    names : list of str, or DataFrame
    """
    index = _index()
    if not details:
        return sorted(index)
    import pandas as pd

    rows = []
    for name in sorted(index):
        entry = index[name]
        rows.append({"name": name, "target": entry.get("target"), "unit": entry.get("unit"),
                     "training_crystals": entry.get("training_crystals"),
                     "test_mae": entry.get("test_metrics", {}).get("mae"),
                     "size_kb": round((HERE / entry["file"]).stat().st_size / 1024, 1),
                     "description": entry.get("description")})
    return pd.DataFrame(rows).set_index("name")


def is_pretrained_name(name: Any) -> bool:
    """Whether ``name`` is the name of a shipped model (and not a file that exists)."""
    return isinstance(name, str) and name in _index() and not os.path.exists(name)


def _entry(name: str) -> dict[str, Any]:
    index = _index()
    if not isinstance(name, str) or name not in index:
        shipped = ", ".join(repr(n) for n in sorted(index)) or "none"
        raise PretrainedError(f"no pretrained model named {name!r}; the shipped ones are "
                              f"{shipped} (skcgcnn.list_pretrained())")
    return index[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pretrained_path(name: str) -> Path:
    """The file of the pretrained model ``name``, checked against its SHA-256."""
    entry = _entry(name)
    path = HERE / entry["file"]
    if not path.exists():
        raise PretrainedError(f"the file of pretrained model {name!r} ({path}) is missing: "
                              "reinstall skcgcnn")
    if _sha256(path) != entry["sha256"]:
        raise PretrainedError(f"the file of pretrained model {name!r} ({path}) does not "
                              "match the SHA-256 in the package's index.json (a damaged "
                              "or replaced file): reinstall skcgcnn")
    return path


def load_pretrained(name: str, device: str = "cpu") -> Any:
    """Load a pretrained model by name: a fitted Pipeline (graphs, then CGCNN).

    Parameters
    ----------
    name : str
        One of :func:`list_pretrained`, e.g. ``"mp-formation-energy"``.
    device : str, default="cpu"
        Torch device of the network.

    Returns
    -------
    pipeline : Pipeline
        ``Pipeline([("graph", StructureGraphTransformer), ("cgcnn", CGCNNRegressor)])``,
        fitted; its estimator's ``model_card_`` is the card saved with it.
    """
    from ..estimators._persistence import load_model

    return load_model(pretrained_path(name), device=device)


def load_model_or_pretrained(init: str | os.PathLike) -> Any:
    """The pretrained model named ``init`` (:func:`list_pretrained`), else the model saved
    at the path ``init`` by :func:`skcgcnn.save_model`: what ``CGCNNRegressor(init=...)``
    and :func:`finetune_pipeline` load.

    Raises
    ------
    FileNotFoundError
        When ``init`` is neither a pretrained model's name nor an existing file.
    """
    from ..estimators._persistence import load_model

    if is_pretrained_name(init):
        return load_pretrained(init)
    if not os.path.exists(init):
        raise FileNotFoundError(
            f"init={os.fspath(init)!r} is neither a file nor the name of a pretrained "
            f"model (shipped: {list_pretrained()}); give a path saved with "
            "skcgcnn.save_model, a fitted estimator or one of those names")
    return load_model(init)


def pretrained_card(name: str) -> dict[str, Any]:
    """The model card of the pretrained model ``name`` (what its file holds)."""
    from ..estimators._split import split_pipeline

    return dict(split_pipeline(load_pretrained(name))[1].model_card_)


def pretrained_split(name: str) -> Any:
    """The split the pretrained model ``name`` was made on: a DataFrame ``id, split``.

    ``split`` is ``"train"``, ``"val"`` (the rows that chose the kept epoch) or
    ``"test"`` (rows the model never saw; its recorded metrics are on them); ``id`` the
    crystal ids of ``mp-formation-energy-36737`` (its ``material_id_hash.csv`` maps them
    to Materials Project ids).  Fine-tune and test on rows of your own, or test on
    ``"test"`` rows only, to keep the test fair.
    """
    import pandas as pd

    entry = _entry(name)
    with gzip.open(HERE / entry["split_file"], "rt", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype={"id": str, "split": str})


def finetune_pipeline(init: Any, **params: Any) -> Any:
    """A Pipeline that fine-tunes a fitted model on new targets: its graphs, then
    ``CGCNNRegressor(init=init, **params)``.

    The graph step is a copy of the pretrained model's (its cutoff, neighbours, Gaussian
    expansion and atom-feature table), so the structures go in as they are.

    Parameters
    ----------
    init : str, path, or fitted Pipeline
        A pretrained model's name (:func:`list_pretrained`), the path of a model saved by
        :func:`skcgcnn.save_model`, or a fitted Pipeline ending in a CGCNN estimator.
    **params
        Arguments of :class:`~skcgcnn.CGCNNRegressor`: ``freeze``, ``init_lr_factor``,
        ``max_epochs``, ``random_state``, ...

    Returns
    -------
    pipeline : Pipeline
        Not fitted; ``pipeline.fit(structures, y)`` fine-tunes.

    Examples
    --------
    >>> from skcgcnn.pretrained import finetune_pipeline
    >>> pipe = finetune_pipeline("mp-formation-energy")
    >>> pipe.fit(structures, band_gaps)                          # doctest: +SKIP
    """
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from ..estimators._regressor import CGCNNRegressor

    model = load_model_or_pretrained(init) if isinstance(init, (str, os.PathLike)) else init
    if not isinstance(model, Pipeline):
        raise TypeError("finetune_pipeline needs the pretrained model's graph step: give a "
                        "pretrained model's name, a saved Pipeline's path or a fitted "
                        f"Pipeline, not {type(model).__name__} (with a bare estimator, "
                        "build the Pipeline yourself with CGCNNRegressor(init=...))")
    transformer = clone(model.steps[0][1])
    source = init if isinstance(init, (str, os.PathLike)) else model
    return Pipeline([("graph", transformer), ("cgcnn", CGCNNRegressor(init=source, **params))])
