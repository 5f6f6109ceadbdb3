"""Resumable training: skorch checkpoint callbacks that a killed ``fit`` continues from.

skorch's :class:`~skorch.callbacks.Checkpoint` and :class:`~skorch.callbacks.LoadInitState`
save and restore the weights, the optimizer, the criterion and the history, one file
each.  Continuing a run so that it ends as an uninterrupted one would needs three more
things, which they leave out:

* the learning-rate schedulers' state (skorch rebuilds a scheduler from the number of
  epochs in the history, and decays the rate a second time when the run stopped on a
  milestone);
* the random generator: shuffling and dropout draw from torch's generator, so a
  resumed run that starts from the generator's state after weight initialisation
  shuffles differently from the run it continues;
* one file written atomically: a process killed while skorch writes its files leaves
  a truncated file, or the weights of one epoch beside the history of the one before.

:class:`TrainingCheckpoint` writes all of it into one file (temporary file, then
``os.replace``) every ``every`` epochs, and :class:`LoadTrainingState` restores it when
training begins.  With a :class:`~skcgcnn.CGCNNRegressor` or
:class:`~skcgcnn.CGCNNClassifier`, ``fit`` then trains the epochs that are left
(``max_epochs`` in all), and on the CPU the resumed run ends with the same weights as
an uninterrupted one.  numpy's and Python's global generators are not saved: the
training loop does not draw from them (the estimators seed torch from
``random_state``).
"""
from __future__ import annotations

import json
import logging
import os
import types
from typing import Any

import torch
from skorch.callbacks import Checkpoint, EarlyStopping, LoadInitState, LRScheduler
from skorch.callbacks.scoring import EpochScoring, PassthroughScoring
from skorch.history import History

from .._atomic import atomic_path, atomic_write
from ._distributed import is_writer

logger = logging.getLogger(__name__)

#: Format tag of the files written by :class:`TrainingCheckpoint`.
STATE_FORMAT = "skcgcnn-training-state"
STATE_VERSION = 1

__all__ = ["TrainingCheckpoint", "LoadTrainingState", "AtomicCheckpoint",
           "read_training_state", "atomic_torch_save", "STATE_FORMAT"]


class TrainingStateError(ValueError):
    """A file that is not a usable training state."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and
    ``os.replace``: a reader (or a process killed while writing) never sees half a file.

    Parameters
    ----------
    obj : object
        What ``torch.save`` takes.
    path : str or path-like
        The file to write; its folder must exist.
    """
    with atomic_write(path, "wb", fsync=True, private=True) as fh:
        torch.save(obj, fh)


def read_training_state(path: str | os.PathLike) -> dict:
    """The content of a file written by :class:`TrainingCheckpoint`.

    Read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
    containers, nothing that can run code.

    Returns
    -------
    dict
        ``epoch`` (epochs trained), ``module``, ``optimizer``, ``criterion`` (state
        dicts), ``lr_schedulers`` (callback name -> scheduler state), ``history``
        (skorch's history as a list), ``rng`` (torch's generator states).

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    TrainingStateError
        When the file is not a training state of this version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no training state at {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not its own
        raise TrainingStateError(
            f"{path!r} is not a readable training state ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it cannot be resumed") from exc
    if not (isinstance(payload, dict) and payload.get("format") == STATE_FORMAT):
        raise TrainingStateError(f"{path!r} is not a training state written by "
                                 "skcgcnn's TrainingCheckpoint")
    if payload.get("version") != STATE_VERSION:
        raise TrainingStateError(f"{path!r} is a training state of version "
                                 f"{payload.get('version')!r}; this skcgcnn reads version "
                                 f"{STATE_VERSION}")
    payload["history"] = json.loads(payload["history"])
    return payload


def _cuda_device(net: Any) -> torch.device | None:
    device = str(getattr(net, "device", None) or "cpu")
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.device(device if ":" in device else
                            f"cuda:{torch.cuda.current_device()}")
    return None


def _lr_schedulers(net: Any) -> list[tuple[str, LRScheduler]]:
    return [(name, cb) for name, cb in getattr(net, "callbacks_", [])
            if isinstance(cb, LRScheduler)]


class TrainingCheckpoint(Checkpoint):
    """Write everything needed to resume training into one file, every ``every`` epochs.

    The file holds the module, optimizer and criterion state, the learning-rate
    schedulers' state, the history and torch's random generator state (CPU, and the
    net's CUDA device).  It is written to a temporary file and moved into place with
    ``os.replace``, so a process killed at any moment leaves the previous checkpoint
    or the new one, never a broken file.  It is also written when training ends
    after a complete epoch that was not saved yet (for example when
    ``EarlyStopping`` stops it, or with ``max_epochs`` not a multiple of ``every``);
    an epoch cut short (Ctrl-C inside an epoch) is never saved.

    Restore it with :class:`LoadTrainingState`.

    Parameters
    ----------
    dirname : str or path-like, default=""
        Folder of the file (made when training starts).
    every : int, default=1
        Save after every ``every``-th epoch (counted over the whole history).
    filename : str, default="training_state.pt"
        Name of the file in ``dirname``.
    sink : callable, default=logger.debug
        Called with a line for each checkpoint written.

    Examples
    --------
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.estimators import TrainingCheckpoint, LoadTrainingState
    >>> cp = TrainingCheckpoint(dirname="run1")
    >>> reg = CGCNNRegressor(max_epochs=100, random_state=0,
    ...                      callbacks=[cp, LoadTrainingState(cp)])
    >>> reg.fit(graphs, y)  # killed at epoch 40; run it again: it trains epochs 41-100
    ... # doctest: +SKIP
    """

    def __init__(self, dirname: str | os.PathLike = "", every: int = 1,
                 filename: str = "training_state.pt", sink: Any = logger.debug) -> None:
        super().__init__(monitor=None, f_params=None, f_optimizer=None, f_criterion=None,
                         f_history=None, f_pickle=None, dirname=dirname, event_name=None,
                         sink=sink, load_best=False)
        self.every = every
        self.filename = filename

    @property
    def path_(self) -> str:
        """Path of the training-state file."""
        return os.path.join(os.fspath(self.dirname), self.fn_prefix + self.filename)

    def initialize(self) -> "TrainingCheckpoint":
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"TrainingCheckpoint(every={self.every!r}): give a whole "
                             "number of epochs, at least 1")
        super().initialize()
        self.saved_epoch_ = None
        self.complete_epoch_ = None
        return self

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        epoch = len(net.history)
        self.complete_epoch_ = epoch
        if epoch % self.every == 0:
            self.save_model(net)

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        epoch = len(net.history)
        # An epoch is complete once its end was recorded: by this callback, or by
        # skorch's EpochTimer ("dur") when a callback that runs before this one ended
        # training at that epoch's end (the estimators' own early_stopping=True).
        complete = epoch and (epoch == self.complete_epoch_ or "dur" in net.history[-1])
        if complete and epoch != self.saved_epoch_:
            self.save_model(net)

    def save_model(self, net: Any) -> None:
        """Write the training state of ``net`` (after ``len(net.history)`` epochs)."""
        if not is_writer():  # several processes (torchrun): process 0 writes
            return
        rng = {"torch": torch.get_rng_state()}
        cuda = _cuda_device(net)
        if cuda is not None:
            rng["cuda"] = torch.cuda.get_rng_state(cuda)
        payload = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "epoch": len(net.history),
            "module": _cpu(net.module_.state_dict()),
            "optimizer": _cpu(net.optimizer_.state_dict()),
            "criterion": _cpu(net.criterion_.state_dict()),
            "lr_schedulers": {
                name: {"state": cb.lr_scheduler_.state_dict(), "batch_idx": cb.batch_idx_}
                for name, cb in _lr_schedulers(net)
                if getattr(cb, "lr_scheduler_", None) is not None},
            "history": json.dumps(net.history.to_list()),
            "rng": rng,
        }
        os.makedirs(os.fspath(self.dirname) or ".", exist_ok=True)
        atomic_torch_save(payload, self.path_)
        self.saved_epoch_ = payload["epoch"]
        self._sink(f"training state of epoch {payload['epoch']} written to {self.path_}",
                   getattr(net, "verbose", 0))


def _cpu(state: Any) -> Any:
    """A state dict with its tensors on the CPU (the file loads on any machine)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


class LoadTrainingState(LoadInitState):
    """Restore the state written by a :class:`TrainingCheckpoint` when training begins.

    As skorch's ``LoadInitState``: when the checkpoint's file exists, ``fit``
    continues from it, else it starts afresh.  Restored: weights, optimizer,
    criterion, history, the learning-rate schedulers, the best scores of the scoring
    callbacks, and torch's random generator.  A CGCNN estimator's ``fit`` then trains
    ``max_epochs`` minus the epochs in the restored history.

    skorch's ``EarlyStopping`` counts the epochs without improvement from the start of
    each ``fit``; before the first epoch after a restore, every ``EarlyStopping``
    callback of the net is brought to where it stood by replaying its own
    ``on_epoch_end`` over the restored history, so the resumed run stops at the epoch an
    uninterrupted one would, and trains nothing when the run had already stopped early.

    Parameters
    ----------
    checkpoint : TrainingCheckpoint
        The callback whose file is read.
    """

    def __init__(self, checkpoint: TrainingCheckpoint) -> None:
        super().__init__(checkpoint)

    def initialize(self) -> "LoadTrainingState":
        if not isinstance(self.checkpoint, TrainingCheckpoint):
            raise TypeError("LoadTrainingState takes a TrainingCheckpoint; for skorch's "
                            "Checkpoint use skorch.callbacks.LoadInitState")
        super().initialize()
        self.state_ = None
        self.replayed_ = False
        return self

    def on_train_begin(self, net: Any, X: Any = None, y: Any = None, **kwargs: Any) -> None:
        # Called twice by the CGCNN estimators: first before every other callback (so
        # that the history is there when skorch's schedulers and scorers read it),
        # then in its place, after the schedulers are built.  Each call brings what
        # exists at that moment to the saved state.
        if not self.did_load_:
            self.did_load_ = True
            path = self.checkpoint.path_
            if not os.path.exists(path):
                logger.info("no training state at %s: training starts afresh", path)
                return
            self.state_ = read_training_state(path)
            self._restore_net(net, path)
        if self.state_ is not None:
            self._restore_callbacks(net)
            self._restore_rng(net)

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        if self.state_ is None or self.replayed_:
            return
        self.replayed_ = True
        stopped = [name for name, cb in getattr(net, "callbacks_", [])
                   if isinstance(cb, EarlyStopping) and _replay(cb, net.history)]
        if stopped:
            logger.info("the restored run had stopped early (%s): nothing left to train",
                        ", ".join(stopped))
            raise KeyboardInterrupt  # skorch's fit ends here, as EarlyStopping ends it

    def _restore_net(self, net: Any, path: str) -> None:
        state = self.state_
        if len(state["history"]) != state["epoch"]:
            raise TrainingStateError(f"{path!r}: its history holds {len(state['history'])} "
                                     f"epochs but it says {state['epoch']}")
        try:
            net.module_.load_state_dict(state["module"])
        except RuntimeError as exc:
            raise TrainingStateError(
                f"{path!r} holds the weights of another network than this one "
                f"({str(exc).splitlines()[0]}); resume with the same module "
                "parameters") from exc
        net.optimizer_.load_state_dict(state["optimizer"])
        net.criterion_.load_state_dict(state["criterion"])
        net.history = History(state["history"])
        logger.info("resuming from %s: %d epochs done", path, state["epoch"])

    def _restore_callbacks(self, net: Any) -> None:
        state = self.state_
        for name, cb in _lr_schedulers(net):
            saved = state["lr_schedulers"].get(name)
            if saved is not None and getattr(cb, "lr_scheduler_", None) is not None:
                cb.lr_scheduler_.load_state_dict(saved["state"])
                cb.batch_idx_ = saved["batch_idx"]
        # a scheduler built from the restored history steps once on construction (and
        # may decay the rate again on a milestone): the optimizer's rates are the saved ones
        net.optimizer_.load_state_dict(state["optimizer"])
        for _, cb in getattr(net, "callbacks_", []):
            if isinstance(cb, (EpochScoring, PassthroughScoring)):
                _restore_best_score(cb, net.history)

    def _restore_rng(self, net: Any) -> None:
        rng = self.state_["rng"]
        torch.set_rng_state(rng["torch"])
        cuda = _cuda_device(net)
        if cuda is not None and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], cuda)


def _replay(cb: EarlyStopping, history: History) -> bool:
    """Bring ``cb`` (reset by its ``on_train_begin``) to where it stood after the epochs
    of ``history``, through its public ``on_epoch_end`` on each epoch's row; whether it
    had stopped the run.  Quietly (no message, no copy of the current weights as the
    best: those of the best epoch are not in the training state)."""
    load_best, sink = cb.load_best, cb.sink
    cb.load_best, cb.sink = False, lambda *args, **kwargs: None
    try:
        for row in history:
            if row.get(cb.monitor) is None:
                continue
            try:
                cb.on_epoch_end(types.SimpleNamespace(history=History([row]), verbose=0))
            except KeyboardInterrupt:
                pass  # its patience ran out at this epoch
    finally:
        cb.load_best, cb.sink = load_best, sink
    return cb.misses_ >= cb.patience


def _restore_best_score(cb: Any, history: History) -> None:
    name = getattr(cb, "name_", None) or getattr(cb, "name", None)
    if not isinstance(name, str):
        return
    for row in reversed(history):
        if row.get(f"{name}_best") and name in row:
            cb.best_score_ = row[name]
            return


class AtomicCheckpoint(Checkpoint):
    """skorch's :class:`~skorch.callbacks.Checkpoint`, writing each file atomically.

    Every file (parameters, optimizer, criterion, history; not ``f_pickle``) goes to a
    temporary file in the same folder and is moved into place with ``os.replace``: a
    process killed while saving leaves the previous file, not a truncated one.  A
    failure to save raises (skorch's ``Checkpoint`` only reports it through ``sink``).
    Takes the arguments of ``Checkpoint``; the file names must be strings.
    """

    def _save_params(self, f: Any, net: Any, f_name: str, log_name: str) -> None:
        if not isinstance(f, (str, os.PathLike)):
            raise TypeError(f"AtomicCheckpoint writes files named by strings, not {f!r}")
        if not is_writer():  # several processes (torchrun): process 0 writes
            return
        with atomic_path(f, private=True) as tmp:
            net.save_params(**{f_name: tmp, "use_safetensors": self.use_safetensors})

