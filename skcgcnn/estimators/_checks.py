"""Input checks of CGCNNRegressor and CGCNNClassifier: graphs, targets, graph settings."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._defaults import GRAPH_PARAMS
from ..graph import GraphCollection

logger = logging.getLogger(__name__)


def _seed_of(random_state: Any) -> int | None:
    if random_state is None:
        return None
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2 ** 31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2 ** 31 - 1))
    raise ValueError(f"random_state must be None, an int or a numpy RandomState/Generator, "
                     f"got {random_state!r}")


_GRAPH_KEYS = tuple(GRAPH_PARAMS)


def _atom_features_digest(table: Any) -> str:
    """A digest of an atom-feature table's values (equal tables, equal digests)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(table.table, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(table.available, dtype=bool).tobytes())
    return digest.hexdigest()


def _graph_params_of(X: GraphCollection) -> dict:
    """The settings a collection's graphs were built with, as the model records them."""
    params = {key: type(GRAPH_PARAMS[key])(value) for key, value in X.graph_params.items()}
    if X.atom_features is not None:
        params["atom_features"] = str(getattr(X.atom_features, "name", "?"))
        params["atom_features_digest"] = _atom_features_digest(X.atom_features)
    return params


#: How to get graphs the model can use (the end of every atom-feature mismatch message).
_ATOM_FEATURES_FIX = (
    "Build the graphs with the model's atom features, "
    "StructureGraphTransformer(atom_features=<the model's table>) (a saved Pipeline's "
    "transformer holds it as atom_features_; on the command line, --atom-features with "
    "the model's atom_init.json or set name), or fit the model again on these graphs")


def _atom_features_difference(X: GraphCollection, given: dict, fitted: dict) -> str:
    """What differs between X's atom-feature table and the model's, whose digests
    differ: their names, or (one name, e.g. two atom_init.json files that are both
    'custom') that the vectors are other values."""
    name, theirs = given.get("atom_features", "?"), fitted.get("atom_features", "?")
    if name != theirs:
        return f"atom features: X {name!r}, model {theirs!r}"
    return (f"atom features: X's and the model's tables are both named {name!r} and "
            f"{X.atom_features.n_features} long, but the vectors of some elements differ, "
            "or one table covers elements that the other lacks (X's covers "
            f"{len(X.atom_features.elements)}; table "
            f"digests X {given['atom_features_digest'][:8]}, model "
            f"{str(fitted['atom_features_digest'])[:8]}): the graphs were built from "
            "another atom_init.json or feature mapping than the model's")


class _InputChecks:
    """The checks of X and y that fit, predict and the public seams share."""

    def _check_X(self, X: Any, all_skipped_ok: bool = False) -> GraphCollection:
        """X as a GraphCollection; with ``all_skipped_ok`` (prediction), also the output of
        a transformer that skipped every structure it was given (NaN rows follow)."""
        if isinstance(X, GraphCollection):
            if X.atom_features is None:
                raise ValueError("X has no atom-feature table; build it with "
                                 "StructureGraphTransformer")
            all_skipped = X.input_positions is not None and X.n_inputs > 0
            if len(X) == 0 and not (all_skipped_ok and all_skipped):
                raise ValueError(
                    f"Found array with 0 sample(s): X holds no crystal graphs, but "
                    f"{type(self).__name__} needs at least one (with on_error='skip', "
                    "every structure may have been left out: see the transformer's errors_)")
            return X
        raise TypeError(
            f"{type(self).__name__} takes the GraphCollection made by "
            f"StructureGraphTransformer, not {type(X).__name__}; put "
            "StructureGraphTransformer() before it in a Pipeline, or call "
            "StructureGraphTransformer().fit_transform(structures) first")

    def _check_y(self, X: GraphCollection, y: Any) -> np.ndarray:
        if y is None:
            raise ValueError(f"{type(self).__name__}.fit needs targets y")
        y = np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"y must be an array with one row per crystal, got {y!r}")
        if y.shape[0] != len(X) and X.input_positions is not None \
                and y.shape[0] == X.n_inputs:
            # a Pipeline whose StructureGraphTransformer skipped structures: y still has
            # a row per input structure; keep the rows of the structures with a graph
            logger.info("fitting on the %d of %d rows whose structures have a graph "
                        "(StructureGraphTransformer skipped positions %s)", len(X),
                        X.n_inputs, X.skipped_positions[:10].tolist())
            return y[X.input_positions]
        if y.shape[0] != len(X):
            raise ValueError(f"y has {y.shape[0]} rows but X has {len(X)} crystals; they "
                             "must match (with on_error='skip', keep y[transformer."
                             "kept_indices_])")
        return y

    @staticmethod
    def _align(X: Any, values: np.ndarray) -> np.ndarray:
        """One row per input of the transformer that made X: NaN rows for the structures
        it skipped (``X.input_positions``); ``values`` unchanged when none were."""
        positions = getattr(X, "input_positions", None)
        if positions is None:
            return values
        out = np.full((X.n_inputs,) + values.shape[1:], np.nan)
        out[positions] = values
        return out

    def _refuse_skipped(self, X: Any, what: str) -> None:
        """A clear error for methods that cannot give skipped structures a NaN row."""
        skipped = X.skipped_positions if isinstance(X, GraphCollection) else []
        if len(skipped):
            raise ValueError(
                f"{type(self).__name__}.{what} cannot answer for the {len(skipped)} "
                f"structure(s) that StructureGraphTransformer(on_error='skip') left out "
                f"(input positions {skipped[:10].tolist()}); remove them from the input "
                "(see the transformer's errors_), or use predict_proba / the regressor's "
                "predict, which give NaN rows for them")

    def _data_kwargs(self, X: GraphCollection, n_out: int) -> dict:
        return {"orig_atom_fea_len": X.atom_features.n_features, "n_out": n_out,
                "classification": self._classification, "radius": X.radius,
                "dmin": X.dmin, "step": X.step}

    def _check_compatible(self, X: GraphCollection) -> None:
        """Refuse graphs built with other settings than the fit's (predictions would move
        without notice: a model fitted on 12 neighbours sums over 12)."""
        kw = self.module_kwargs_
        fitted = getattr(self, "graph_params_", None)
        if fitted is None:  # models saved before graph_params_ existed
            fitted = {"radius": kw["radius"], "dmin": kw["dmin"], "step": kw["step"]}
        n_given, n_fitted = X.atom_features.n_features, kw["orig_atom_fea_len"]
        if n_given != n_fitted:
            name, theirs = X.atom_features.name, fitted.get("atom_features")
            tables = (f"X's table {name!r} and the model's {theirs!r}" if theirs is not None
                      and theirs != name else f"X's table {name!r} and the model's")
            raise ValueError(
                f"X has {n_given} atom features but the model was fitted on {n_fitted}: "
                f"{tables} give each element a vector of another length. "
                f"{_ATOM_FEATURES_FIX}")
        given = _graph_params_of(X)
        # tables are compared by their values (a name such as "cgcnn" and the path of
        # the same atom_init.json are the same features)
        differ = [key for key in (*_GRAPH_KEYS, "atom_features_digest")
                  if key in fitted and key in given and given[key] != fitted[key]]
        if not differ:
            return
        listing = "; ".join(
            _atom_features_difference(X, given, fitted) if key == "atom_features_digest"
            else f"{key}: X {given[key]!r}, model {fitted[key]!r}" for key in differ)
        if differ == ["atom_features_digest"]:
            raise ValueError(f"X was built with other atom features than the model was "
                             f"fitted on ({listing}); the predictions would not mean "
                             f"anything. {_ATOM_FEATURES_FIX}")
        settings = ", ".join(f"{key}={fitted[key]!r}" for key in _GRAPH_KEYS if key in fitted)
        raise ValueError(
            f"X was built with other graph settings than the model was fitted on ({listing}); "
            "the predictions would not mean anything. Build X with "
            f"StructureGraphTransformer({settings}) and the model's atom features (in a "
            "Pipeline the fitted transformer does this), or fit the model again on graphs "
            "built with the new settings")

    def _check_predict_X(self, X: Any) -> Any:
        """X for prediction: graphs (checked against the fit), or a torch Dataset as
        skorch passes during training (e.g. to EpochScoring with cached predictions)."""
        if isinstance(X, torch.utils.data.Dataset):
            return X
        X = self._check_X(X, all_skipped_ok=True)
        self._check_compatible(X)
        return X

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted (or loaded): what scikit-learn's ``check_is_fitted`` asks."""
        return hasattr(self, "module_kwargs_") and bool(getattr(self, "initialized_", False))

    def _require_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit first")
