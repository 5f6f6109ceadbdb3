"""Run records, as :mod:`skcgcnn.reporting` writes them (and re-exports): plain JSON of a
run's settings, its models and the package versions."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Packages whose versions a run record lists.
RECORD_PACKAGES = ("skcgcnn", "scikit-learn", "matminer", "torch", "skorch", "pymatgen")


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values, tuples as lists and
    NaN / infinity as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` (through :func:`jsonable`; other objects as ``str``) as indented
    JSON with a final newline."""
    path = Path(path)
    path.write_text(json.dumps(jsonable(dict(record)), indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path


def package_versions(packages: Sequence[str] = RECORD_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def describe_model(model: Any) -> dict[str, Any]:
    """Class, pipeline steps and plain-valued parameters of a model, for a run record."""
    params: dict[str, Any] = {}
    try:
        all_params = model.get_params(deep=True)
    except Exception:  # not a scikit-learn estimator: the class is all we can say
        all_params = {}
    plain = (bool, int, float, str)
    for key, value in sorted(all_params.items()):
        if "callbacks__" in key:  # skorch's default callbacks' settings: noise here
            continue
        if value is None or isinstance(value, plain):
            params[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, plain) for v in value):
            params[key] = list(value)
    steps = getattr(model, "steps", None)
    if steps:
        classes = [f"{name}: {type(step).__name__}" for name, step in steps]
        return {"class": type(model).__name__, "steps": classes, "params": params}
    return {"class": type(model).__name__, "params": params}
