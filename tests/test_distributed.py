"""Data-parallel training under torchrun (skcgcnn.estimators._distributed).

The runs start real processes: ``python -m torch.distributed.run --nproc-per-node 2``
(torchrun) on 127.0.0.1 with the gloo backend on the CPU, and with NCCL where two GPUs
are present.  A two-process fit must equal the one-process fit up to the order of float
sums: same training and validation losses, epoch by epoch, and the same predictions.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skcgcnn.estimators._distributed import shard_rows

from ._shared import SAMPLE500, needs_shared, sample_series

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "distributed_worker.py"
TIMEOUT = 240  # seconds for a torchrun run; it takes about 20 s on two CPU cores

# the float tolerance of "equal to one process": the global batch's sums are taken in
# another order (per process, then over the processes)
RTOL, ATOL = 1e-5, 1e-5


def _gloo_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


needs_gloo = pytest.mark.skipif(not _gloo_available(),
                                reason="torch.distributed with gloo is not available")


# -- shard_rows: a pure function ----------------------------------------------------------
@pytest.mark.parametrize("n_rows,batch_size,world", [(64, 16, 2), (48, 15, 2), (48, 47, 2),
                                                      (10, 4, 3), (7, 16, 4)])
def test_shares_of_each_batch_make_the_one_process_batch(n_rows, batch_size, world):
    whole = shard_rows(n_rows, batch_size, 0, 1, epoch=3, seed=5)
    shares = [shard_rows(n_rows, batch_size, r, world, epoch=3, seed=5) for r in range(world)]
    assert all(len(s) == len(whole) for s in shares)  # every process: the same steps
    assert len(whole) == -(-n_rows // batch_size)
    for k, batch in enumerate(whole):
        got = np.concatenate([s[k] for s in shares])
        assert sorted(got.tolist()) == sorted(batch.tolist())
        sizes = [len(s[k]) for s in shares]
        assert max(sizes) - min(sizes) <= 1
    assert sorted(np.concatenate(whole).tolist()) == list(range(n_rows))


def test_shard_rows_shuffles_per_epoch_with_the_seed():
    first = np.concatenate(shard_rows(40, 8, 0, 1, epoch=0, seed=1))
    assert not np.array_equal(first, np.arange(40))
    assert np.array_equal(first, np.concatenate(shard_rows(40, 8, 0, 1, epoch=0, seed=1)))
    assert not np.array_equal(first, np.concatenate(shard_rows(40, 8, 0, 1, epoch=1, seed=1)))
    # DistributedSampler's generator: seed + epoch
    g = torch.Generator()
    g.manual_seed(3)
    assert np.array_equal(np.concatenate(shard_rows(40, 8, 0, 1, epoch=2, seed=1)),
                          torch.randperm(40, generator=g).numpy())
    plain = shard_rows(10, 4, 1, 2, epoch=7, seed=0, shuffle=False)
    assert [b.tolist() for b in plain] == [[1, 3], [5, 7], [9]]
    assert [b.tolist() for b in shard_rows(10, 4, 0, 2, 0, 0, shuffle=False,
                                           drop_last=True)] == [[0, 2], [4, 6]]


def test_children_of_a_torchrun_process_train_alone(monkeypatch):
    # a joblib worker of an ensemble inherits torchrun's variables and the recorded pid
    # of the process torchrun started: it is no rank and must not join the group
    from skcgcnn.estimators import _distributed

    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29500"}
    environ = {key: value for key, value in os.environ.items()
               if key != _distributed._OWNER_ENV}
    monkeypatch.setattr(os, "environ", {**environ, **env})
    assert _distributed._launched_by_torchrun()  # the first process to look owns it
    run, pid = os.environ[_distributed._OWNER_ENV].rsplit("|", 1)
    assert pid == str(os.getpid())
    os.environ[_distributed._OWNER_ENV] = f"{run}|{os.getpid() + 1}"
    assert not _distributed._launched_by_torchrun()  # a child of the owner
    os.environ["MASTER_PORT"] = "29501"  # a value left from another run is not ours
    assert _distributed._launched_by_torchrun()
    os.environ["WORLD_SIZE"] = "1"
    assert not _distributed._launched_by_torchrun()  # torchrun with one process


def test_shard_rows_refuses_a_bad_rank_or_batch():
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        shard_rows(10, 4, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="batch_size 0"):
        shard_rows(10, 0, 0, 2, 0, 0)


# -- runs with torchrun ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    root = str(TESTS.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [extra.pop("PYTHONPATH_FIRST", ""), root, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _torchrun(args: list[str], cwd: Path, n: int = 2, **env: str
              ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    done = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.fixture(scope="module")
def graphs64(tmp_path_factory) -> Path:
    """The first 64 crystals of sample-500 as a graph file with their targets."""
    from skcgcnn import StructureGraphTransformer
    from skcgcnn.graph import save_graphs

    series, y = sample_series(64)
    path = tmp_path_factory.mktemp("graphs") / "g64.npz"
    save_graphs(path, StructureGraphTransformer().fit_transform(series),
                targets=y.reshape(-1, 1), target_names=["formation_energy"])
    return path


def _one_process(graphs: Path, out: Path, params: list[str]) -> dict:
    """The worker's fit in this process, on one thread as each torchrun process."""
    sys.path.insert(0, str(TESTS))
    threads = torch.get_num_threads()
    try:
        import distributed_worker

        torch.set_num_threads(1)
        distributed_worker.main([str(graphs), str(out), *params])
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(TESTS))
    return dict(np.load(out / "rank0.npz"))


# SGD: with Adam the biases before a batch norm, whose true gradient is 0, move by
# whole steps of lr on gradients of rounding noise, and float-sum differences show in
# the predictions; uneven shares: 48 training rows in batches of 15 (the last of 3 rows
# splits 2 + 1)
API_PARAMS = ["optimizer=sgd", "lr=0.05", "batch_size=15", "iterator_train__shuffle=false",
              "early_stopping=true", "validation_fraction=0.25", "max_epochs=4"]


@needs_shared
@needs_gloo
@pytest.mark.slow
def test_two_processes_fit_as_one(graphs64, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    ref = _one_process(graphs64, one, API_PARAMS)
    # the two processes cut their shares on the device (the GPU path, here on the CPU);
    # the CLI test below runs the host path under torchrun
    _torchrun([str(WORKER), str(graphs64), str(two), *API_PARAMS, "batch_on_device=true"],
              cwd=tmp_path)
    ranks = [dict(np.load(two / f"rank{r}.npz")) for r in (0, 1)]
    assert int(ref["world_size"]) == 1
    for got in ranks:
        assert int(got["world_size"]) == 2
        # after fit: the plain module, its plain batch norms
        assert str(got["module_type"]) == "CGCNN" and str(got["bn_type"]) == "BatchNorm1d"
        for key in ("train_loss", "valid_loss"):
            np.testing.assert_allclose(got[key], ref[key], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got["predictions"], ref["predictions"], rtol=RTOL,
                                   atol=ATOL)
    assert ref["train_loss"][-1] < ref["train_loss"][0]  # it learned something
    # every process holds the same model, and only process 0 saved it
    np.testing.assert_array_equal(ranks[0]["predictions"], ranks[1]["predictions"])
    assert (two / "model.pt").is_file() and (one / "model.pt").is_file()


# Records the files each process opens for writing, renames or creates under a folder
# (Python's audit hooks), one log per torchrun RANK.
_SITECUSTOMIZE = '''
import os, sys
_log = os.environ.get("SKCGCNN_TEST_WRITES")
if _log:
    _root = os.path.realpath(os.environ["SKCGCNN_TEST_WRITES_UNDER"])
    _fh = open(_log + "." + os.environ.get("RANK", "launcher"), "a")
    _write = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) \\
                else isinstance(flags, int) and bool(flags & _write)
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.symlink"):
            path, writing = (args[1] if event == "os.rename" else args[0]), True
        else:
            return
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            real = os.path.realpath(os.fsdecode(path))
            if real.startswith(_root):
                _fh.write(event + " " + real + "\\n")
                _fh.flush()
    sys.addaudithook(_hook)
'''


@needs_shared
@needs_gloo
@pytest.mark.slow
def test_torchrun_cli_train_writes_from_process_zero(tmp_path, structure_cache):
    data = tmp_path / "data"
    data.mkdir()
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:40]
    (data / "id_prop.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        ident = line.split(",")[0]
        os.symlink(SAMPLE500 / f"{ident}.cif", data / f"{ident}.cif")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    out = tmp_path / "run"
    out.mkdir()
    log = tmp_path / "writes"
    done = _torchrun(["-m", "skcgcnn", "train", str(data), "--epochs", "2", "--batch-size",
                      "8", "--atom-fea-len", "8", "--h-fea-len", "8", "--n-conv", "1",
                      "--output-dir", str(out), "--seed", "0", "-q"], cwd=tmp_path,
                     PYTHONPATH_FIRST=str(hooks), SKCGCNN_TEST_WRITES=str(log),
                     SKCGCNN_TEST_WRITES_UNDER=str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["epochs_trained"] == 2 and metrics["n_train"] == 32
    for name in ("model.pt", "history.json", "split.csv", "test_results.csv",
                 "training_state.pt", "best_params.pt"):
        assert (out / name).is_file(), name
    assert done.stdout.count("trained on 32 crystals") == 1  # one summary, process 0's
    written = {r: Path(f"{log}.{r}").read_text().split("\n") if Path(f"{log}.{r}").exists()
               else [] for r in ("0", "1")}
    assert any("metrics.json" in line for line in written["0"])  # the hook sees writes
    assert [line for line in written["1"] if line] == []


@pytest.mark.gpu
@pytest.mark.slow
@needs_shared
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_two_gpus_with_nccl_fit_as_one(graphs64, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    params = [*API_PARAMS, "device=cuda"]
    ref = _one_process(graphs64, one, params)
    _torchrun([str(WORKER), str(graphs64), str(two), *params], cwd=tmp_path)
    for r in (0, 1):
        got = dict(np.load(two / f"rank{r}.npz"))
        assert int(got["world_size"]) == 2 and str(got["bn_type"]) == "BatchNorm1d"
        # GPU kernels sum in their own orders: a looser tolerance
        np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=1e-4)
        np.testing.assert_allclose(got["predictions"], ref["predictions"], atol=1e-3)


def test_other_commands_are_refused_under_torchrun(monkeypatch, tmp_path, capsys):
    from skcgcnn.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    status = main(["featurize", str(SAMPLE500), "-o", str(tmp_path / "g.npz")])
    err = capsys.readouterr().err
    assert status != 0 and "only 'skcgcnn train' runs under torchrun" in err
    assert "each of the 2 processes" in err and not (tmp_path / "g.npz").exists()
