"""The search space: what a study searches, and the trial configuration it samples."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._defaults import DMIN, STEP
from ..atom_features import CGCNN_GROUPS, NAMED_SETS, get_atom_features

#: Fields that shape the network, which a pretrained ``init`` decides.
ARCHITECTURE_FIELDS = ("n_conv", "atom_fea_len", "h_fea_len", "n_h", "conv")
#: Fields that shape the graphs, which must be the pretrained model's.
GRAPH_FIELDS = ("atom_features", "radius", "max_num_nbr")

logger = logging.getLogger(__name__)

#: The choice of :attr:`SearchSpace.atom_features` that searches subsets of the nine
#: CGCNN property groups (one yes/no parameter ``group_<name>`` per group).
CGCNN_GROUPS_CHOICE = "cgcnn_groups"
_RANGE_FIELDS = {"n_conv": ("int", False), "n_h": ("int", False),
                 "lr": ("float", True), "weight_decay": ("float", True)}
_CHOICE_FIELDS = ("atom_features", "atom_fea_len", "h_fea_len", "conv", "optimizer",
                  "batch_size", "radius", "max_num_nbr")
#: Fields of the recipe and of fine-tuning that are not in the space unless given (None:
#: the estimator's default, and the study's parameters and settings as before they
#: existed, so older studies still resume).
_OPTIONAL_CHOICE_FIELDS = ("max_epochs", "loss", "freeze")
_OPTIONAL_RANGE_FIELDS = {"init_lr_factor": ("float", True)}
#: The losses a study may compare (all score the same validation MAE); ``gaussian_nll``
#: also gives the network a variance output, for uncertainty (docs/uncertainty.md).
TUNED_LOSSES = ("absolute_error", "huber", "squared_error")
#: The values of ``freeze`` (see :class:`~skcgcnn.estimators.CGCNNRegressor`).
FREEZE_CHOICES = (None, "embedding", "conv")
#: Estimator parameters each field sets.
ESTIMATOR_KEYS = {"n_conv": "module__n_conv", "atom_fea_len": "module__atom_fea_len",
                  "h_fea_len": "module__h_fea_len", "n_h": "module__n_h",
                  "conv": "module__conv", "optimizer": "optimizer", "lr": "lr",
                  "weight_decay": "optimizer__weight_decay", "batch_size": "batch_size",
                  "max_epochs": "max_epochs", "loss": "loss", "freeze": "freeze",
                  "init_lr_factor": "init_lr_factor"}


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
    max_epochs : sequence of int or int, optional
        Epochs of a trial (choices, e.g. ``(30, 60, 100)``); not given: ``tune``'s
        ``max_epochs``.  With the one-cycle schedule a shorter run is further into its
        schedule at a given epoch, so the median pruner, which compares trials epoch by
        epoch, favours short runs: search it with ``pruner="none"`` or a long warm-up.
    loss : sequence of {"absolute_error", "huber", "squared_error"} or str, optional
        The training loss (on standardised targets); not given: the estimator's
        default (``"absolute_error"``).  Every trial is still scored by its MAE.
    freeze : sequence of {None, "embedding", "conv"} or one of them, optional
        Layers of the pretrained model kept as they are; only with an ``init`` in
        ``tune(estimator_params=...)``.
    init_lr_factor : (float, float) or float, optional
        Learning rate of the pretrained body as a factor of ``lr`` (log scale; a fixed
        value may be 0); only with an ``init``.

    Fields that are not given (``None``) are neither searched nor passed to the
    estimator, and do not appear in :meth:`to_dict`.

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
    dmin: float = DMIN
    step: float = STEP
    max_epochs: Any = None
    loss: Any = None
    freeze: Any = None
    init_lr_factor: Any = None

    # -- conversion ----------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields as plain JSON values (tuples become lists); optional fields that
        are not given are left out (a study's stored space stays as it was)."""
        optional = (*_OPTIONAL_CHOICE_FIELDS, *_OPTIONAL_RANGE_FIELDS)
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self)
                                      if not (f.name in optional
                                              and getattr(self, f.name) is None)}))

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

    def _choice_fields(self) -> tuple:
        """The choice fields in the space: all but the optional ones not given."""
        return (*_CHOICE_FIELDS,
                *(name for name in _OPTIONAL_CHOICE_FIELDS if getattr(self, name) is not None))

    def _range_fields(self) -> dict:
        """The range fields in the space and their (kind, log scale)."""
        return {**_RANGE_FIELDS, **{name: spec for name, spec in _OPTIONAL_RANGE_FIELDS.items()
                                    if getattr(self, name) is not None}}

    def searched(self) -> list[str]:
        """Names of the fields that are searched (not fixed)."""
        out = [name for name in self._choice_fields() if len(self._choices(name)) > 1]
        for name in self._range_fields():
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] != value[1]:
                out.append(name)
        return out

    def trial_epochs(self, max_epochs: int) -> list[int]:
        """The epochs a trial may train: the space's ``max_epochs`` choices, sorted, or
        ``[max_epochs]`` (``tune``'s) when the space has none."""
        if self.max_epochs is None:
            return [int(max_epochs)]
        return sorted(int(e) for e in self._choices("max_epochs"))

    def estimator_keys(self) -> dict[str, str]:
        """The :class:`~skcgcnn.estimators.CGCNNRegressor` parameters the space sets
        (fixed or searched), and the field that sets each."""
        names = [n for n in (*self._choice_fields(), *self._range_fields()) if n in ESTIMATOR_KEYS]
        return {ESTIMATOR_KEYS[name]: name for name in names}

    def validate(self, estimator_params: Mapping[str, Any] | None = None) -> None:
        """Check every field; raise ValueError naming the field, its value and what is allowed.

        Parameters
        ----------
        estimator_params : mapping, optional
            The estimator parameters fixed for every trial (``tune``'s): they must not be
            ones the space sets; ``freeze`` and ``init_lr_factor`` need an ``init`` there,
            and with one the network's shape and its graphs are the pretrained model's,
            so the fields that set them cannot be searched.
        """
        for name, (kind, log) in self._range_fields().items():
            value = getattr(self, name)
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
            if name in ("weight_decay", "init_lr_factor") and low < 0:
                raise ValueError(f"SearchSpace.{name}={value!r}: must be >= 0")
            if log and low != high and low <= 0:
                raise ValueError(f"SearchSpace.{name}={value!r}: a searched {name} is on a "
                                 "log scale, so low must be > 0 (fix it at 0 to turn it off)")
        allowed = {"conv": ("gated", "simple"), "optimizer": ("sgd", "adam", "adamw"),
                   "loss": TUNED_LOSSES, "freeze": FREEZE_CHOICES}
        for name in self._choice_fields():
            choices = self._choices(name)
            if not choices:
                raise ValueError(f"SearchSpace.{name} is empty; give at least one value")
            if name == "loss" and "gaussian_nll" in choices:
                raise ValueError(
                    f"SearchSpace.loss: 'gaussian_nll' is not searched (it gives the network a "
                    f"variance output, for uncertainty: docs/uncertainty.md); choose among "
                    f"{TUNED_LOSSES}")
            if name in allowed:
                bad = [c for c in choices if c not in allowed[name]]
                if bad:
                    raise ValueError(f"SearchSpace.{name}: {bad} not among {allowed[name]}")
            elif name in ("atom_fea_len", "h_fea_len", "batch_size", "max_num_nbr",
                          "max_epochs"):
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
        check_fixed_params(self, dict(estimator_params or {}))

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
        for name in self._choice_fields()[1:]:
            values = self._choices(name)
            if len(values) > 1:
                trial.suggest_categorical(name, values)
        for name, (kind, log) in self._range_fields().items():
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
            if name in _RANGE_FIELDS or name in _OPTIONAL_RANGE_FIELDS:
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
            convert = {"max_epochs": int, "loss": str, "init_lr_factor": float}
            for name in (*_OPTIONAL_CHOICE_FIELDS, *_OPTIONAL_RANGE_FIELDS):
                if getattr(self, name) is not None:
                    raw = value(name)
                    est[ESTIMATOR_KEYS[name]] = raw if raw is None or name not in convert \
                        else convert[name](raw)
        except KeyError as exc:
            raise ValueError(f"parameter {exc.args[0]!r} is searched by this SearchSpace but "
                             f"missing from {dict(params)}") from None
        return TrialConfig(atom, radius, max_num_nbr, float(self.dmin), float(self.step), est)


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


def check_fixed_params(space: "SearchSpace", estimator_params: dict) -> None:
    """The space beside the fixed estimator parameters (:meth:`SearchSpace.validate`)."""
    keys = space.estimator_keys()
    clash = sorted(key for key in estimator_params if key in keys)
    if clash:
        raise ValueError(
            f"estimator_params {clash} are set by the SearchSpace (field(s) "
            f"{[keys[k] for k in clash]}): fix them there, e.g. "
            f"SearchSpace({keys[clash[0]]}={estimator_params[clash[0]]!r})")
    tuning = [n for n in ("freeze", "init_lr_factor") if getattr(space, n) is not None]
    if estimator_params.get("init") is None:
        if tuning:
            raise ValueError(
                f"SearchSpace.{tuning[0]}={getattr(space, tuning[0])!r} fine-tunes a "
                "pretrained model, and none is given: pass it as "
                "tune(estimator_params={'init': model}) or skcgcnn tune --init MODEL (a "
                "fitted estimator or Pipeline, a file saved with skcgcnn.save_model or a "
                f"pretrained model's name), or leave {' and '.join(tuning)} out of the space")
        return
    searched = [n for n in space.searched() if n in ARCHITECTURE_FIELDS + GRAPH_FIELDS]
    if space.atom_feature_choices() == [CGCNN_GROUPS_CHOICE]:
        searched.append("cgcnn_groups")
    if searched:
        raise ValueError(
            f"with init, the network and its graphs are the pretrained model's, so the "
            f"SearchSpace fields {searched} cannot be searched: fix them to its values "
            "(fine_tuning_space(init) does)")
