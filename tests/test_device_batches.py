"""Batches cut on the device (batch_on_device) and bf16 autocast (precision), issue 16.

The device path runs on the CPU with ``batch_on_device=True``: its batches must equal
``collate_graphs``' bit for bit, and a seeded fit must give the numpy path's model.  The
CUDA tests repeat that on a GPU and skip without one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.dataset import ValidSplit

from skcgcnn import CGCNNClassifier, CGCNNRegressor, StructureGraphTransformer
from skcgcnn.estimators import GraphDataset, collate_graphs
from skcgcnn.estimators._device_batches import (DeviceGraphs, device_batches,
                                                find_graph_dataset, use_device_batches)

from ._shared import SAMPLE500, load_structures, needs_shared

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=16, batch_size=16)


def cuda(test):
    """A CUDA test: marked ``gpu`` (benchmarks/gpu_suite.sh runs ``pytest -m gpu``),
    skipped without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(),
                                              reason="needs a CUDA device")(test))


@pytest.fixture(scope="module")
def sample():
    """40 MP crystals; a 3 Å radius leaves many atoms with fewer than 12 neighbours."""
    _, structures, y = load_structures(str(SAMPLE500), 40)
    graphs = StructureGraphTransformer().fit_transform(structures)
    short = StructureGraphTransformer(radius=3.0, on_error="skip").fit_transform(structures)
    return graphs, short, np.asarray(y)


def assert_same_batch(a, b):
    (xa, ya), (xb, yb) = a, b
    assert set(xa) == set(xb)
    for key in xa:
        assert xa[key].dtype == xb[key].dtype, key
        assert torch.equal(xa[key].cpu(), xb[key].cpu()), key
    assert ya.dtype == yb.dtype and torch.equal(ya.cpu(), yb.cpu())


@pytest.fixture
def cut_batches(monkeypatch):
    """The crystals of every batch cut on the device, in order."""
    seen = []
    original = DeviceGraphs.batch

    def spy(self, rows):
        seen.append(np.asarray(rows).copy())
        return original(self, rows)

    monkeypatch.setattr(DeviceGraphs, "batch", spy)
    return seen


def host_batches(dataset, rows_per_batch):
    return [collate_graphs([dataset[i] for i in rows]) for rows in rows_per_batch]


# -- the batches -------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("which", ["full", "short"])
@pytest.mark.parametrize("weighted", [False, True])
def test_device_batches_equal_collate_bit_for_bit(sample, which, weighted):
    graphs, short, y = sample
    graphs = graphs if which == "full" else short
    if which == "short":  # the test means something only with -1 padding
        assert (graphs.nbr_idx < 0).any()
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 2, len(graphs)).astype(np.float32) if weighted else None
    targets = rng.normal(size=(len(graphs), 2)).astype(np.float32)
    dataset = GraphDataset(graphs, targets, sample_weight=weights)
    order = rng.permutation(len(graphs))
    batches = [order[i:i + 7] for i in range(0, len(order), 7)]
    data = DeviceGraphs(dataset, "cpu")
    for got, expected in zip([data.batch(rows) for rows in batches],
                             host_batches(dataset, batches)):
        assert_same_batch(got, expected)


@needs_shared
def test_device_batches_follow_a_subset_and_a_given_sampler(sample):
    graphs, _, y = sample
    dataset = torch.utils.data.Subset(GraphDataset(graphs, y.astype(np.float32)),
                                      np.arange(5, 35))
    nested = torch.utils.data.Subset(dataset, [3, 1, 4, 1, 5, 9, 2, 6])
    found, index = find_graph_dataset(nested)
    assert found is dataset.dataset and index.tolist() == [8, 6, 9, 6, 10, 14, 7, 11]
    sampler = [7, 0, 2]  # positions of `nested`, as a distributed sampler would give them
    (X, yb), = list(device_batches(found, "cpu", 8, index=index, sampler=sampler))
    assert_same_batch((X, yb), collate_graphs([nested[i] for i in sampler]))
    assert find_graph_dataset(torch.utils.data.TensorDataset(torch.zeros(3))) is None


@needs_shared
def test_shuffled_epochs_are_skorchs_batches(sample):
    """Seeded alike, the device path's shuffle gives the DataLoader's batches: one
    DataLoader(shuffle=True) epoch and one device epoch from the same torch seed."""
    graphs, _, y = sample
    dataset = GraphDataset(graphs, y)
    torch.manual_seed(3)
    host = list(torch.utils.data.DataLoader(dataset, batch_size=6, shuffle=True,
                                            collate_fn=collate_graphs))
    after_host = torch.rand(1)
    torch.manual_seed(3)
    device = list(device_batches(dataset, "cpu", 6, shuffle=True))
    after_device = torch.rand(1)
    assert len(host) == len(device) == 7
    for a, b in zip(device, host):
        assert_same_batch(a, b)
    assert torch.equal(after_host, after_device)  # the same draws from torch's generator


def test_use_device_batches_values():
    assert use_device_batches("auto", "cuda") and not use_device_batches("auto", "cpu")
    assert use_device_batches(True, "cpu") and not use_device_batches(False, "cuda")
    with pytest.raises(ValueError, match=r"batch_on_device must be one of \['auto', True"):
        use_device_batches("yes", "cpu")


# -- the estimators ----------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("weighted", [False, True])
def test_regressor_fit_on_device_path_equals_numpy_path(sample, weighted, cut_batches):
    graphs, _, y = sample
    w = np.linspace(0.5, 2, len(y)) if weighted else None
    kwargs = dict(max_epochs=3, random_state=0, early_stopping=True, n_iter_no_change=5,
                  **TINY)
    host = CGCNNRegressor(**kwargs).fit(graphs, y, sample_weight=w)  # "auto": off on CPU
    assert not cut_batches
    dev = CGCNNRegressor(batch_on_device=True, **kwargs).fit(graphs, y, sample_weight=w)
    # 36 training crystals in batches of 16 and the 4 held out, each of 3 epochs
    assert [len(rows) for rows in cut_batches] == [16, 16, 4, 4] * 3
    assert len(np.unique(np.concatenate(cut_batches[:4]))) == len(y)
    dev.predict(graphs)
    assert [len(rows) for rows in cut_batches[12:]] == [16, 16, 8]
    np.testing.assert_allclose(dev.history[:, "train_loss"], host.history[:, "train_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(dev.history[:, "valid_loss"], host.history[:, "valid_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(dev.predict(graphs), host.predict(graphs), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(host.predict(graphs), CGCNNRegressor(
        batch_on_device=False, **{**kwargs, "random_state": 1}).fit(graphs, y).predict(graphs))


@needs_shared
def test_classifier_fit_on_device_path_equals_numpy_path(sample, cut_batches):
    graphs, _, y = sample
    labels = (y > np.median(y)).astype(int)
    kwargs = dict(max_epochs=2, random_state=0, train_split=ValidSplit(4), **TINY)
    host = CGCNNClassifier(batch_on_device=False, **kwargs).fit(graphs, labels)
    assert not cut_batches
    dev = CGCNNClassifier(batch_on_device=True, **kwargs).fit(graphs, labels)
    assert len(cut_batches) == 2 * 3  # 30 training crystals, 10 validation ones
    np.testing.assert_allclose(dev.history[:, "valid_loss"], host.history[:, "valid_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(dev.predict_proba(graphs), host.predict_proba(graphs),
                               rtol=1e-5, atol=1e-6)


@needs_shared
def test_bad_values_are_refused_with_the_allowed_ones(sample):
    graphs, _, y = sample
    with pytest.raises(ValueError, match=r"precision must be one of \['float32', 'bfloat16'\]"):
        CGCNNRegressor(max_epochs=1, precision="fp16", **TINY).fit(graphs, y)
    with pytest.raises(ValueError, match="batch_on_device must be one of"):
        CGCNNRegressor(max_epochs=1, batch_on_device="always", **TINY).fit(graphs, y)
    custom = CGCNNRegressor(max_epochs=1, batch_on_device=True,
                            iterator_train__collate_fn=lambda b: collate_graphs(b), **TINY)
    with pytest.raises(ValueError, match="collate_fn .* not collate_graphs; use "
                                         "batch_on_device='auto' or False"):
        custom.fit(graphs, y)


def test_new_parameters_clone():
    reg = CGCNNRegressor(batch_on_device=True, precision="bfloat16")
    twin = clone(reg)
    assert twin.batch_on_device is True and twin.precision == "bfloat16"
    assert CGCNNClassifier().get_params()["batch_on_device"] == "auto"


# -- bf16 autocast -----------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("conv", ["gated", "simple"])
def test_bfloat16_fit_learns_on_cpu(sample, conv):
    graphs, _, y = sample
    reg = CGCNNRegressor(max_epochs=12, precision="bfloat16", random_state=0,
                         module__conv=conv, **{**TINY, "batch_size": 8}).fit(graphs, y)
    losses = np.asarray(reg.history[:, "train_loss"])
    assert np.isfinite(losses).all() and losses[-3:].mean() < 0.7 * losses[:2].mean()
    pred = reg.predict(graphs)
    assert pred.dtype == np.float64 and np.isfinite(pred).all()
    # the forward really ran in bf16: its outputs differ from float32's, a little
    reg.set_params(precision="float32")
    assert not np.array_equal(reg.predict(graphs), pred)
    np.testing.assert_allclose(reg.predict(graphs), pred, atol=0.05 * np.std(y))


@needs_shared
def test_bfloat16_on_masked_neighbours_follows_float32(sample):
    _, short, y = sample  # atoms with fewer than 12 neighbours: the layer's masked branch
    y = y[short.input_positions]
    kwargs = dict(max_epochs=4, random_state=0, batch_on_device=True, **TINY)
    bf16 = CGCNNRegressor(precision="bfloat16", **kwargs).fit(short, y)
    fp32 = CGCNNRegressor(**kwargs).fit(short, y)
    assert np.isfinite(bf16.history[:, "train_loss"]).all()
    np.testing.assert_allclose(bf16.history[:, "train_loss"], fp32.history[:, "train_loss"],
                               rtol=0.02)
    # NaN for the structures the 3 Å graphs skipped, as the transformer's input has them
    assert not np.array_equal(bf16.predict(short), fp32.predict(short), equal_nan=True)


# -- CUDA --------------------------------------------------------------------------------
@cuda
@needs_shared
def test_cuda_batches_stay_on_the_device_and_equal_collate(sample):
    graphs, short, y = sample
    dataset = GraphDataset(short, y[short.input_positions].astype(np.float32),
                           sample_weight=np.linspace(0.5, 2, len(short), dtype=np.float32))
    data = DeviceGraphs(dataset, "cuda")
    for tensor in (data.numbers, data.nbr_idx, data.nbr_dist, data.table, data.y,
                   data.weights):
        assert tensor.is_cuda
    order = np.random.default_rng(0).permutation(len(short))
    batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    for got, expected in zip([data.batch(rows) for rows in batches],
                             host_batches(dataset, batches)):
        assert all(t.is_cuda for t in got[0].values()) and got[1].is_cuda
        assert_same_batch(got, expected)


@cuda
@needs_shared
def test_cuda_fit_device_path_matches_numpy_path(sample):
    graphs, _, y = sample
    kwargs = dict(max_epochs=3, random_state=0, device="cuda", **TINY)
    host = CGCNNRegressor(batch_on_device=False, **kwargs).fit(graphs, y)
    dev = CGCNNRegressor(**kwargs).fit(graphs, y)  # "auto": on for CUDA
    # the same batches; GPU kernels (index_add_ atomics) are not bitwise deterministic
    np.testing.assert_allclose(dev.predict(graphs), host.predict(graphs), rtol=1e-3,
                               atol=1e-3)


@cuda
@needs_shared
def test_cuda_bfloat16_fit_learns(sample):
    graphs, _, y = sample
    reg = CGCNNRegressor(max_epochs=12, precision="bfloat16", device="cuda",
                         random_state=0, **{**TINY, "batch_size": 8}).fit(graphs, y)
    losses = np.asarray(reg.history[:, "train_loss"])
    assert np.isfinite(losses).all() and losses[-3:].mean() < 0.7 * losses[:2].mean()


# -- the device suite's benchmark --------------------------------------------------------
@needs_shared
def test_bench_gpu_runs_on_cpu_and_writes_its_figures(sample, tmp_path, capsys):
    """benchmarks/bench_gpu.py end to end on 30 crystals (from a graph file), so that the
    device suite's script cannot rot while no GPU runs it."""
    import importlib.util
    import json
    from pathlib import Path

    graphs, _, y = sample
    graphs[:30].save(tmp_path / "g.npz", targets=y[:30])
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--graphs", str(tmp_path / "g.npz"), "--epochs",
                       "2", "--batch-size", "8", "--variants", "bf16,fp32+host",
                       "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert (results["n_train"], results["n_predict"]) == (18, 12)
    for name in ("bf16", "fp32+host"):
        r = results["variants"][name]
        assert r["steady_measured"] and r["train_crystals_per_s"] > 0
        assert r["epoch_s_22k"] == pytest.approx(r["epoch_s"] / 18 * 22042)
        assert len(r["train_loss"]) == 2 and np.isfinite(r["train_loss"]).all()
    assert "target (an epoch of 22042 crystals <= 1.0 s)" in capsys.readouterr().out
