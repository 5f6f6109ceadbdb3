"""Model cards: what a saved model needs to be used right, kept in the model file.

:func:`~skcgcnn.estimators.save_model` writes a card beside the weights; it holds the
graph settings and the atom-feature table (name and digest), the training data (number
of crystals and a digest of their ids), the last epoch's losses, the recipe (the
estimator's simple parameters), the package versions, and what the user adds (target
names and units, a description).  :func:`~skcgcnn.estimators.load_model` puts it on
the loaded estimator as ``model_card_``; :func:`format_model_card` renders it, and
:func:`summarize_model_card` tells its essentials in a few lines.
"""
from __future__ import annotations

import datetime
import hashlib
import platform
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["build_model_card", "format_model_card", "ids_digest", "summarize_model_card"]

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


#: Recipe entries the summary names, with their labels (in this order, when present):
#: the training, then the network.
_RECIPE_SHOWN = ((("optimizer", "optimizer"), ("lr", "lr"), ("lr_schedule", "schedule"),
                  ("loss", "loss"), ("batch_size", "batch size")),
                 (("module__atom_fea_len", "atom_fea_len"), ("module__n_conv", "n_conv"),
                  ("module__h_fea_len", "h_fea_len")))


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _what(card: dict) -> str:
    """The estimator, what it predicts and when it was saved: 'CGCNNRegressor of E_form
    (eV/atom), saved 2025-01-31 with skcgcnn 0.1.0'."""
    head = str(card.get("estimator", "model"))
    if card.get("n_members"):
        head += f" ({card['n_members']} members)"
    names = card.get("target_names") or []
    units = card.get("target_units") or []
    if card.get("target_label"):
        head += f" of {card['target_label']}"
    elif names:
        shown = [f"{n} ({u})" if u else str(n)
                 for n, u in zip(names, list(units) + [None] * len(names))]
        head += " of " + ", ".join(shown)
    elif card.get("classes") is None and card.get("n_outputs") is not None:
        head += f" with {card['n_outputs']} output(s)"
    if card.get("classes") is not None:
        head += f", classes {card['classes']}"
    versions = card.get("versions") or {}
    saved = str(card.get("saved_at", ""))[:10]
    if saved or versions.get("skcgcnn"):
        head += ", saved" + (f" {saved}" if saved else "") + (
            f" with skcgcnn {versions['skcgcnn']}" if versions.get("skcgcnn") else "")
    return head


def _trained(card: dict) -> str | None:
    training = card.get("training") or {}
    if not training:
        return None
    source = f" of {card['training_data']}" if card.get("training_data") else ""
    parts = [f"trained on {training.get('n_crystals', '?')} crystals{source}"
             + (f" (ids digest {str(training['ids_digest'])[:8]})"
                if training.get("ids_digest") else "")]
    if training.get("epochs"):
        parts.append(f"{training['epochs']} epochs")
    losses = [f"{key.removeprefix('final_').replace('_', ' ')} {_number(training[key])}"
              for key in ("final_train_loss", "final_valid_loss") if key in training]
    if losses:
        parts.append("last " + ", ".join(losses))
    return ", ".join(parts)


def _recipe(card: dict) -> str | None:
    recipe = card.get("recipe") or {}
    graphs = card.get("graph_params") or {}
    groups = [", ".join(f"{label} {_number(recipe[key])}" for key, label in group
                        if recipe.get(key) is not None) for group in _RECIPE_SHOWN]
    if graphs:
        groups.append(f"graphs of radius {_number(graphs.get('radius', '?'))} Å, "
                      f"{graphs.get('max_num_nbr', '?')} neighbours, "
                      f"{graphs.get('atom_features', '?')} atom features")
    groups = [group for group in groups if group]
    return "recipe: " + "; ".join(groups) if groups else None


def _metrics(card: dict) -> str | None:
    for key in ("test_metrics", "test"):
        metrics = card.get(key)
        if isinstance(metrics, dict) and metrics:
            size = f" ({card['n_test']} crystals)" if card.get("n_test") else ""
            values = [f"{name} {_number(value)}" for name, value in metrics.items()
                      if isinstance(value, (int, float))]
            return f"test{size}: " + ", ".join(values) if values else None
    return None


def summarize_model_card(card: dict) -> list[str]:
    """The card's essentials in up to four lines (the whole card: :func:`format_model_card`).

    What the model is and predicts; its training data (size, ids digest, epochs, last
    losses); the recipe (optimiser, learning rate, schedule, loss, network and graph
    settings); the test metrics, when the card records them.

    Examples
    --------
    >>> summarize_model_card({"estimator": "CGCNNRegressor", "target_names": ["E_form"],
    ...                       "training": {"n_crystals": 120, "epochs": 30},
    ...                       "test_metrics": {"mae": 0.0412}})
    ['CGCNNRegressor of E_form', 'trained on 120 crystals, 30 epochs', 'test: mae 0.0412']
    """
    lines = [_what(card), _trained(card), _recipe(card), _metrics(card)]
    return [line for line in lines if line]
