"""Model cards: what a saved model needs to be used right, kept in the model file.

:func:`~skcgcnn.estimators.save_model` writes a card beside the weights; it holds the
graph settings and the atom-feature table (name and digest), the training data (number
of crystals and a digest of their ids), the last epoch's losses, the recipe (the
estimator's simple parameters), the package versions, and what the user adds (target
names and units, a description).  :func:`~skcgcnn.estimators.load_model` puts it on
the loaded estimator as ``model_card_``; :func:`format_model_card` renders it.
"""
from __future__ import annotations

import datetime
import hashlib
import platform
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["build_model_card", "format_model_card", "ids_digest"]

CARD_VERSION = 1
_PACKAGES = ("skcgcnn", "torch", "numpy", "scikit-learn", "skorch", "pymatgen")
_SIMPLE = (bool, int, float, str, type(None))


def ids_digest(ids: Any) -> str:
    """A digest of a sequence of crystal ids, in order (equal lists, equal digests)."""
    digest = hashlib.blake2b(digest_size=16)
    for ident in ids:
        digest.update(str(ident).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, _SIMPLE) else repr(value)


def _training(net: Any) -> dict:
    """Size, ids digest and last-epoch losses of one fitted network."""
    out = {"n_crystals": getattr(net, "n_train_", None),
           "ids_digest": getattr(net, "training_ids_digest_", None)}
    history = getattr(net, "history_", None) or []
    out["epochs"] = len(history)
    if len(history):
        last = history[-1]
        for key in ("train_loss", "valid_loss"):
            if key in last:
                out[f"final_{key}"] = float(last[key])
    return out


def build_model_card(est: Any, recipe: dict, user: dict | None = None) -> dict:
    """The card of a fitted CGCNN estimator or ensemble.

    Parameters
    ----------
    est : CGCNNRegressor, CGCNNClassifier or CGCNNEnsembleRegressor, fitted
    recipe : dict
        The simple parameters saved with the model.
    user : dict, optional
        Fields the user adds: ``target_names``, ``target_units``, ``description``,
        metrics on a test set, ... (plain values: numbers, strings, lists, dicts).
    """
    members = getattr(est, "estimators_", None)
    first = members[0] if members else est
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "estimator": type(est).__name__,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "graph_params": _plain(dict(getattr(first, "graph_params_", None) or {})),
        "n_outputs": _plain(getattr(first, "n_outputs_", None)),
        "training": _training(first),
        "recipe": _plain(recipe),
        "versions": {"python": platform.python_version(),
                     **{name: _version(name) for name in _PACKAGES}},
    }
    if members:
        card["n_members"] = len(members)
        card["members_training"] = [_training(m) for m in members]
    domain = getattr(est, "domain_", None)
    if domain is not None:
        card["domain"] = {"n_neighbors": int(domain.n_neighbors),
                          "quantile": float(domain.quantile), "scale": bool(domain.scale),
                          "threshold": float(domain.threshold_),
                          "n_train": int(len(domain.train_distances_))}
    if hasattr(first, "label_encoder_"):
        card["classes"] = _plain(first.label_encoder_.classes_.tolist())
    if user:
        card.update(_plain(dict(user)))
    return card


def format_model_card(card: dict) -> str:
    """The card as text, one ``key: value`` line per entry (nested entries indented)."""
    lines: list[str] = []

    def walk(entry: dict, indent: str) -> None:
        for key, value in entry.items():
            if isinstance(value, dict):
                lines.append(f"{indent}{key}:")
                walk(value, indent + "  ")
            else:
                lines.append(f"{indent}{key}: {value}")

    walk(card, "")
    return "\n".join(lines)
