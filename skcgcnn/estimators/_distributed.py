"""Data-parallel training over several processes: torchrun and DistributedDataParallel.

Launched by ``torchrun --nproc-per-node N`` (one process per GPU, or N processes on the
CPU), every process runs the same script; a ``fit`` then

* starts the default process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ...) unless the script already did: NCCL when the estimator's device is a
  GPU (each process on the GPU of its ``LOCAL_RANK``), gloo on the CPU;
* wraps the module in :class:`torch.nn.parallel.DistributedDataParallel` for the training
  steps, which averages the gradients over the processes;
* gives each process its share of every mini-batch (:func:`shard_rows`): the rows are
  shuffled once per epoch with a seed all processes share, cut into global batches of
  ``batch_size``, and process ``r`` takes rows ``r, r + N, ...`` of each, as torch's
  ``DistributedSampler`` strides an epoch; each process's loss is weighted by its share,
  so the averaged gradient is the gradient of the global batch's mean loss;
* normalises the batch-norm layers with the statistics of the global batch (torch's
  ``SyncBatchNorm`` on GPUs; on the CPU, where ``SyncBatchNorm`` refuses to run, a
  batch norm that sums its statistics with ``all_reduce`` over gloo), so the running
  statistics stay equal on every process and equal to those of one process;
* scores the validation set whole on every process, with the plain module: every
  process takes the same early-stopping and learning-rate decisions, and records in
  its history the training loss of the global batches.

After ``fit`` every process holds the same plain fitted module (no DDP wrapper, plain
``BatchNorm1d`` layers) and can predict.  Only process 0 writes files:
``save_params``, ``save_model`` and the checkpoint callbacks do nothing on the others
(:func:`is_writer`).
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import inspect
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["GlobalBatchNorm1d", "is_distributed", "is_writer", "shard_rows", "world_size"]

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# -- where this process stands ------------------------------------------------------
def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the running process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def is_writer() -> bool:
    """True in the process that writes files: process 0, or the only one."""
    return rank() == 0


#: ``run|pid`` of the process torchrun started, recorded in its environment at import:
#: the processes it starts in turn (joblib/loky workers of an ensemble, tuning workers)
#: inherit torchrun's variables but are not ranks of the group, and train on their own.
_OWNER_ENV = "SKCGCNN_TORCHRUN_PID"


def _launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (not their child)."""
    if not all(key in os.environ for key in _TORCHRUN_ENV):
        return False
    run = "{}@{}:{}#{}".format(os.environ.get("TORCHELASTIC_RUN_ID", ""),
                               os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"],
                               os.environ["RANK"])
    owner_run, _, owner_pid = os.environ.get(_OWNER_ENV, "").rpartition("|")
    if owner_run != run:  # none recorded, or one left from another run: this process owns it
        os.environ[_OWNER_ENV] = f"{run}|{os.getpid()}"
    elif owner_pid != str(os.getpid()):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


_launched_by_torchrun()  # records the owner before any child process is started


def init_from_env(device: Any) -> bool:
    """Start the default process group from torchrun's environment, once; return whether
    this process is one of several.

    The backend is NCCL for a CUDA ``device`` (and the process's GPU becomes
    ``cuda:LOCAL_RANK``), gloo otherwise.  A group the caller started is used as it is.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not _launched_by_torchrun():
        return False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; it cannot train "
                           "with several processes (run one process, without torchrun)")
    cuda = str(device).startswith("cuda")
    if cuda:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"process {os.environ['RANK']} (LOCAL_RANK {local}) has no GPU: this "
                f"machine has {torch.cuda.device_count()}; start at most that many "
                "processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_backend_available(backend):
        raise RuntimeError(f"torch.distributed has no {backend} backend in this build; "
                           f"train on {'the CPU' if cuda else 'GPUs'} or in one process")
    dist.init_process_group(backend)
    atexit.register(_destroy)
    logger.info("process %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size() > 1


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# -- the rows of each process -------------------------------------------------------
def shard_rows(n_rows: int, batch_size: int, rank: int, world_size: int, epoch: int,
               seed: int, shuffle: bool = True, drop_last: bool = False
               ) -> list[np.ndarray]:
    """This process's rows of each mini-batch of one epoch.

    The rows ``0 .. n_rows - 1`` are permuted with a generator seeded by ``seed + epoch``
    (as ``DistributedSampler(seed=seed).set_epoch(epoch)``; in order without
    ``shuffle``), cut into global batches of ``batch_size`` rows (the last one shorter,
    or dropped with ``drop_last``), and process ``rank`` takes rows ``rank, rank +
    world_size, ...`` of each.  The shares of a batch together are the batch, and every
    process gets the same number of batches (a share may be empty when a batch has
    fewer rows than processes).

    Returns
    -------
    list of ndarray of int64, one per global batch
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world_size {world_size}: need 0 <= rank < "
                         "world_size")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: must be at least 1")
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(int(seed) + int(epoch))
        order = torch.randperm(n_rows, generator=generator).numpy()
    else:
        order = np.arange(n_rows)
    stop = n_rows - n_rows % batch_size if drop_last else n_rows
    return [order[start:min(start + batch_size, stop)][rank::world_size]
            for start in range(0, stop, batch_size)]


class _RankBatches:
    """A batch sampler: the rows of :func:`shard_rows` for the epoch the net is in."""

    def __init__(self, net: Any, n_rows: int, batch_size: int, seed: int, shuffle: bool,
                 drop_last: bool) -> None:
        self.net, self.n_rows, self.batch_size = net, n_rows, batch_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last

    def _batches(self) -> list[np.ndarray]:
        epoch = max(len(self.net.history) - 1, 0)  # the history holds the epoch begun
        return shard_rows(self.n_rows, self.batch_size, rank(), world_size(), epoch,
                          self.seed, self.shuffle, self.drop_last)

    def __iter__(self):
        return (rows.tolist() for rows in self._batches())

    def __len__(self) -> int:
        n = self.n_rows // self.batch_size
        return n if self.drop_last or self.n_rows % self.batch_size == 0 else n + 1


class _EmptySafeCollate:
    """The collate function, and for an empty share a batch of no crystal (the process
    still runs the step: the others wait for its part of every collective)."""

    def __init__(self, collate: Any, dataset: Any) -> None:
        self.collate, self.dataset = collate, dataset

    def __call__(self, batch: list) -> Any:
        if batch:
            return self.collate(batch)
        X, y = self.collate([self.dataset[0]])
        return {key: value[:0] for key, value in X.items()}, y[:0]


def train_iterator(net: Any, dataset: Any) -> Any:
    """The DataLoader of this process's shares of the training batches."""
    state = net.__dict__["_data_parallel"]
    kwargs = net.get_params_for("iterator_train")
    for key in ("sampler", "batch_sampler"):
        if kwargs.get(key) is not None:
            raise ValueError(f"iterator_train__{key} cannot be used when training with "
                             "several processes: each process takes its share of the "
                             "batches (see skcgcnn.estimators._distributed.shard_rows)")
    batch_size = kwargs.pop("batch_size", net.batch_size)
    if batch_size == -1:
        batch_size = len(dataset)
    sampler = _RankBatches(net, len(dataset), batch_size, state.seed,
                           bool(kwargs.pop("shuffle", False)),
                           bool(kwargs.pop("drop_last", False)))
    kwargs.pop("sampler", None)
    kwargs.pop("batch_sampler", None)
    from ._device_batches import device_batches_of

    on_device = device_batches_of(net, dataset, sampler)  # batch_on_device (on GPUs)
    if on_device is not None:
        _check_same_rows(net, dataset)
        return on_device
    collate = kwargs.pop("collate_fn", None)
    if collate is None:
        from torch.utils.data import default_collate as collate
    _check_same_rows(net, dataset)
    return net.iterator_train(dataset, batch_sampler=sampler,
                              collate_fn=_EmptySafeCollate(collate, dataset), **kwargs)


def _check_same_rows(net: Any, dataset: Any) -> None:
    """ValueError unless every process trains on the same rows (each takes its share)."""
    import torch.distributed as dist

    digest = hashlib.blake2b(digest_size=7)
    digest.update(str(getattr(net, "training_ids_digest_", "")).encode())
    digest.update(str(len(dataset)).encode())
    indices = getattr(dataset, "indices", None)
    if indices is not None:
        digest.update(np.asarray(indices, dtype=np.int64).tobytes())
    value = torch.tensor([int.from_bytes(digest.digest(), "big")] * 2, dtype=torch.int64,
                         device=net.__dict__["_data_parallel"].device)
    value[1].neg_()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    if int(value[0]) != -int(value[1]):
        raise ValueError(
            "the processes were given different training rows: with several processes "
            "every process must call fit with the same X and y (each trains on its share "
            "of every batch), and a train_split must split them the same way in each "
            "(give it a fixed random_state, or give the estimator an int random_state)")


# -- batch norm over the global batch -------------------------------------------------
class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce(SUM)`` with its gradient: the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the rows of all processes.

    What torch's ``SyncBatchNorm`` does on GPUs, for the gloo backend on the CPU (which
    ``SyncBatchNorm`` refuses): the count, the per-channel sums and then the squared
    deviations from the global mean are summed over the processes (two ``all_reduce``
    with autograd), so the output, the gradients and the running statistics are those
    of BatchNorm1d on the global batch, up to the order of float sums.  A process with
    no row takes part with zero sums.  In evaluation mode it is BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        count = x.new_full((1,), float(x.shape[0]))
        sums = _SumOverProcesses.apply(torch.cat([x.sum(dim=0), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean
        var = _SumOverProcesses.apply((centred * centred).sum(dim=0)) / n
        out = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out


def _swap_batchnorms(module: nn.Module, kind: type[nn.Module], sources: tuple) -> int:
    """Replace the layers of ``sources`` types in ``module`` by ``kind`` layers holding the
    same parameters and statistics (the optimizer keeps its tensors); return how many."""
    swapped = 0
    for name, child in module.named_children():
        if type(child) in sources:
            new = kind.__new__(kind)
            nn.Module.__init__(new)
            for attr in ("num_features", "eps", "momentum", "affine",
                         "track_running_stats"):
                setattr(new, attr, getattr(child, attr))
            new._parameters.update(child._parameters)
            new._buffers.update(child._buffers)
            new.train(child.training)
            setattr(module, name, new)
            swapped += 1
        else:
            swapped += _swap_batchnorms(child, kind, sources)
    return swapped


_PARALLEL_BN = (GlobalBatchNorm1d, nn.SyncBatchNorm)


# -- the training of a fit ----------------------------------------------------------
class _State:
    """What a distributed fit holds while it trains."""

    def __init__(self, ddp: Any, seed: int, device: torch.device) -> None:
        self.ddp, self.seed, self.device = ddp, seed, device
        self.global_batch: tuple[float, float] | None = None  # crystals, atoms


def _common_seed(net: Any, device: torch.device) -> int:
    """A seed every process shares: the int ``random_state``, or process 0's draw."""
    import torch.distributed as dist

    from ._checks import _seed_of

    seed = _seed_of(net.random_state)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    value = torch.tensor([seed], dtype=torch.int64, device=device)
    dist.broadcast(value, src=0)
    return int(value)


@contextlib.contextmanager
def data_parallel(net: Any):
    """While fitting with several processes: the module in DDP with global batch norms,
    the shared seed, and the plain module back afterwards (also on errors)."""
    if not is_distributed() or "_data_parallel" in net.__dict__:
        yield
        return
    from torch.nn.parallel import DistributedDataParallel

    module = net.module_
    device = next(module.parameters()).device
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(module)  # in place below the top module
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        _swap_batchnorms(module, GlobalBatchNorm1d, (nn.BatchNorm1d,))
        ids = None
    try:
        # rank 0's weights and statistics are copied to all when DDP starts; the batch
        # norms then keep their statistics equal: no buffer broadcast at every step
        # (torch 2.13 renamed broadcast_buffers to forward_sync_buffers)
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(DistributedDataParallel).parameters
                   else "broadcast_buffers")
        ddp = DistributedDataParallel(module, device_ids=ids, **{no_sync: False})
        net.__dict__["_data_parallel"] = _State(ddp, _common_seed(net, device), device)
        yield
    finally:
        net.__dict__.pop("_data_parallel", None)
        _swap_batchnorms(module, nn.BatchNorm1d, _PARALLEL_BN)


def state(net: Any) -> _State | None:
    """The distributed fit's state while ``net`` trains with several processes."""
    return net.__dict__.get("_data_parallel")


def shared_loss(st: _State, loss: torch.Tensor | None, y_pred: torch.Tensor,
                X: Any) -> torch.Tensor:
    """This process's part of the global batch's mean loss, scaled for DDP's average:
    ``loss * world_size * n_here / n_global``, so that DDP's mean over the processes of
    their gradients is the gradient of the mean over the global batch (``loss`` is
    None for an empty share)."""
    import torch.distributed as dist

    atoms = len(X["crystal_idx"]) if isinstance(X, dict) and "crystal_idx" in X else 0
    counts = torch.tensor([float(y_pred.shape[0]), float(atoms)], device=y_pred.device)
    dist.all_reduce(counts)
    st.global_batch = (float(counts[0]), float(counts[1]))
    if y_pred.shape[0] == 0:  # an empty share: gradients of zero, graph kept for DDP
        return y_pred.sum() * 0.0
    return loss * (world_size() * y_pred.shape[0] / st.global_batch[0])


def global_loss(loss: torch.Tensor) -> torch.Tensor:
    """The global batch's mean loss from the processes' :func:`shared_loss` values."""
    import torch.distributed as dist

    total = loss.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


# -- the estimators' skorch hooks -----------------------------------------------------
class _DistributedHooks:
    """The skorch hooks of a CGCNN estimator that change when several processes train:
    this process's share of each global batch, the DistributedDataParallel module for
    the training steps, and the loss of the global batch.  With one process each hook
    is skorch's."""

    def get_iterator(self, dataset, training=False):
        """skorch's; training with several processes, this process's shares of the
        global batches (:func:`shard_rows`), on the device or not."""
        if training and state(self) is not None:
            with self._resolved_device():
                return train_iterator(self, dataset)
        return super().get_iterator(dataset, training)

    def train_step_single(self, batch, **fit_params):
        """skorch's, through the DistributedDataParallel module when training with
        several processes (validation and prediction use the plain module)."""
        parallel = state(self)
        if parallel is None:
            return super().train_step_single(batch, **fit_params)
        plain = self.__dict__["module_"]
        self.__dict__["module_"] = parallel.ddp
        try:
            return super().train_step_single(batch, **fit_params)
        finally:
            self.__dict__["module_"] = plain

    def train_step(self, batch, **fit_params):
        """skorch's; with several processes the loss recorded is the global batch's."""
        step = super().train_step(batch, **fit_params)
        if state(self) is not None:
            step["loss"] = global_loss(step["loss"])
        return step

    def _weighted_loss(self, loss, y_pred, y_true, X, training):
        """The batch's loss (``_batch_loss``: ``loss`` with the sample weights); training
        with several processes, this process's part of the global batch's loss
        (:func:`shared_loss`)."""
        parallel = state(self) if training else None
        if parallel is None:
            return self._batch_loss(loss, y_pred, y_true, X, training)
        value = self._batch_loss(loss, y_pred, y_true, X, training) if len(y_pred) else None
        return shared_loss(parallel, value, y_pred, X)

    def _batch_crystals(self, batch: Any, training: bool) -> int | None:
        """The crystals of a training batch: of the global batch when several processes
        train, else None (the batch's own, counted by the estimator)."""
        parallel = state(self)
        if training and parallel is not None and parallel.global_batch is not None:
            return int(parallel.global_batch[0])
        return None

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's, under torchrun with the process group started and the module in
        DistributedDataParallel (:func:`data_parallel`) while it runs."""
        with self._resolved_device():
            init_from_env(self.device)
        with data_parallel(self):
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
