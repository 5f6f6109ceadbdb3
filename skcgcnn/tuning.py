"""Optuna searches over CGCNN's atom features, depth, widths, optimiser and graphs.

:func:`tune` runs an Optuna study whose trials train a :class:`CGCNNRegressor` on a
fixed train/validation split (or k folds) and minimise the validation mean absolute
error, in the target's units.  What it adds to a plain ``study.optimize`` loop:

* a :class:`SearchSpace` over the atom-feature set (named sets and subsets of the nine
  CGCNN property groups), ``n_conv``, ``atom_fea_len``, ``h_fea_len``, ``n_h``, the
  convolution kind, optimiser, learning rate, weight decay, batch size and the graph
  parameters ``radius`` and ``max_num_nbr``;
* a :class:`GraphCache`: neighbour lists are built once per graph-parameter set (in
  memory, and on disk to share them between processes); the atom-feature choice only
  swaps the feature table (:meth:`GraphCollection.with_atom_features`);
* pruning: :class:`ValidationMAE` records the validation MAE each epoch and
  :class:`PruningCallback` reports it to the trial and stops unpromising ones;
* storages: an SQLite file by default, any SQLAlchemy URL (PostgreSQL, MySQL) or an
  Optuna journal file, shared by many worker processes (``n_workers``) or machines;
  a trial budget (``n_trials``) that counts finished trials of the whole study, so
  workers stop together and a killed study resumes where it stopped: finished trials
  stay, trials of dead workers are found by their heartbeat and run again;
* results: optimisation history, learning curves and parameter importances as PNG,
  tables of the best trials, and the MAE of descriptor baselines
  (:mod:`skcgcnn.baselines`) and the default CGCNN on the same split, drawn beside the
  study's best.

:func:`add_tune_parser` and :func:`run_tune_command` make the ``skcgcnn tune`` command.
:func:`pipeline_distributions` gives the same space for optuna-integration's
``OptunaSearchCV`` on :func:`~skcgcnn.estimators.make_cgcnn_pipeline`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skorch.callbacks import Callback

from ._optional import require
from .atom_features import CGCNN_GROUPS, NAMED_SETS, get_atom_features

logger = logging.getLogger(__name__)

__all__ = [
    "GraphCache",
    "PruningCallback",
    "SearchSpace",
    "TrialConfig",
    "TuneResult",
    "ValidationMAE",
    "add_tune_parser",
    "evaluate_baselines",
    "make_storage",
    "pipeline_distributions",
    "pipeline_from_params",
    "recover_stale_trials",
    "run_tune_command",
    "tune",
    "write_results",
]

#: The choice of :attr:`SearchSpace.atom_features` that searches subsets of the nine
#: CGCNN property groups (one yes/no parameter ``group_<name>`` per group).
CGCNN_GROUPS_CHOICE = "cgcnn_groups"
#: Trial user attribute that holds the time (``time.time()``) of a worker's last sign of life.
HEARTBEAT_ATTR = "heartbeat"
#: Baseline name of the default CGCNN in :func:`evaluate_baselines`.
DEFAULT_CGCNN = "cgcnn"
_STUDY_ATTR = "skcgcnn"
_GRAPH_FORMAT = 2  # 2: with a checksum of the arrays
_RANGE_FIELDS = {"n_conv": ("int", False), "n_h": ("int", False),
                 "lr": ("float", True), "weight_decay": ("float", True)}
_CHOICE_FIELDS = ("atom_features", "atom_fea_len", "h_fea_len", "conv", "optimizer",
                  "batch_size", "radius", "max_num_nbr")


# ----------------------------------------------------------------------------------
# search space
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialConfig:
    """What one trial trains: graph parameters, atom features and estimator parameters.

    Attributes
    ----------
    atom_features : str or tuple of str
        A named set or a tuple of CGCNN property groups.
    radius : float
    max_num_nbr : int
    dmin, step : float
        The Gaussian expansion of the distances (fixed by the space).
    estimator_params : dict
        Arguments of :class:`~skcgcnn.estimators.CGCNNRegressor` (``module__n_conv``,
        ``lr``, ``optimizer``, ...).
    """

    atom_features: Any
    radius: float
    max_num_nbr: int
    dmin: float
    step: float
    estimator_params: dict

    @property
    def graph_params(self) -> dict:
        """Arguments of :class:`~skcgcnn.transformers.StructureGraphTransformer`."""
        return {"radius": self.radius, "max_num_nbr": self.max_num_nbr, "dmin": self.dmin,
                "step": self.step, "atom_features": self.atom_features}


@dataclass
class SearchSpace:
    """The hyper-parameters a study searches, and their ranges.

    Every field takes either a single value (fixed: not searched) or what to search:

    * ``n_conv``, ``n_h`` (integers), ``lr`` and ``weight_decay`` (log scale): a pair
      ``(low, high)``, both ends included;
    * every other field: a list or tuple of choices.

    Parameter names in the study are the field names; a subset of CGCNN groups appears
    as ``atom_features="cgcnn_groups"`` plus one boolean ``group_<name>`` per group of
    ``cgcnn_groups`` (an empty subset means all nine groups).

    Parameters
    ----------
    atom_features : sequence of str, default=("cgcnn", "onehot", "magpie", "matscholar", \
"megnet", "cgcnn_groups")
        Named atom-feature sets (see :func:`skcgcnn.atom_features.get_atom_features`)
        and ``"cgcnn_groups"``.  Sets that miss an element of the data, or need an
        uninstalled package (magpie, matscholar and megnet need matminer), are left out
        with a warning.
    cgcnn_groups : sequence of str, default=all nine of ``CGCNN_GROUPS``
        The groups that ``"cgcnn_groups"`` picks from.
    n_conv : (int, int) or int, default=(1, 6)
    atom_fea_len : sequence of int or int, default=(32, 64, 128)
    h_fea_len : sequence of int or int, default=(64, 128, 256)
    n_h : (int, int) or int, default=(1, 4)
    conv : sequence of {"gated", "simple"} or str, default=("gated", "simple")
    optimizer : sequence of {"sgd", "adam", "adamw"} or str, default=("sgd", "adam", "adamw")
        SGD keeps CGCNN's momentum of 0.9.
    lr : (float, float) or float, default=(1e-4, 5e-2)
    weight_decay : (float, float) or float, default=(1e-8, 1e-3)
        A fixed 0 turns weight decay off.
    batch_size : sequence of int or int, default=(32, 64, 128, 256)
    radius : sequence of float or float, default=(6.0, 8.0)
        Neighbour cut-off in Å; every value needs its own neighbour search (cached).
    max_num_nbr : sequence of int or int, default=(8, 12, 16)
    dmin, step : float, default=0.0, 0.2
        Fixed parameters of the Gaussian distance expansion.

    Examples
    --------
    >>> space = SearchSpace(atom_features=("cgcnn", "cgcnn_groups"), n_conv=(1, 3),
    ...                     radius=8.0, max_num_nbr=12, optimizer="adam")
    >>> sorted(space.searched())
    ['atom_fea_len', 'atom_features', 'batch_size', 'conv', 'h_fea_len', 'lr', 'n_conv', \
'n_h', 'weight_decay']
    """

    atom_features: Any = ("cgcnn", "onehot", "magpie", "matscholar", "megnet",
                          CGCNN_GROUPS_CHOICE)
    cgcnn_groups: Sequence[str] = tuple(CGCNN_GROUPS)
    n_conv: Any = (1, 6)
    atom_fea_len: Any = (32, 64, 128)
    h_fea_len: Any = (64, 128, 256)
    n_h: Any = (1, 4)
    conv: Any = ("gated", "simple")
    optimizer: Any = ("sgd", "adam", "adamw")
    lr: Any = (1e-4, 5e-2)
    weight_decay: Any = (1e-8, 1e-3)
    batch_size: Any = (32, 64, 128, 256)
    radius: Any = (6.0, 8.0)
    max_num_nbr: Any = (8, 12, 16)
    dmin: float = 0.0
    step: float = 0.2

    # -- conversion ----------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields as plain JSON values (tuples become lists)."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        """A space from :meth:`to_dict`'s output or a JSON object with some of the fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SearchSpace field(s) {unknown}; the fields are "
                             f"{sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # -- checks --------------------------------------------------------------------
    def _choices(self, name: str) -> list:
        """The choices of a choice field (one element when it is fixed)."""
        value = getattr(self, name)
        if not isinstance(value, (list, tuple)):
            return [value]
        if name == "atom_features" and value and all(g in CGCNN_GROUPS for g in value):
            return [tuple(value)]  # one fixed subset of CGCNN groups
        return list(value)

    def searched(self) -> list[str]:
        """Names of the fields that are searched (not fixed)."""
        out = [name for name in _CHOICE_FIELDS if len(self._choices(name)) > 1]
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and value[0] != value[1]:
                out.append(name)
        return out

    def validate(self) -> None:
        """Check every field; raise ValueError naming the field, its value and what is allowed."""
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            kind, log = _RANGE_FIELDS[name]
            ends = value if isinstance(value, (list, tuple)) else (value, value)
            if len(ends) != 2 or not all(isinstance(v, (int, float, np.number))
                                         and not isinstance(v, bool) for v in ends):
                raise ValueError(f"SearchSpace.{name}={value!r}: give a number or a pair "
                                 "(low, high)")
            low, high = ends
            if low > high:
                raise ValueError(f"SearchSpace.{name}={value!r}: low is above high")
            if kind == "int" and not all(float(v).is_integer() and v >= 1 for v in ends):
                raise ValueError(f"SearchSpace.{name}={value!r}: use integers >= 1")
            if name == "lr" and low <= 0:
                raise ValueError(f"SearchSpace.lr={value!r}: learning rates must be > 0")
            if name == "weight_decay" and low < 0:
                raise ValueError(f"SearchSpace.weight_decay={value!r}: must be >= 0")
            if log and low != high and low <= 0:
                raise ValueError(f"SearchSpace.{name}={value!r}: a searched {name} is on a "
                                 "log scale, so low must be > 0 (fix it at 0 to turn it off)")
        allowed = {"conv": ("gated", "simple"), "optimizer": ("sgd", "adam", "adamw")}
        for name in _CHOICE_FIELDS:
            choices = self._choices(name)
            if not choices:
                raise ValueError(f"SearchSpace.{name} is empty; give at least one value")
            if name in allowed:
                bad = [c for c in choices if c not in allowed[name]]
                if bad:
                    raise ValueError(f"SearchSpace.{name}: {bad} not among {allowed[name]}")
            elif name in ("atom_fea_len", "h_fea_len", "batch_size", "max_num_nbr"):
                bad = [c for c in choices if isinstance(c, bool)
                       or not isinstance(c, (int, np.integer)) or c < 1]
                if bad:
                    raise ValueError(f"SearchSpace.{name}: {bad} are not integers >= 1")
            elif name == "radius":
                bad = [c for c in choices if isinstance(c, bool)
                       or not isinstance(c, (int, float, np.number)) or c <= 0]
                if bad:
                    raise ValueError(f"SearchSpace.radius: {bad} are not radii > 0 Å")
            elif name == "atom_features" and len(choices) > 1:
                bad = [c for c in choices if not isinstance(c, str)]
                if bad:
                    raise ValueError(
                        f"SearchSpace.atom_features: searched choices must be names "
                        f"({list(NAMED_SETS)} or {CGCNN_GROUPS_CHOICE!r}), got {bad}; a "
                        "fixed tuple of groups or a path is fine as the only value")
        unknown = [g for g in self.cgcnn_groups if g not in CGCNN_GROUPS]
        if unknown or not self.cgcnn_groups:
            raise ValueError(f"SearchSpace.cgcnn_groups: {unknown or 'empty'}; choose from "
                             f"{list(CGCNN_GROUPS)}")

    # -- sampling ------------------------------------------------------------------
    def atom_feature_choices(self) -> list:
        """The atom-feature choices as given (before the data check)."""
        return self._choices("atom_features")

    def suggest(self, trial: Any, atom_feature_choices: Sequence | None = None) -> TrialConfig:
        """Ask ``trial`` for every searched parameter; return the trial's configuration.

        Parameters
        ----------
        trial : optuna.trial.Trial
        atom_feature_choices : sequence, optional
            The atom-feature choices to use instead of :attr:`atom_features` (the ones
            that cover the data).
        """
        choices = list(atom_feature_choices) if atom_feature_choices is not None else \
            self.atom_feature_choices()
        fixed: dict[str, Any] = {}
        if len(choices) > 1:
            trial.suggest_categorical("atom_features", choices)
        else:
            fixed["atom_features"] = choices[0]
        if trial.params.get("atom_features", fixed.get("atom_features")) == CGCNN_GROUPS_CHOICE:
            for group in self.cgcnn_groups:
                trial.suggest_categorical(f"group_{group}", [True, False])
        for name in _CHOICE_FIELDS[1:]:
            values = self._choices(name)
            if len(values) > 1:
                trial.suggest_categorical(name, values)
        for name, (kind, log) in _RANGE_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or value[0] == value[1]:
                continue
            if kind == "int":
                trial.suggest_int(name, int(value[0]), int(value[1]))
            else:
                trial.suggest_float(name, float(value[0]), float(value[1]), log=log)
        return self.config({**fixed, **trial.params})

    def config(self, params: Mapping[str, Any]) -> TrialConfig:
        """The configuration of a trial with parameters ``params`` (e.g. ``study.best_params``).

        Fields that the space fixes take their fixed value; a parameter missing from
        ``params`` for a searched field is an error.
        """
        def value(name: str) -> Any:
            if name in params:
                return params[name]
            spec = getattr(self, name)
            if name in _RANGE_FIELDS:
                if isinstance(spec, (list, tuple)):
                    if spec[0] == spec[1]:
                        return spec[0]
                    raise KeyError(name)
                return spec
            choices = self._choices(name)
            if len(choices) == 1:
                return choices[0]
            raise KeyError(name)

        try:
            atom = value("atom_features")
            if atom == CGCNN_GROUPS_CHOICE:
                groups = tuple(g for g in self.cgcnn_groups if params.get(f"group_{g}", False))
                atom = groups if groups else "cgcnn"
            est = {
                "module__n_conv": int(value("n_conv")),
                "module__atom_fea_len": int(value("atom_fea_len")),
                "module__h_fea_len": int(value("h_fea_len")),
                "module__n_h": int(value("n_h")),
                "module__conv": str(value("conv")),
                "optimizer": str(value("optimizer")),
                "lr": float(value("lr")),
                "optimizer__weight_decay": float(value("weight_decay")),
                "batch_size": int(value("batch_size")),
            }
            radius, max_num_nbr = float(value("radius")), int(value("max_num_nbr"))
        except KeyError as exc:
            raise ValueError(f"parameter {exc.args[0]!r} is searched by this SearchSpace but "
                             f"missing from {dict(params)}") from None
        return TrialConfig(atom, radius, max_num_nbr, float(self.dmin), float(self.step), est)


def pipeline_from_params(params: Mapping[str, Any], space: SearchSpace | None = None,
                         **estimator_params: Any) -> Any:
    """An unfitted CGCNN Pipeline for a trial's parameters (e.g. ``study.best_params``).

    Parameters
    ----------
    params : mapping
        Trial parameters as :meth:`SearchSpace.suggest` names them.
    space : SearchSpace, optional
        The space the study searched (for the fixed values); default ``SearchSpace()``.
    **estimator_params
        More arguments of :class:`CGCNNRegressor` (``max_epochs``, ``random_state``, ...).

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``make_cgcnn_pipeline(graph_params=..., **params)``.
    """
    from .estimators import make_cgcnn_pipeline

    cfg = (space or SearchSpace()).config(params)
    return make_cgcnn_pipeline(graph_params=cfg.graph_params,
                               **{**cfg.estimator_params, **estimator_params})


def pipeline_distributions(space: SearchSpace | None = None,
                           atom_feature_choices: Sequence[str] | None = None) -> dict:
    """The search space as Optuna distributions over ``make_cgcnn_pipeline`` parameters.

    For optuna-integration's ``OptunaSearchCV``, which sets parameters of the Pipeline
    itself (``graph__radius``, ``cgcnn__module__n_conv``, ...).  Subsets of CGCNN
    groups are left out (a Pipeline parameter cannot be assembled from several
    distributions); graphs are rebuilt for every fit.

    Examples
    --------
    >>> dists = pipeline_distributions(SearchSpace(n_conv=(1, 2), radius=8.0))
    >>> dists["cgcnn__module__n_conv"]
    IntDistribution(high=2, log=False, low=1, step=1)
    >>> "graph__radius" in dists
    False
    """
    require("optuna")
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    space = space or SearchSpace()
    space.validate()
    names = {"atom_features": "graph__atom_features", "radius": "graph__radius",
             "max_num_nbr": "graph__max_num_nbr", "atom_fea_len": "cgcnn__module__atom_fea_len",
             "h_fea_len": "cgcnn__module__h_fea_len", "conv": "cgcnn__module__conv",
             "optimizer": "cgcnn__optimizer", "batch_size": "cgcnn__batch_size",
             "n_conv": "cgcnn__module__n_conv", "n_h": "cgcnn__module__n_h",
             "lr": "cgcnn__lr", "weight_decay": "cgcnn__optimizer__weight_decay"}
    out: dict[str, Any] = {}
    for name in _CHOICE_FIELDS:
        choices = space._choices(name)
        if name == "atom_features":
            choices = [c for c in (atom_feature_choices or choices)
                       if c != CGCNN_GROUPS_CHOICE]
        if len(choices) > 1:
            out[names[name]] = CategoricalDistribution(choices)
    for name, (kind, log) in _RANGE_FIELDS.items():
        value = getattr(space, name)
        if isinstance(value, (list, tuple)) and value[0] != value[1]:
            out[names[name]] = (IntDistribution(int(value[0]), int(value[1])) if kind == "int"
                                else FloatDistribution(float(value[0]), float(value[1]),
                                                       log=log))
    return out


def _resolve_table(spec: Any, cache: dict) -> Any:
    key = spec if isinstance(spec, (str, tuple)) else id(spec)
    if key not in cache:
        cache[key] = get_atom_features(spec)
    return cache[key]


def usable_atom_feature_choices(choices: Sequence, numbers: np.ndarray,
                                tables: dict | None = None) -> list:
    """The atom-feature choices that cover every atomic number in ``numbers``.

    A set that misses an element, or needs a package that is not installed, is
    dropped with a warning naming the reason.
    """
    tables = {} if tables is None else tables
    present = np.unique(np.asarray(numbers, dtype=np.int64))
    keep = []
    for choice in choices:
        spec = "cgcnn" if choice == CGCNN_GROUPS_CHOICE else choice
        try:
            table = _resolve_table(spec, tables)
        except ImportError as exc:
            logger.warning("atom-feature set %r left out of the search: %s", choice, exc)
            continue
        missing = table.missing(present)
        if missing.size:
            from pymatgen.core.periodic_table import Element

            symbols = [Element.from_Z(int(z)).symbol for z in missing if 1 <= z <= 118]
            logger.warning("atom-feature set %r left out of the search: it has no entry "
                           "for %s, which the data contains", choice, ", ".join(symbols))
            continue
        keep.append(choice)
    return keep


# ----------------------------------------------------------------------------------
# graphs, built once per graph-parameter set
# ----------------------------------------------------------------------------------
def _numbers_table() -> Any:
    """A one-column table covering every element: graphs are built with it and get
    their real atom features per trial."""
    from .atom_features import MAX_Z, AtomFeatureTable

    available = np.ones(MAX_Z + 1, dtype=bool)
    available[0] = False
    return AtomFeatureTable("atomic-number", np.arange(MAX_Z + 1, dtype=np.float32)[:, None],
                            available, ["Z"])


def _site_numbers(structure: Any) -> list[int]:
    """Atomic numbers of every species on every site (disordered sites give several)."""
    return [int(getattr(sp, "Z", 0)) for site in structure for sp in site.species]


def structures_fingerprint(structures: Sequence[Any]) -> str:
    """SHA-1 of the species, lattices and fractional coordinates of ``structures``."""
    digest = hashlib.sha1()
    for s in structures:
        digest.update(np.asarray(_site_numbers(s), dtype=np.int16).tobytes())
        digest.update(np.ascontiguousarray(s.lattice.matrix, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(s.frac_coords, dtype=np.float64).tobytes())
    return digest.hexdigest()


#: The arrays of a graph cache file, in the order :func:`_payload_checksum` reads them.
_GRAPH_ARRAYS = ("atom_ptr", "numbers", "nbr_idx", "nbr_dist", "kept", "fingerprint")


def _payload_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """BLAKE2b of the name, dtype, shape and bytes of each of :data:`_GRAPH_ARRAYS`.

    Stored in the graph cache file beside the arrays and checked on every read.  The
    zip format's CRC-32 catches most flipped bits inside one member, but not a member
    rewritten with a fresh CRC (a copy or repair tool, a partial edit) nor arrays that
    belong to different writes; the checksum covers the contents end to end.
    """
    digest = hashlib.blake2b(digest_size=32)
    for name in _GRAPH_ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class GraphCache:
    """Crystal graphs of one set of structures, built once per graph-parameter set.

    :meth:`get` builds the neighbour lists for ``(radius, max_num_nbr)`` the first time
    and keeps them in memory; with ``cache_dir`` they are also written there (``.npz``,
    no pickle, written to a temporary name and renamed) and read back by any process
    that asks for the same structures and parameters, so worker processes share them (a
    file lock makes the second worker wait for the first one's build instead of
    repeating it).  Each file holds a BLAKE2b checksum of its arrays: a truncated or
    damaged file is logged as a warning, rebuilt and written again, never used.  The graphs carry a
    placeholder atom-feature table: give them the real one with
    :meth:`GraphCollection.with_atom_features`, which does not touch the neighbour lists.

    Parameters
    ----------
    structures : sequence of pymatgen Structure
    ids : sequence, optional
        Ids of the structures (default: their positions).
    dmin, step : float, default=0.0, 0.2
        Gaussian expansion parameters stored with the graphs.
    cache_dir : str or Path, optional
        Folder for the graph files.
    n_jobs : int, optional
        Processes for the neighbour search.
    on_error : {"raise", "skip"}, default="raise"
        Structures that cannot become graphs (e.g. an atom without neighbour inside a
        small radius): an error, or left out of that parameter set's graphs.

    Attributes
    ----------
    builds : int
        Neighbour searches run by this object (graphs read from memory or disk do not count).
    fingerprint : str
        :func:`structures_fingerprint` of the structures.
    """

    def __init__(self, structures: Sequence[Any], ids: Sequence[Any] | None = None,
                 dmin: float = 0.0, step: float = 0.2, cache_dir: str | os.PathLike | None = None,
                 n_jobs: int | None = None, on_error: str = "raise"):
        self.structures = list(structures)
        self.ids = list(range(len(self.structures))) if ids is None else list(ids)
        if len(self.ids) != len(self.structures):
            raise ValueError(f"{len(self.ids)} ids for {len(self.structures)} structures")
        self.dmin = float(dmin)
        self.step = float(step)
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.n_jobs = n_jobs
        self.on_error = on_error
        self.fingerprint = structures_fingerprint(self.structures)
        self.builds = 0
        self._memory: dict[tuple, tuple] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_memory"] = {}
        return state

    def _key(self, radius: float, max_num_nbr: int) -> str:
        text = json.dumps([_GRAPH_FORMAT, self.fingerprint, float(radius), int(max_num_nbr),
                           self.dmin, self.step])
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def get(self, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray]:
        """Graphs for ``(radius, max_num_nbr)`` and the positions of the structures they hold.

        Returns
        -------
        graphs : GraphCollection
            One graph per kept structure, with a placeholder atom-feature table.
        kept : ndarray of int
            Positions (in ``structures``) of the graphs' structures; all of them unless
            ``on_error="skip"`` left some out.
        """
        mem_key = (float(radius), int(max_num_nbr))
        if mem_key in self._memory:
            return self._memory[mem_key]
        result = None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path = self.cache_dir / f"graphs-{self._key(radius, max_num_nbr)}.npz"
            with _file_lock(path.with_suffix(".lock")):
                result = self._read(path, radius, max_num_nbr)
                if result is None:
                    result = self._build(radius, max_num_nbr)
                    self._write(path, *result)
        else:
            result = self._build(radius, max_num_nbr)
        self._memory[mem_key] = result
        return result

    def _build(self, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray]:
        from .graph import FewNeighborsWarning
        from .transformers import StructureGraphTransformer

        start = time.perf_counter()
        transformer = StructureGraphTransformer(
            radius=float(radius), max_num_nbr=int(max_num_nbr), dmin=self.dmin, step=self.step,
            atom_features=_numbers_table(), n_jobs=self.n_jobs, on_error=self.on_error)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FewNeighborsWarning)
            graphs = transformer.fit_transform(pd.Series(self.structures, index=self.ids,
                                                         dtype=object))
        few = sum(1 for w in caught if issubclass(w.category, FewNeighborsWarning))
        for w in caught:
            if not issubclass(w.category, FewNeighborsWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.builds += 1
        logger.info("graphs for radius=%s, max_num_nbr=%s: %d structures in %.1f s%s",
                    radius, max_num_nbr, len(graphs), time.perf_counter() - start,
                    f" ({few} with atoms short of {max_num_nbr} neighbours)" if few else "")
        for pos, ident, message in transformer.errors_:
            logger.warning("left out of the graphs for radius=%s: %s", radius, message)
        return graphs, np.asarray(transformer.kept_indices_, dtype=np.int64)

    def _write(self, path: Path, graphs: Any, kept: np.ndarray) -> None:
        arrays = {"atom_ptr": graphs.atom_ptr, "numbers": graphs.numbers,
                  "nbr_idx": graphs.nbr_idx, "nbr_dist": graphs.nbr_dist, "kept": kept,
                  "fingerprint": np.array(self.fingerprint)}
        # written whole under another name, then renamed: a reader (or a crash) never
        # sees half a file under the real name
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, checksum=np.array(_payload_checksum(arrays)), **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            logger.warning("graph cache file %s not written (%s); the graphs stay in memory "
                           "for this process only", path, exc)

    def _read(self, path: Path, radius: float, max_num_nbr: int) -> tuple[Any, np.ndarray] | None:
        from .graph import GraphCollection

        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in _GRAPH_ARRAYS}
                stored = str(data["checksum"])
            if _payload_checksum(arrays) != stored:
                raise ValueError("its checksum does not match its contents")
            if str(arrays["fingerprint"]) != self.fingerprint:
                return None
            kept = arrays["kept"].astype(np.int64)
            ids = np.empty(len(kept), dtype=object)
            ids[:] = [self.ids[p] for p in kept]
            graphs = GraphCollection(
                arrays["atom_ptr"], arrays["numbers"], arrays["nbr_idx"], arrays["nbr_dist"],
                ids, float(radius), int(max_num_nbr), self.dmin, self.step, _numbers_table())
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            # truncated (EOFError, BadZipFile), bit-flipped (BadZipFile's CRC, or only the
            # checksum when the zip itself is intact), or arrays that do not fit together
            logger.warning("graph cache file %s is damaged (%s: %s); rebuilding it", path,
                           type(exc).__name__, exc)
            return None
        logger.info("graphs for radius=%s, max_num_nbr=%s read from %s", radius, max_num_nbr,
                    path)
        return graphs, kept


# ----------------------------------------------------------------------------------
# skorch callbacks
# ----------------------------------------------------------------------------------
class ValidationMAE(Callback):
    """Record the validation mean absolute error, in the target's units, every epoch.

    It adds ``valid_mae`` to the net's history from the predictions skorch already made
    for ``valid_loss`` (no second pass over the validation data).  Needs a
    :class:`~skcgcnn.estimators.CGCNNRegressor` with a ``train_split``; for several
    targets it is the mean over all of them.

    Parameters
    ----------
    name : str, default="valid_mae"
        History key.
    """

    def __init__(self, name: str = "valid_mae"):
        self.name = name

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self._sum = 0.0
        self._count = 0

    def on_batch_end(self, net: Any, batch: Any = None, training: bool = False,
                     **kwargs: Any) -> None:
        if training or "y_pred" not in kwargs:
            return
        import torch

        with torch.no_grad():
            y_pred = kwargs["y_pred"].detach().cpu().double().numpy()
        y_pred = y_pred.reshape(len(y_pred), -1)
        y_pred = y_pred * net.target_scaler_.scale_ + net.target_scaler_.mean_
        y_true = np.asarray(batch[1].cpu() if hasattr(batch[1], "cpu") else batch[1],
                            dtype=np.float64).reshape(y_pred.shape)
        self._sum += float(np.abs(y_pred - y_true).sum())
        self._count += y_pred.size

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if getattr(self, "_count", 0):
            net.history.record(self.name, self._sum / self._count)


class PruningCallback(Callback):
    """Report a history value to an Optuna trial each epoch; stop the trial when pruned.

    At the end of epoch ``e`` (0-based) it calls ``trial.report(history[-1, monitor],
    step_offset + e)`` and raises :class:`optuna.TrialPruned` when
    ``trial.should_prune()``.  skorch does not catch that exception (it only catches
    ``KeyboardInterrupt`` around the training loop), so ``fit`` stops at once and
    Optuna records the trial as pruned.  A non-finite value (a diverged net) prunes
    the trial whatever the pruner says.

    Parameters
    ----------
    trial : optuna.trial.Trial
    monitor : str, default="valid_mae"
        History key, e.g. ``"valid_mae"`` (from :class:`ValidationMAE`) or ``"valid_loss"``.
    step_offset : int, default=0
        Added to the epoch; for k-fold trials fold ``k`` reports from
        ``k * max_epochs`` so that every trial reports the same steps.
    prune_last_epoch : bool, default=False
        Whether to ask the pruner after the net's last epoch (``max_epochs``), when
        stopping saves no training; by default the value is only reported there, and
        the trial completes.
    """

    def __init__(self, trial: Any, monitor: str = "valid_mae", step_offset: int = 0,
                 prune_last_epoch: bool = False):
        self.trial = trial
        self.monitor = monitor
        self.step_offset = step_offset
        self.prune_last_epoch = prune_last_epoch

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        optuna = require("optuna")
        if not net.history or self.monitor not in net.history[-1]:
            raise KeyError(
                f"PruningCallback: the history has no {self.monitor!r}; add ValidationMAE() "
                "to the callbacks (before this one) and give the net a train_split")
        value = float(net.history[-1, self.monitor])
        step = self.step_offset + len(net.history) - 1
        self.trial.report(value, step)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} is {value} at step {step}: diverged")
        if len(net.history) >= net.max_epochs and not self.prune_last_epoch:
            return
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor}={value:.4g})")


# ----------------------------------------------------------------------------------
# storages
# ----------------------------------------------------------------------------------
_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def default_storage(output_dir: str | os.PathLike | None, study_name: str) -> str:
    """The SQLite URL used when no storage is given.

    ``<output_dir>/study.db`` when there is an output folder, else
    ``<skcgcnn cache>/studies/<study_name>.db`` (never the working directory).
    """
    from .datasets import default_cache_dir

    if output_dir is not None:
        path = Path(output_dir).expanduser().resolve() / "study.db"
    else:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
        path = default_cache_dir() / "studies" / f"{safe}.db"
    return f"sqlite:///{path}"


def _storage_kind(spec: Any) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        return "object"
    text = os.fspath(spec)
    if text in (":memory:", "memory"):
        return "memory"
    if text.startswith("journal:"):
        return "journal"
    if "://" in text:
        return "rdb"
    if text.endswith(_JOURNAL_SUFFIXES):
        return "journal"
    if text.endswith(_SQLITE_SUFFIXES):
        return "sqlite-path"
    raise ValueError(
        f"storage {text!r} is not understood: give an SQLAlchemy URL (sqlite:///path.db, "
        "postgresql://user:password@host/db), a journal file (path ending in .log, or "
        "journal:path), an SQLite file (path ending in .db) or ':memory:'")


def _with_postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 takes psycopg 3
    for a bare ``postgresql://``; with only psycopg2 installed, name it in the URL."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("psycopg") is None and \
                    importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def make_storage(spec: Any) -> Any:
    """An Optuna storage from a URL, a path or an existing storage object.

    Parameters
    ----------
    spec : str, path or optuna storage
        ``sqlite:///path.db``, ``postgresql://...`` or any SQLAlchemy URL: an
        :class:`optuna.storages.RDBStorage` (SQLite waits up to 60 s for a locked
        database instead of failing; processes creating the same new database at once
        take turns through ``<file>.lock``, and any RDB creation that collides with
        another process's is retried); a path ending in ``.log``/``.journal``/``.jsonl``
        or ``journal:path``: an :class:`optuna.storages.JournalStorage` on a
        :class:`optuna.storages.journal.JournalFileBackend` (many processes, also over
        NFS); a path ending in ``.db``/``.sqlite``: that SQLite file; ``":memory:"``:
        in memory (one process, nothing kept).

    Returns
    -------
    optuna.storages.BaseStorage
    """
    optuna = require("optuna")
    kind = _storage_kind(spec)
    if kind == "object":
        return spec
    text = os.fspath(spec)
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "journal":
        path = Path(text[len("journal:"):] if text.startswith("journal:") else text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # optuna >= 4.0
            from optuna.storages.journal import JournalFileBackend, JournalStorage
        except ImportError:  # optuna 3.x
            from optuna.storages import JournalFileStorage as JournalFileBackend
            from optuna.storages import JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite-path":
        text = f"sqlite:///{Path(text).expanduser().resolve()}"
    text = _with_postgres_driver(text)
    engine_kwargs = None
    if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
        Path(text[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with _storage_lock(text):
            return _retry_creation(
                lambda: optuna.storages.RDBStorage(text, engine_kwargs=engine_kwargs),
                f"storage {text.split('://')[0]}://")
    except ImportError as exc:
        raise ImportError(f"storage {text.split('://')[0]}:// needs a database driver that is "
                          f"not installed ({exc}); for PostgreSQL: pip install "
                          "'psycopg[binary]' or psycopg2-binary") from exc


# Two processes that open a new RDB storage at the same moment both create its tables and
# stamp its schema version (RDBStorage.__init__): the slower one fails with "table studies
# already exists" or "IntegrityError ... alembic_version" (measured: 3 of 10 rounds of two
# processes, 8 of 10 rounds of four, on one new SQLite file).  tune() creates storage
# and study before it starts its own workers, so they only ever open an existing study;
# independent processes are made safe twice over:
# * an SQLite file on this machine: an exclusive file lock beside it (``<db>.lock``) held
#   while the storage is created and the study opened, so they take turns, deterministically;
# * any RDB storage (PostgreSQL, or SQLite where the lock cannot be taken or does not
#   hold, e.g. some network file systems): the creation is retried on the errors of that
#   race, with a growing, jittered pause; the retry finds the tables and version row the
#   other process wrote, and goes on.  A real fault (a bad URL, a read-only disk) still
#   raises, after the last try.
_CREATE_TRIES = 6


def _sqlite_file(url: Any) -> Path | None:
    if isinstance(url, str) and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):]).expanduser()
    return None


@contextlib.contextmanager
def _storage_lock(url: Any) -> Iterator[None]:
    """Hold ``<db>.lock`` for an SQLite URL (nothing for other storages)."""
    db = _sqlite_file(url)
    if db is None:
        yield
        return
    lock = db.with_name(db.name + ".lock")
    try:
        lock.touch()
    except OSError as exc:  # a read-only folder: rely on the retries
        logger.debug("no lock file %s (%s)", lock, exc)
        yield
        return
    with _file_lock(lock):
        yield


def _retry_creation(action: Any, what: str, tries: int = _CREATE_TRIES) -> Any:
    """``action()``, again after a short pause when it lost a race with another process
    creating the same storage or study (SQLAlchemy IntegrityError / OperationalError)."""
    import random

    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    attempt = 0
    while True:
        try:
            return action()
        except (IntegrityError, OperationalError, StorageInternalError) as exc:
            attempt += 1
            if attempt >= tries:
                raise
            pause = min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random())
            logger.info("%s: another process was creating it at the same moment (%s); "
                        "trying again in %.2f s", what, type(exc).__name__, pause)
            time.sleep(pause)


def _is_persistent(storage: Any) -> bool:
    optuna = require("optuna")
    return not isinstance(storage, optuna.storages.InMemoryStorage)


class _Heartbeat:
    """Writes ``time.time()`` to a running trial's user attribute every ``interval`` s."""

    def __init__(self, trial: Any, interval: float):
        self.trial = trial
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while True:
            try:
                self.trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            except Exception:  # the trial finished under us, or the storage hiccuped
                logger.debug("heartbeat of trial %d not written", self.trial.number,
                             exc_info=True)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"skcgcnn-heartbeat-{self.trial.number}")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _last_sign_of_life(trial: Any) -> float | None:
    beat = trial.user_attrs.get(HEARTBEAT_ATTR)
    if beat is not None:
        return float(beat)
    if trial.datetime_start is not None:
        return trial.datetime_start.timestamp()
    return None


def recover_stale_trials(study: Any, grace_period: float, max_retries: int = 2) -> list[int]:
    """Fail the running trials of dead workers and queue them again.

    A running trial whose heartbeat (:data:`HEARTBEAT_ATTR`, written by :func:`tune`'s
    workers) is older than ``grace_period`` seconds is marked FAIL and, unless it was
    already retried ``max_retries`` times, queued again with the same parameters (user
    attributes ``retry_of``: the first trial's number, ``retry_count``).  Several
    workers may call this at once: a trial is failed and queued by one of them only.

    Returns
    -------
    list of int
        Numbers of the trials this call failed.
    """
    require("optuna")
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = _last_sign_of_life(trial)
        if last is None or now - last < grace_period:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=False)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # another worker got there first, or the trial just finished
        failed.append(trial.number)
        root = trial.user_attrs.get("retry_of", trial.number)
        count = int(trial.user_attrs.get("retry_count", 0)) + 1
        if count > max_retries:
            logger.warning("trial %d: its worker stopped answering %.0f s ago; it was tried "
                           "%d times, not again", trial.number, now - last, count)
            continue
        study.enqueue_trial(dict(trial.params),
                            user_attrs={"retry_of": root, "retry_count": count})
        logger.warning("trial %d: its worker stopped answering %.0f s ago; marked failed and "
                       "queued again", trial.number, now - last)
    return failed


# ----------------------------------------------------------------------------------
# the study run (one per process)
# ----------------------------------------------------------------------------------
class _BudgetReached(Exception):
    """The study already has its trials; this one was not run."""


class _QuietSkips(logging.Filter):
    """Drops Optuna's failure messages (and traceback) of trials skipped by the budget."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed") for n in self.numbers)


def _finished_count(trials: Sequence[Any]) -> int:
    """Trials that count against ``n_trials``: complete, pruned, failed on an error."""
    from optuna.trial import TrialState

    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def _make_pruner(spec: Any, max_steps: int, max_epochs: int | None = None) -> Any:
    optuna = require("optuna")
    if spec is None or spec == "none":
        return optuna.pruners.NopPruner()
    if isinstance(spec, str):
        if spec == "median":
            # CGCNN's validation error is erratic in the first epochs (Adam, BatchNorm):
            # on 2,000 MP crystals, a warm-up of a sixth of the epochs pruned the trial
            # that ended best; half of them kept it (docs/tuning.md)
            epochs = max_steps if max_epochs is None else max_epochs
            return optuna.pruners.MedianPruner(n_startup_trials=4,
                                               n_warmup_steps=max(1, epochs // 2))
        if spec == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=max(1, max_steps // 10),
                                                  max_resource=max_steps)
        if spec == "successive-halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_steps // 10))
        raise ValueError(f"pruner={spec!r}: use 'median', 'hyperband', 'successive-halving', "
                         "'none' or an optuna pruner")
    return spec


def _silenced_optuna(verbose: int):
    optuna = require("optuna")

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        old = optuna.logging.get_verbosity()
        if verbose < 2:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(old)
    return ctx()


@dataclass
class _Run:
    """Everything a worker process needs to take part in the study (picklable)."""

    cache: GraphCache
    y: np.ndarray
    splits: list
    space: SearchSpace
    choices: list
    storage: Any
    study_name: str
    pruner: Any
    sampler: Any
    n_trials: int | None
    max_epochs: int
    random_state: int | None
    device: str
    heartbeat_interval: float
    grace_period: float
    max_retries: int
    verbose: int
    study_attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tables: dict = {}
        self._quiet = _QuietSkips()
        self._last_number: int | None = None
        self._fatal: Exception | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tables"] = {}
        state["_quiet"] = _QuietSkips()
        return state

    # -- study ---------------------------------------------------------------------
    def open_study(self, worker: int, storage: Any = None, check: bool = False) -> Any:
        """Create or load the study; with ``check``, also :meth:`check_study` it."""
        optuna = require("optuna")
        storage = make_storage(self.storage) if storage is None else storage
        sampler = self.sampler
        if sampler is None:
            seed = None
            if self.random_state is not None:
                # differs between workers, and from a previous run of the same study
                existing = 0
                with contextlib.suppress(KeyError):
                    existing = len(optuna.load_study(study_name=self.study_name,
                                                     storage=storage).trials)
                seed = (int(self.random_state) + 7919 * worker + 104729 * existing) % 2 ** 31
            n_start = 10 if self.n_trials is None else min(10, max(3, self.n_trials // 3))
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_start)
        pruner = _make_pruner(self.pruner, self.max_epochs * len(self.splits),
                              self.max_epochs)

        def create() -> Any:
            return optuna.create_study(storage=storage, study_name=self.study_name,
                                       direction="minimize", load_if_exists=True,
                                       sampler=sampler, pruner=pruner)

        # another process may be creating the same study (see _retry_creation)
        with _storage_lock(getattr(storage, "url", None)):
            study = _retry_creation(create, f"study {self.study_name!r}")
            if check:
                self.check_study(study)
        return study

    def check_study(self, study: Any) -> None:
        """Store the run's settings in a new study; refuse to mix with another one's."""
        stored = study.user_attrs.get(_STUDY_ATTR)
        if stored is None:
            study.set_user_attr(_STUDY_ATTR, self.study_attrs)
            # read back: a process that set them at the same moment may have won
            stored = study.user_attrs.get(_STUDY_ATTR, self.study_attrs)
        diff = {k: (stored.get(k), v) for k, v in self.study_attrs.items()
                if stored.get(k) != v}
        if diff:
            lines = "; ".join(f"{k}: study has {a!r}, this run {b!r}" for k, (a, b) in
                              diff.items())
            raise ValueError(
                f"study {self.study_name!r} was run on other data or settings ({lines}); "
                "its trials cannot be compared with this run's: use another study name, or "
                "the same data and settings to resume it")

    # -- one trial -----------------------------------------------------------------
    def _check_budget(self, trial: Any) -> None:
        from optuna.trial import TrialState

        trials = trial.study.get_trials(deepcopy=False)
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING
                    and t.number < trial.number)
        if _finished_count(trials) + ahead >= self.n_trials:
            self._quiet.numbers.add(trial.number)
            trial.set_user_attr("skipped", "the study had its n_trials when this trial began")
            raise _BudgetReached(f"the study already has {self.n_trials} trials; trial "
                                 f"{trial.number} was not run")

    def objective(self, trial: Any) -> float:
        optuna = require("optuna")
        if self.n_trials is not None:
            self._check_budget(trial)
        self._last_number = trial.number
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        beat = (_Heartbeat(trial, self.heartbeat_interval)
                if getattr(self, "_persistent", True) else contextlib.nullcontext())
        with beat:
            try:
                return self._evaluate(trial)
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                from .graph import StructureError

                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
                if isinstance(exc, StructureError):
                    self._fatal = exc  # bad data, not a bad trial: stop the study
                raise

    def _evaluate(self, trial: Any) -> float:
        from skorch.helper import predefined_split

        from .estimators import CGCNNRegressor, GraphDataset

        start = time.perf_counter()
        cfg = self.space.suggest(trial, self.choices)
        graphs, kept = self.cache.get(cfg.radius, cfg.max_num_nbr)
        table = _resolve_table(cfg.atom_features, self._tables)
        graphs = graphs.with_atom_features(table)
        trial.set_user_attr("atom_features", table.name)
        y = self.y[kept]
        row_of = np.full(len(self.y), -1, dtype=np.int64)
        row_of[kept] = np.arange(len(kept))
        root = int(trial.user_attrs.get("retry_of", trial.number))
        seed = None if self.random_state is None else int(self.random_state) + root
        maes, bests = [], []
        for k, (train, valid) in enumerate(self.splits):
            r_train = row_of[train][row_of[train] >= 0]
            r_valid = row_of[valid][row_of[valid] >= 0]
            est = CGCNNRegressor(
                max_epochs=self.max_epochs, random_state=seed, device=self.device,
                train_split=predefined_split(GraphDataset(graphs[r_valid], y[r_valid])),
                callbacks=[("valid_mae", ValidationMAE()),
                           ("pruning", PruningCallback(
                               trial, "valid_mae", k * self.max_epochs,
                               prune_last_epoch=k < len(self.splits) - 1))],
                **cfg.estimator_params)
            est.fit(graphs[r_train], y[r_train])
            curve = [float(v) for v in est.history[:, "valid_mae"]]
            maes.append(curve[-1])
            bests.append(min(curve))
        value = float(np.mean(maes))
        trial.set_user_attr("valid_mae_folds", maes)
        trial.set_user_attr("valid_mae_best_epoch", float(np.mean(bests)))
        trial.set_user_attr("fit_s", round(time.perf_counter() - start, 2))
        if not math.isfinite(value):
            raise require("optuna").TrialPruned(f"valid_mae is {value}: diverged")
        return value

    # -- the worker loop -----------------------------------------------------------
    def work(self, worker: int, deadline: float | None = None, progress: Any = None,
             storage: Any = None, ready: Path | None = None) -> Any:
        """Run trials until the study has ``n_trials`` finished ones or time is up.

        ``ready``: a file created once the study is open (worker processes tell the
        starting process that they are about to run trials).
        """
        optuna = require("optuna")
        storage = make_storage(self.storage) if storage is None else storage
        persistent = self._persistent = _is_persistent(storage)
        poll = max(0.1, min(float(self.heartbeat_interval), 1.0))
        catch = (Exception,)
        self._quiet = _QuietSkips()
        optuna_log = logging.getLogger("optuna.study._optimize")
        optuna_log.addFilter(self._quiet)
        with _silenced_optuna(self.verbose), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = self.open_study(worker, storage)
            if ready is not None:
                Path(ready).touch()
            try:
                self._loop(study, worker, deadline, progress, persistent, poll, catch)
            finally:
                optuna_log.removeFilter(self._quiet)
        return study

    def _loop(self, study: Any, worker: int, deadline: float | None, progress: Any,
              persistent: bool, poll: float, catch: tuple) -> None:
        from optuna.trial import TrialState

        while True:
            if persistent:
                recover_stale_trials(study, self.grace_period, self.max_retries)
            trials = study.get_trials(deepcopy=False)
            done = _finished_count(trials)
            if progress is not None:
                progress(study, trials, done)
            if self.n_trials is not None and done >= self.n_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if self.n_trials is not None and done + running >= self.n_trials:
                time.sleep(poll)  # the last trials are in flight elsewhere
                continue
            self._last_number = None
            self._fatal = None
            study.optimize(self.objective, n_trials=1, catch=catch)
            if self._fatal is not None:
                raise self._fatal
            if self._last_number is not None and self.verbose:
                _log_trial(study.get_trials(deepcopy=False)[self._last_number])


def _log_trial(trial: Any) -> None:
    from optuna.trial import TrialState

    features = trial.user_attrs.get("atom_features")
    if trial.state == TrialState.COMPLETE:
        logger.info("trial %d complete: valid MAE %.4f (%s, %s s)", trial.number, trial.value,
                    features, trial.user_attrs.get("fit_s"))
    elif trial.state == TrialState.PRUNED:
        steps = trial.intermediate_values
        last = steps[max(steps)] if steps else float("nan")
        logger.info("trial %d pruned after %d epochs: valid MAE %.4f (%s)", trial.number,
                    len(steps), last, features)
    elif trial.user_attrs.get("error"):
        logger.info("trial %d failed: %s", trial.number, trial.user_attrs["error"])


def _worker_main(argv: Sequence[str]) -> int:
    """Body of a worker process started by :func:`tune` (``n_workers > 1``).

    ``argv``: payload path, worker index, torch threads, timeout in s (or "None"), log level.
    """
    import torch

    payload_path, worker, threads = argv[0], int(argv[1]), int(argv[2])
    deadline_s = None if argv[3] == "None" else float(argv[3])
    log_level = int(argv[4])

    logging.basicConfig(level=log_level, format=f"[worker {worker}] %(levelname)s "
                        "%(name)s: %(message)s")
    torch.set_num_threads(max(1, int(threads)))
    with open(payload_path, "rb") as fh:
        run: _Run = pickle.load(fh)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    run.work(worker, deadline, ready=Path(payload_path).with_name(f"ready-{worker}"))
    return 0


# ----------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------
def evaluate_baselines(structures: Sequence[Any], y: np.ndarray, splits: Sequence,
                       names: Sequence[str], *, max_epochs: int = 30,
                       random_state: int | None = 0, graph_cache: GraphCache | None = None,
                       n_jobs: int | None = None, device: str = "cpu") -> dict[str, float]:
    """Validation MAE of reference models on the study's own split(s).

    Parameters
    ----------
    structures : sequence of Structure
    y : ndarray of shape (n,)
    splits : list of (train, valid) index arrays
    names : sequence of str
        ``"cgcnn"`` (CGCNN as ``skcgcnn benchmark`` trains it: the original settings,
        SGD with lr 0.01, radius 8 Å, 12 neighbours, the full CGCNN features, mini-batches
        of :data:`skcgcnn.benchmark.DEFAULT_BATCH_SIZE`, for ``max_epochs``) and names of
        :data:`skcgcnn.baselines.BASELINES` (``"magpie-rf"``, ``"structure-gb"``,
        ``"dummy"``).
    max_epochs : int, default=30
        Epochs of the default CGCNN (use the study's, for a fair comparison).
    random_state : int or None, default=0
    graph_cache : GraphCache, optional
        Reuses the study's graphs for the default CGCNN.

    Returns
    -------
    dict of str -> float
        Mean validation MAE over the splits.
    """
    from sklearn.metrics import mean_absolute_error

    from .estimators import CGCNNRegressor

    y = np.asarray(y, dtype=float)
    items = list(structures)
    out: dict[str, float] = {}
    for name in names:
        maes = []
        start = time.perf_counter()
        for train, valid in splits:
            if name == DEFAULT_CGCNN:
                cache = graph_cache or GraphCache(items, n_jobs=n_jobs)
                graphs, kept = cache.get(8.0, 12)
                graphs = graphs.with_atom_features("cgcnn")
                row_of = np.full(len(y), -1, dtype=np.int64)
                row_of[kept] = np.arange(len(kept))
                r_train = row_of[train][row_of[train] >= 0]
                r_valid = row_of[valid][row_of[valid] >= 0]
                from .benchmark import DEFAULT_BATCH_SIZE

                est = CGCNNRegressor(max_epochs=max_epochs, batch_size=DEFAULT_BATCH_SIZE,
                                     random_state=random_state, device=device)
                est.fit(graphs[r_train], y[kept][r_train])
                maes.append(mean_absolute_error(y[kept][r_valid], est.predict(graphs[r_valid])))
            else:
                from .baselines import make_baseline

                model = make_baseline(name, n_jobs=n_jobs, random_state=random_state)
                model.fit([items[i] for i in train], y[train])
                maes.append(mean_absolute_error(y[valid],
                                                model.predict([items[i] for i in valid])))
        out[name] = float(np.mean(maes))
        logger.info("baseline %s: valid MAE %.4f (%.0f s)", name, out[name],
                    time.perf_counter() - start)
    return out


def read_benchmark_maes(path: str | os.PathLike) -> dict[str, float]:
    """MAEs from a ``skcgcnn benchmark`` ``results.csv`` (columns ``model``, ``mae_mean``)."""
    table = pd.read_csv(path)
    if "model" not in table.columns or "mae_mean" not in table.columns:
        raise ValueError(f"{os.fspath(path)!r} has no 'model' and 'mae_mean' columns; give the "
                         "results.csv written by skcgcnn benchmark")
    return {str(m): float(v) for m, v in zip(table["model"], table["mae_mean"])}


# ----------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------
_TABLE_PARAMS = ("n_conv", "atom_fea_len", "h_fea_len", "n_h", "conv", "optimizer", "lr",
                 "weight_decay", "batch_size", "radius", "max_num_nbr")


def trials_table(study: Any, space: SearchSpace | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs run, duration, the configuration."""
    space = space or SearchSpace()
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name,
                               "valid_mae": t.value,
                               "epochs": len(t.intermediate_values),
                               "duration_s": (t.duration.total_seconds()
                                              if t.duration is not None else np.nan),
                               "atom_features": t.user_attrs.get("atom_features")}
        try:
            cfg = space.config(t.params)
            est = cfg.estimator_params
            row.update(n_conv=est["module__n_conv"], atom_fea_len=est["module__atom_fea_len"],
                       h_fea_len=est["module__h_fea_len"], n_h=est["module__n_h"],
                       conv=est["module__conv"], optimizer=est["optimizer"], lr=est["lr"],
                       weight_decay=est["optimizer__weight_decay"],
                       batch_size=est["batch_size"], radius=cfg.radius,
                       max_num_nbr=cfg.max_num_nbr)
        except ValueError:
            pass  # a trial that failed before sampling everything
        row["worker"] = t.user_attrs.get("worker")
        row["retry_of"] = t.user_attrs.get("retry_of")
        row["error"] = t.user_attrs.get("error") or t.user_attrs.get("skipped")
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def best_trials_markdown(study: Any, space: SearchSpace | None = None, k: int = 10) -> str:
    """The ``k`` best complete trials as a markdown table (lowest validation MAE first)."""
    table = trials_table(study, space)
    if table.empty:
        return "(no trials)"
    done = table[table["state"] == "COMPLETE"].sort_values("valid_mae").head(k)
    cols = ["number", "valid_mae", "atom_features"] + [c for c in _TABLE_PARAMS
                                                        if c in done.columns]
    cols += ["epochs", "duration_s"]
    return _markdown(done[cols])


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_against_baselines(best_value: float, baselines: Mapping[str, float], path: Path,
                           label: str = "tuned CGCNN", title: str = "validation MAE") -> Path:
    """Horizontal bars: the study's best validation MAE beside the baselines' MAE."""
    from matplotlib.figure import Figure

    names = [label] + list(baselines)
    values = [best_value] + [float(v) for v in baselines.values()]
    fig = Figure(figsize=(6.4, 0.6 * len(names) + 1.2))
    ax = fig.subplots()
    colors = ["tab:blue"] + ["tab:gray"] * len(baselines)
    bars = ax.barh(names[::-1], values[::-1], color=colors[::-1])
    for bar, value in zip(bars, values[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.4f}",
                va="center")
    ax.set_xlabel("MAE")
    ax.set_title(title)
    ax.set_xlim(0, max(values) * 1.25 if values and max(values) > 0 else 1)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_results(study: Any, output_dir: str | os.PathLike, *, space: SearchSpace | None = None,
                  baselines: Mapping[str, float] | None = None, target_name: str = "target",
                  extra: Mapping[str, Any] | None = None) -> list[Path]:
    """Write tables and plots of a study into ``output_dir``.

    ========================  =========================================================
    ``trials.csv``            every trial (:func:`trials_table`)
    ``best_trials.md/.csv``   the ten best complete trials
    ``history.png``           optimisation history (Optuna's matplotlib plot)
    ``intermediate.png``      validation MAE per epoch of every trial (pruning at work)
    ``importances.png``       parameter importances (fANOVA), when 2+ trials completed
    ``baselines.png``         the best validation MAE beside the baselines' MAE
    ``summary.json``          counts per state, the best trial, baselines, ``extra``
    ========================  =========================================================
    """
    optuna = require("optuna")
    from optuna.visualization import matplotlib as ovm
    from optuna.trial import TrialState

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    table = trials_table(study, space)
    table.to_csv(out / "trials.csv", index=False)
    files.append(out / "trials.csv")
    md = best_trials_markdown(study, space)
    (out / "best_trials.md").write_text(
        f"# Best trials of study {study.study_name!r}\n\nValidation MAE of {target_name}.\n\n"
        f"{md}\n", encoding="utf-8")
    files.append(out / "best_trials.md")
    if not table.empty:
        done = table[table["state"] == "COMPLETE"].sort_values("valid_mae").head(10)
        done.to_csv(out / "best_trials.csv", index=False)
        files.append(out / "best_trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # fANOVA's "some regimes ... have less than 2 trials": expected in small studies
        warnings.filterwarnings("ignore", message="Some regimes for parameter")
        plots = [("history.png", ovm.plot_optimization_history, 1),
                 ("intermediate.png", ovm.plot_intermediate_values, 1),
                 ("importances.png", ovm.plot_param_importances, 2)]
        for name, plot, needed in plots:
            if len(complete) < needed:
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                logger.warning("%s not drawn: %s", name, exc)
                continue
            if name == "history.png":
                ax.set_ylabel(f"validation MAE, {target_name}")
            elif name == "intermediate.png":
                ax.set_ylabel(f"validation MAE, {target_name}")
                ax.set_xlabel("epoch (with k folds: fold × max_epochs + epoch)")
            files.append(_save(ax.figure, out / name))
    best = min(complete, key=lambda t: t.value) if complete else None
    if best is not None and baselines:
        files.append(plot_against_baselines(
            best.value, baselines, out / "baselines.png",
            label=f"tuned CGCNN (trial {best.number})",
            title=f"validation MAE, {target_name}"))
    states = {s.name: sum(1 for t in study.trials if t.state == s) for s in TrialState}
    summary = {"study_name": study.study_name, "trials": states,
               "best_trial": None if best is None else best.number,
               "best_valid_mae": None if best is None else best.value,
               "best_params": None if best is None else best.params,
               "best_atom_features": None if best is None else
               best.user_attrs.get("atom_features"),
               "baselines": dict(baselines or {}), **dict(extra or {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str),
                                      encoding="utf-8")
    files.append(out / "summary.json")
    return files


# ----------------------------------------------------------------------------------
# tune
# ----------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What :func:`tune` returns; unpacks as ``study, best_pipeline = tune(...)``.

    Attributes
    ----------
    study : optuna.Study
    best_pipeline : sklearn Pipeline or None
        The best configuration refitted on all the data (None with ``refit=False``).
    best_params : dict
    best_value : float
        The best validation MAE.
    best_config : TrialConfig
    baselines : dict of str -> float
        Validation MAE of the reference models on the same split(s).
    trials : DataFrame
        :func:`trials_table` of the study.
    wall_s : float
        Wall time of this call.
    files : list of Path
        Files written into ``output_dir``.
    graph_builds : int
        Neighbour searches run by this process.
    """

    study: Any
    best_pipeline: Any
    best_params: dict
    best_value: float
    best_config: TrialConfig
    baselines: dict
    trials: pd.DataFrame
    wall_s: float
    files: list = field(default_factory=list)
    graph_builds: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.study, self.best_pipeline))


def _as_structures(structures: Any) -> tuple[list, list]:
    from .transformers import to_structure

    if isinstance(structures, pd.DataFrame):
        if "structure" not in structures.columns:
            raise ValueError("a DataFrame passed to tune needs a 'structure' column")
        structures = structures["structure"]
    if isinstance(structures, pd.Series):
        items, ids = list(structures.values), list(structures.index)
    else:
        items = list(structures)
        ids = list(range(len(items)))
    out = []
    for i, obj in enumerate(items):
        name = f"structure {i}" if ids[i] == i else f"structure {i} ({ids[i]})"
        structure = to_structure(obj, name)
        if not (hasattr(structure, "lattice") and hasattr(structure, "frac_coords")):
            raise TypeError(f"{name} is a {type(obj).__name__}, not a crystal structure; pass "
                            "pymatgen Structures, ASE Atoms or CIF file paths")
        out.append(structure)
    return out, ids


def _splits(n: int, cv: Any, validation_fraction: float,
            random_state: int | None) -> tuple[list, str]:
    from sklearn.model_selection import KFold, train_test_split

    positions = np.arange(n)
    if cv is None:
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction={validation_fraction!r}: use a fraction "
                             "between 0 and 1")
        train, valid = train_test_split(positions, test_size=validation_fraction,
                                        random_state=random_state)
        return [(np.sort(train), np.sort(valid))], (
            f"holdout validation_fraction={validation_fraction} seed={random_state}")
    if isinstance(cv, (int, np.integer)):
        if cv < 2:
            raise ValueError(f"cv={cv}: use at least 2 folds, or cv=None for one "
                             "validation split")
        splitter = KFold(int(cv), shuffle=True, random_state=random_state)
        desc = f"KFold({int(cv)}) seed={random_state}"
    else:
        splitter, desc = cv, repr(cv)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(positions)], desc


def tune(structures: Any, y: Any, *, space: SearchSpace | None = None,
         n_trials: int | None = 20, timeout: float | None = None, max_epochs: int = 30,
         cv: Any = None, validation_fraction: float = 0.2, storage: Any = None,
         study_name: str | None = None, pruner: Any = "median", sampler: Any = None,
         random_state: int | None = 0, n_workers: int = 1, output_dir: Any = None,
         graph_cache: Any = None, baselines: Any = None, refit: bool = True,
         refit_epochs: int | None = None, enqueue: Sequence[Mapping] | None = None,
         device: str = "cpu", heartbeat_interval: float = 20.0, grace_period: float = 90.0,
         max_retries: int = 2, n_jobs: int | None = None, on_error: str = "raise",
         target_name: str = "target", verbose: int = 1) -> TuneResult:
    """Search CGCNN hyper-parameters with Optuna; refit the best on all the data.

    Every trial trains a :class:`~skcgcnn.estimators.CGCNNRegressor` for ``max_epochs``
    on the training rows and scores the mean absolute error on the validation rows
    after the last epoch (mean over folds with ``cv``); the study minimises it.  The
    validation MAE is reported each epoch for pruning.

    Parameters
    ----------
    structures : list, array or Series of Structure (or CIF paths / ASE Atoms)
        A Series' index gives the ids.
    y : array-like of shape (n,)
    space : SearchSpace, optional
        What to search (default ``SearchSpace()``).
    n_trials : int or None, default=20
        Finished trials (complete, pruned, or failed on an error) the *study* should
        have: workers stop when it has them, and a resumed study only runs the rest.
        Pass a larger number to add trials to an existing study.  None: until
        ``timeout``.
    timeout : float, optional
        Seconds after which no new trial is started (per call).
    max_epochs : int, default=30
        Epochs per trial (and per fold).
    cv : int or splitter, optional
        k-fold cross-validation instead of one validation split; pruning steps run
        over ``fold * max_epochs + epoch``.
    validation_fraction : float, default=0.2
        Share of the rows held out for validation when ``cv`` is None.
    storage : str, path or optuna storage, optional
        Where the study lives (see :func:`make_storage`).  Default: an SQLite file,
        ``<output_dir>/study.db`` or ``<skcgcnn cache>/studies/<study_name>.db``.
        ``":memory:"`` keeps nothing.
    study_name : str, optional
        An existing study of that name is resumed (it must have been run on the same
        data, split, epochs and search space).  Default: ``skcgcnn-<hash>`` of the data
        and those settings, so running the same call again resumes its study.
    pruner : {"median", "hyperband", "successive-halving", "none"} or optuna pruner
        ``"median"``: ``MedianPruner(n_startup_trials=4, n_warmup_steps=max_epochs // 2)``
        (CGCNN's early validation error says little about its final one, see
        docs/tuning.md).
    sampler : optuna sampler, optional
        Default: ``TPESampler`` seeded from ``random_state``, the worker and the trials
        already in the study (so workers and resumed runs do not repeat each other).
    random_state : int or None, default=0
        Seeds the split, the samplers and each trial's network (seed + trial number).
    n_workers : int, default=1
        Processes that run trials at once on one storage (this one and
        ``n_workers - 1`` started ones, each with ``cpu_count // n_workers`` torch
        threads).  Needs a storage that is not ``":memory:"``.  For more machines, run
        ``tune`` (or ``skcgcnn tune``) on each with the same storage and study name.
    output_dir : str or Path, optional
        Write :func:`write_results`'s tables and plots here (and the default SQLite file).
    graph_cache : str or Path, optional
        Folder for graph files shared between processes and runs.  With
        ``n_workers > 1`` and none given, a temporary folder is used for this call.
    baselines : sequence of str, mapping, str or Path, optional
        Reference MAEs drawn beside the best: names for :func:`evaluate_baselines` on
        the same split(s) (``"cgcnn"``, ``"magpie-rf"``, ``"structure-gb"``,
        ``"dummy"``), a mapping ``{name: mae}``, or a ``skcgcnn benchmark``
        ``results.csv``.  Computed values are kept in the study and not recomputed.
    refit : bool, default=True
        Fit the best configuration on all rows and return it as a Pipeline.
    refit_epochs : int, optional
        Epochs of the refit (default ``max_epochs``).
    enqueue : sequence of dict, optional
        Parameter sets to try first (``study.enqueue_trial``; skipped when the study
        already has them).
    device : {"cpu", "cuda", "auto"}, default="cpu"
    heartbeat_interval, grace_period : float, default=20, 90
        Running trials write a heartbeat every ``heartbeat_interval`` s; one silent for
        ``grace_period`` s belongs to a dead worker and is failed and run again (at most
        ``max_retries`` times).
    n_jobs : int, optional
        Processes for the neighbour search.
    on_error : {"raise", "skip"}, default="raise"
        Structures that cannot become graphs: an error, or left out.
    target_name : str, default="target"
        Name of the target for tables and plots.
    verbose : int, default=1
        0: quiet; 1: a progress bar and a log line per trial; 2: also Optuna's own logs.

    Returns
    -------
    TuneResult
        ``result.study``, ``result.best_pipeline`` (also ``study, model = tune(...)``).

    Examples
    --------
    >>> from skcgcnn.datasets import load_cgcnn_folder
    >>> df = load_cgcnn_folder("../shared/data/mp-formation-energy-36737/sample-500")  # doctest: +SKIP
    >>> result = tune(df["structure"], df["target"], n_trials=20, max_epochs=30,
    ...               output_dir="results/tune", baselines=["cgcnn", "magpie-rf"])  # doctest: +SKIP
    >>> result.best_pipeline.predict(new_structures)  # doctest: +SKIP
    """
    optuna = require("optuna")
    start = time.perf_counter()
    space = space or SearchSpace()
    space.validate()
    if n_trials is not None and (not isinstance(n_trials, (int, np.integer)) or n_trials < 1):
        raise ValueError(f"n_trials={n_trials!r}: use a positive integer or None")
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials or timeout (or both); otherwise the study never ends")
    if not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
        raise ValueError(f"max_epochs={max_epochs!r}: use a positive integer")
    if not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers={n_workers!r}: use a positive integer")
    items, ids = _as_structures(structures)
    y_arr = np.asarray(y, dtype=float)
    if y_arr.ndim != 1 or len(y_arr) != len(items):
        raise ValueError(f"y must be 1-D with one value per structure: {len(items)} "
                         f"structures, y of shape {y_arr.shape}")
    bad = np.flatnonzero(~np.isfinite(y_arr))
    if bad.size:
        raise ValueError(f"y is NaN or infinite for structure(s) {bad[:5].tolist()} (ids "
                         f"{[ids[i] for i in bad[:5]]}); drop them first")
    if n_workers > 1 and storage is not None and \
            _storage_kind(storage) in ("memory", "object"):
        raise ValueError("n_workers > 1 needs a storage the worker processes can open: give "
                         "a URL or a file path, not ':memory:' or a storage object")
    splits, split_desc = _splits(len(items), cv, validation_fraction, random_state)
    tmp_cache = None
    if graph_cache is None and n_workers > 1:
        tmp_cache = tempfile.mkdtemp(prefix="skcgcnn-graphs-")
        graph_cache = tmp_cache
    cache = GraphCache(items, ids=ids, dmin=space.dmin, step=space.step, cache_dir=graph_cache,
                       n_jobs=n_jobs, on_error=on_error)
    numbers = np.asarray([z for s in items for z in _site_numbers(s)], dtype=np.int64)
    tables: dict = {}
    choices = usable_atom_feature_choices(space.atom_feature_choices(), numbers, tables)
    if not choices:
        raise ValueError(f"none of the atom-feature sets {space.atom_feature_choices()} covers "
                         "every element of the data (see the warnings above)")
    digest = hashlib.sha1(cache.fingerprint.encode() + y_arr.tobytes()).hexdigest()
    study_attrs = {"n_samples": len(items), "data_sha1": digest, "validation": split_desc,
                   "max_epochs": int(max_epochs),
                   "atom_feature_choices": [str(c) for c in choices],
                   "space": space.to_dict()}
    if study_name is None:
        # the same data and settings give the same name: running again resumes
        key = json.dumps(study_attrs, sort_keys=True).encode()
        study_name = f"skcgcnn-{hashlib.sha1(key).hexdigest()[:10]}"
    if storage is None:
        storage = default_storage(output_dir, study_name)
    logger.info("study %r in %s", study_name,
                storage if isinstance(storage, (str, os.PathLike)) else type(storage).__name__)
    run = _Run(cache=cache, y=y_arr, splits=splits, space=space, choices=choices,
               storage=storage if _storage_kind(storage) != "object" else None,
               study_name=study_name, pruner=pruner, sampler=sampler, n_trials=n_trials,
               max_epochs=int(max_epochs), random_state=random_state, device=device,
               heartbeat_interval=heartbeat_interval, grace_period=grace_period,
               max_retries=max_retries, verbose=verbose,
               study_attrs=study_attrs)
    run._tables.update(tables)
    storage_obj = make_storage(storage)
    if _storage_kind(storage) == "object":
        run.storage = storage_obj
    with _silenced_optuna(verbose):
        # created here, before any worker process starts: the workers only load it
        study = run.open_study(0, storage_obj, check=True)
    first_new = len(study.get_trials(deepcopy=False))  # trials from here on are this call's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in enqueue or ():
            study.enqueue_trial(dict(params), skip_if_exists=True)

    procs: list[subprocess.Popen] = []
    payload_dir = None
    threads_before = None
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    try:
        if n_workers > 1:
            import torch

            threads = max(1, (os.cpu_count() or 1) // int(n_workers))
            payload_dir = tempfile.mkdtemp(prefix="skcgcnn-tune-")
            payload = os.path.join(payload_dir, "run.pkl")
            with open(payload, "wb") as fh:
                pickle.dump(run, fh)
            level = logging.INFO if verbose >= 2 else logging.WARNING
            env = dict(os.environ)
            package_root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_root, env.get("PYTHONPATH")) if p)
            code = ("import sys; from skcgcnn.tuning import _worker_main; "
                    "sys.exit(_worker_main(sys.argv[1:]))")
            for worker in range(1, int(n_workers)):
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", code, payload, str(worker), str(threads),
                     str(timeout), str(level)], env=env))
            threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
            _wait_until_ready(procs, Path(payload_dir))
        study = _work_with_progress(run, deadline, verbose, storage_obj)
        for proc in procs:
            proc.wait()
        failed = [p.returncode for p in procs if p.returncode != 0]
        if failed:
            logger.warning("%d worker process(es) ended with an error (exit codes %s); see "
                           "their messages above", len(failed), failed)
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        raise
    finally:
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
        if payload_dir is not None:
            shutil.rmtree(payload_dir, ignore_errors=True)

    from optuna.trial import TrialState

    _check_new_trials(study, first_new, tmp_cache)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        if tmp_cache:
            shutil.rmtree(tmp_cache, ignore_errors=True)
        raise RuntimeError(
            f"study {study_name!r} has no complete trial"
            + (f"; the first error was: {errors[0]}" if errors else
               " (all were pruned, or time ran out: allow more trials or time)"))
    best = min(complete, key=lambda t: t.value)
    best_cfg = space.config(best.params)

    base_values = _baseline_values(baselines, study, items, y_arr, splits, max_epochs,
                                   random_state, cache, n_jobs, device)
    files: list = []
    wall = time.perf_counter() - start
    if output_dir is not None:
        files = write_results(study, output_dir, space=space, baselines=base_values,
                              target_name=target_name,
                              extra={"wall_s_this_call": round(wall, 1),
                                     "validation": split_desc, "max_epochs": int(max_epochs),
                                     "n_samples": len(items)})
    pipeline = None
    if refit:
        pipeline = _refit(best_cfg, cache, y_arr, refit_epochs or max_epochs, random_state,
                          device, tables)
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    return TuneResult(study=study, best_pipeline=pipeline, best_params=dict(best.params),
                      best_value=float(best.value), best_config=best_cfg,
                      baselines=base_values, trials=trials_table(study, space),
                      wall_s=time.perf_counter() - start, files=files,
                      graph_builds=cache.builds)


def _check_new_trials(study: Any, first_new: int, tmp_cache: str | None) -> None:
    """Refuse a call whose every trial failed on an error; warn when some did.

    Failed trials count toward ``n_trials`` (so a trial that always fails cannot loop
    forever), and a resumed study keeps its earlier complete trials: without this check
    a call whose own trials all failed (on a broken disk, bad data) would report the
    old best as its result and exit 0.
    """
    from optuna.trial import TrialState

    ran = [t for t in study.get_trials(deepcopy=False) if t.number >= first_new
           and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
           and "skipped" not in t.user_attrs]
    failed = [t for t in ran if t.state == TrialState.FAIL and "error" in t.user_attrs]
    if not failed:
        return
    first = f"trial {failed[0].number}: {failed[0].user_attrs['error']}"
    if len(failed) < len(ran):
        logger.warning("%d of the %d trials run in study %r failed; the first was %s",
                       len(failed), len(ran), study.study_name, first)
        return
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    raise RuntimeError(
        f"all {len(ran)} trials run in study {study.study_name!r} failed; the first was "
        f"{first}. Failed trials count toward n_trials: fix the cause, then run again with "
        "a larger n_trials (or another study name)")


def _wait_until_ready(procs: Sequence[subprocess.Popen], folder: Path,
                      timeout: float = 300.0) -> None:
    """Wait until every worker process has opened the study (or ended), so that all
    start taking trials together."""
    start = time.monotonic()
    pending = dict(enumerate(procs, start=1))
    while pending and time.monotonic() - start < timeout:
        for worker, proc in list(pending.items()):
            if (folder / f"ready-{worker}").exists():
                del pending[worker]
            elif proc.poll() is not None:
                logger.warning("worker process %d ended before it started (exit code %s)",
                               worker, proc.returncode)
                del pending[worker]
        time.sleep(0.1)
    if pending:
        logger.warning("worker process(es) %s are still starting after %.0f s; going on",
                       sorted(pending), timeout)


def _work_with_progress(run: _Run, deadline: float | None, verbose: int, storage: Any) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(total=run.n_trials, desc=f"study {run.study_name}", unit="trial",
               disable=verbose < 1)

    def progress(study: Any, trials: Sequence[Any], done: int) -> None:
        bar.n = done
        values = [t.value for t in trials if t.value is not None]
        if values:
            bar.set_postfix_str(f"best valid MAE {min(values):.4f}", refresh=False)
        bar.refresh()

    try:
        return run.work(0, deadline, progress, storage)
    finally:
        bar.close()


def _baseline_values(baselines: Any, study: Any, items: list, y: np.ndarray, splits: list,
                     max_epochs: int, random_state: int | None, cache: GraphCache,
                     n_jobs: int | None, device: str) -> dict[str, float]:
    if baselines is None:
        return {}
    if isinstance(baselines, Mapping):
        return {str(k): float(v) for k, v in baselines.items()}
    if isinstance(baselines, (str, os.PathLike)) and (
            os.fspath(baselines).endswith(".csv") or Path(baselines).is_file()):
        return read_benchmark_maes(baselines)
    names = [baselines] if isinstance(baselines, str) else list(baselines)
    stored = dict(study.user_attrs.get("baselines", {}))
    wanted = [n for n in names if n not in stored]
    if wanted:
        stored.update(evaluate_baselines(items, y, splits, wanted, max_epochs=max_epochs,
                                         random_state=random_state, graph_cache=cache,
                                         n_jobs=n_jobs, device=device))
        study.set_user_attr("baselines", stored)
    return {n: stored[n] for n in names}


def _refit(cfg: TrialConfig, cache: GraphCache, y: np.ndarray, epochs: int,
           random_state: int | None, device: str, tables: dict) -> Any:
    """The best configuration fitted on every row, as a Pipeline, from the cached graphs."""
    from .estimators import make_cgcnn_pipeline

    start = time.perf_counter()
    pipe = make_cgcnn_pipeline(graph_params=cfg.graph_params, max_epochs=int(epochs),
                               random_state=random_state, device=device,
                               **cfg.estimator_params)
    graphs, kept = cache.get(cfg.radius, cfg.max_num_nbr)
    graphs = graphs.with_atom_features(_resolve_table(cfg.atom_features, tables))
    pipe.named_steps["graph"].fit()  # learns nothing from the data
    pipe.named_steps["cgcnn"].fit(graphs, y[kept])
    logger.info("best configuration refitted on %d structures in %.0f s", len(kept),
                time.perf_counter() - start)
    return pipe


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is :func:`run_tune_command`.
    """
    p = subparsers.add_parser(
        "tune",
        help="search CGCNN hyper-parameters (atom features, depth, optimiser, graphs) "
             "with Optuna",
        description=(
            "Run (or resume) an Optuna study of CGCNN hyper-parameters on a CGCNN data "
            "folder: atom-feature set, n_conv, widths, optimiser, learning rate, weight "
            "decay, batch size, radius and max_num_nbr. Trials are pruned on the "
            "validation MAE. Several workers (--n-workers, or several machines with the "
            "same --storage and --study-name) share one study; a killed study resumes "
            "where it stopped."),
    )
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="a CGCNN data folder or archive: <id>.cif files (or cifs.tar.gz) "
                        "and a header-less id_prop.csv (id,target)")
    p.add_argument("--id-prop", default="id_prop.csv",
                   help="the id/target file inside DATA_DIR (default: id_prop.csv)")
    p.add_argument("--target", help="target column, when the id_prop file has several")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use a random subset of N structures (seeded by --random-state; the "
                        "same subset as skcgcnn benchmark --limit)")
    p.add_argument("--n-trials", type=int, default=20,
                   help="finished trials the study should have (default: 20)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="start no new trial after S seconds")
    p.add_argument("--epochs", type=int, default=30, help="epochs per trial (default: 30)")
    p.add_argument("--cv", type=int, metavar="K",
                   help="K-fold cross-validation instead of one validation split")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="held-out share when --cv is not given (default: 0.2)")
    p.add_argument("--storage", metavar="URL_OR_PATH",
                   help="sqlite:///file.db, postgresql://user:pw@host/db, a journal file "
                        "(*.log) or ':memory:' (default: OUTPUT_DIR/study.db, else the "
                        "skcgcnn cache folder)")
    p.add_argument("--study-name",
                   help="an existing study of that name is resumed (default: skcgcnn-<hash of "
                        "the data and settings>, so the same command resumes its study)")
    p.add_argument("--n-workers", type=int, default=1,
                   help="worker processes sharing the study on this machine (default: 1)")
    p.add_argument("--pruner", default="median",
                   choices=["median", "hyperband", "successive-halving", "none"],
                   help="pruning of unpromising trials (default: median)")
    p.add_argument("--space", metavar="JSON",
                   help="the search space as a JSON object (or the path of a .json file) with "
                        "SearchSpace fields, e.g. '{\"n_conv\": [1, 3], \"optimizer\": "
                        "\"adam\"}'; ranges are [low, high], choices lists, single values "
                        "fix a field")
    p.add_argument("--atom-features", metavar="LIST",
                   help="comma-separated atom-feature choices among cgcnn, onehot, magpie, "
                        "matscholar, megnet, cgcnn_groups (default: all)")
    p.add_argument("--radius", metavar="LIST", help="comma-separated radii in Å (default: 6,8)")
    p.add_argument("--max-num-nbr", metavar="LIST",
                   help="comma-separated neighbour counts (default: 8,12,16)")
    p.add_argument("--baselines", default="cgcnn,magpie-rf",
                   help="reference models scored on the same split, comma-separated among "
                        "cgcnn, magpie-rf, structure-gb, dummy, or a skcgcnn benchmark "
                        "results.csv; 'none' for none (default: cgcnn,magpie-rf)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="write tables and plots here (and the default study.db)")
    p.add_argument("--graph-cache", metavar="DIR",
                   help="keep built graphs here, shared by workers and later runs "
                        "(default: OUTPUT_DIR/graphs when --output-dir is given)")
    p.add_argument("--save-model", metavar="PATH",
                   help="refit the best configuration on all data and save it here "
                        "(skcgcnn.estimators.save_model format)")
    p.add_argument("--heartbeat-interval", type=float, default=20.0,
                   help="seconds between a running trial's heartbeats (default: 20)")
    p.add_argument("--grace-period", type=float, default=90.0,
                   help="a running trial silent this long (s) belongs to a dead worker and "
                        "is run again (default: 90)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of the subset, split, sampler and networks (default: 0)")
    p.add_argument("--n-jobs", type=int, default=None,
                   help="processes for reading CIFs and the neighbour search")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or auto")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=run_tune_command)
    return p


def _csv_list(text: str | None, kind: type) -> list | None:
    if text is None:
        return None
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def load_tuning_data(data_dir: str | os.PathLike, *, id_prop: str = "id_prop.csv",
                     target: str | None = None, limit: int | None = None,
                     random_state: int | None = 0, n_jobs: int | None = None,
                     cache: Any = True, verbose: int = 0) -> tuple[pd.Series, np.ndarray, str]:
    """Structures (a Series indexed by id), targets and the target's name from a CGCNN folder.

    ``limit`` picks ``sorted(default_rng(random_state).choice(n_rows, limit,
    replace=False))`` of the id_prop rows (the rule of ``skcgcnn benchmark --limit``),
    so only those CIFs are read.  ``cache`` is :func:`~skcgcnn.datasets.load_cgcnn_folder`'s
    parsed-structure cache.
    """
    from .datasets import id_prop_ids, load_cgcnn_folder, sample_rows, structures_and_target

    root = Path(data_dir)
    ids = None
    if limit is not None:
        prop = Path(id_prop) if Path(id_prop).is_absolute() else (
            (root.parent if root.is_file() else root) / id_prop)
        all_ids = id_prop_ids(prop)
        keep = None if all_ids is None else sample_rows(len(all_ids), limit, random_state)
        if keep is not None:
            ids = [all_ids[i] for i in keep]
    df = load_cgcnn_folder(root, id_prop=id_prop, ids=ids, n_jobs=n_jobs, on_error="skip",
                           cache=cache, verbose=verbose)
    return structures_and_target(df, target)


def run_tune_command(args: argparse.Namespace) -> int:
    """Run ``skcgcnn tune`` with parsed arguments; return the exit status."""
    def fail(message: str) -> int:
        sys.stderr.write(f"skcgcnn tune: error: {message}\n")
        return 2

    if not Path(args.data_dir).exists():
        return fail(f"DATA_DIR {args.data_dir!r} does not exist")
    if args.limit is not None and args.limit < 10:
        return fail(f"--limit {args.limit}: use at least 10 structures")
    if args.n_workers < 1:
        return fail(f"--n-workers {args.n_workers}: use at least 1")
    verbose = 0 if args.quiet else 1
    try:
        space = SearchSpace()
        if args.space:
            text = args.space
            if not text.lstrip().startswith("{"):
                text = Path(text).read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--space is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError("--space must be a JSON object of SearchSpace fields")
            space = SearchSpace.from_dict(data)
        if args.atom_features:
            space.atom_features = tuple(_csv_list(args.atom_features, str))
        if args.radius:
            space.radius = tuple(_csv_list(args.radius, float))
        if args.max_num_nbr:
            space.max_num_nbr = tuple(_csv_list(args.max_num_nbr, int))
        space.validate()
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    baselines: Any = None
    if args.baselines and args.baselines.lower() != "none":
        baselines = (args.baselines if args.baselines.endswith(".csv")
                     else _csv_list(args.baselines, str))
    graph_cache = args.graph_cache
    if graph_cache is None and args.output_dir is not None:
        graph_cache = os.path.join(args.output_dir, "graphs")
    try:
        X, y, target = load_tuning_data(args.data_dir, id_prop=args.id_prop,
                                        target=args.target, limit=args.limit,
                                        random_state=args.random_state, n_jobs=args.n_jobs,
                                        verbose=verbose)
    except (ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    logger.info("%d structures from %s, target %r", len(y), args.data_dir, target)
    try:
        result = tune(X, y, space=space, n_trials=args.n_trials, timeout=args.timeout,
                      max_epochs=args.epochs, cv=args.cv,
                      validation_fraction=args.validation_fraction, storage=args.storage,
                      study_name=args.study_name, pruner=args.pruner,
                      random_state=args.random_state, n_workers=args.n_workers,
                      output_dir=args.output_dir, graph_cache=graph_cache,
                      baselines=baselines, refit=args.save_model is not None,
                      device=args.device, heartbeat_interval=args.heartbeat_interval,
                      grace_period=args.grace_period, n_jobs=args.n_jobs,
                      target_name=target, verbose=verbose)
    except (ValueError, RuntimeError, ImportError) as exc:
        return fail(str(exc))
    print(best_trials_markdown(result.study, space))
    counts = result.trials["state"].value_counts().to_dict()
    print(f"\nstudy {result.study.study_name!r}: {counts}; best validation MAE "
          f"{result.best_value:.4f} (atom features "
          f"{result.study.best_trial.user_attrs.get('atom_features')}); wall time "
          f"{result.wall_s:.0f} s")
    for name, value in result.baselines.items():
        print(f"  {name}: {value:.4f}")
    if args.save_model:
        from .estimators import save_model

        save_model(result.best_pipeline, args.save_model)
        print(f"best model saved to {args.save_model}")
    if result.files:
        print(f"files in {args.output_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``skcgcnn tune`` on its own (until the command is registered in :mod:`skcgcnn.cli`)."""
    parser = argparse.ArgumentParser(prog="skcgcnn")
    sub = parser.add_subparsers(dest="command", required=True)
    add_tune_parser(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "quiet", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)
