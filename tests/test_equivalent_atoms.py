"""Batches of one atom per class of equivalent atoms (issue 16): the classes, the reduced
batches, and the network on them against the full graphs."""
from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from skcgcnn import CGCNNRegressor, StructureGraphTransformer
from skcgcnn.graph import GraphCollection, _orbits, build_graph
from skcgcnn.atom_features import get_atom_features
from skcgcnn.model import CGCNN, batch_norm

from ._shared import SAMPLE500, load_structures, needs_shared
from .test_graph import bcc_iron, perovskite, rock_salt
from .test_model import assert_same_step


def collection(structures, **params):
    return GraphCollection.from_graphs([build_graph(s, **params) for s in structures],
                                       atom_features=get_atom_features("cgcnn"), **params)


def tensors(arrays, dtype=torch.float64):
    out = {key: torch.as_tensor(value) for key, value in arrays.items()}
    out["nbr_idx"] = out["nbr_idx"].long()
    return {key: value.to(dtype) if value.is_floating_point() else value
            for key, value in out.items()}


def test_classes_of_symmetric_crystals():
    graphs = collection([rock_salt(), bcc_iron(), perovskite()])
    # rock salt's 4 Na and 4 Cl, bcc iron's 2 Fe, perovskite's Sr, Ti and 3 O
    np.testing.assert_array_equal(graphs.equivalent_atoms(),
                                  [0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 1, 2, 2, 2])
    batch = graphs.collate(reduce=True)
    np.testing.assert_array_equal(batch["atom_weight"], [4, 4, 2, 1, 1, 3])
    np.testing.assert_array_equal(batch["crystal_idx"], [0, 0, 1, 2, 2, 2])
    full = graphs.collate()
    assert batch["nbr_idx"].max() < 6
    # each kept atom keeps its own distances, and its neighbours' elements
    kept = [0, 4, 8, 10, 11, 12]
    np.testing.assert_array_equal(batch["nbr_dist"], full["nbr_dist"][kept])
    np.testing.assert_array_equal(batch["atom_fea"][batch["nbr_idx"]],
                                  full["atom_fea"][full["nbr_idx"][kept]])


def test_slicing_keeps_the_classes():
    graphs = collection([rock_salt(), bcc_iron(), perovskite()])
    graphs.equivalent_atoms()
    part = graphs[[2, 0]]
    np.testing.assert_array_equal(part.atom_classes, [0, 1, 2, 2, 2, 0, 0, 0, 0, 4, 4, 4, 4])
    np.testing.assert_array_equal(part.collate(reduce=True)["atom_weight"], [1, 1, 3, 4, 4])


def test_a_hash_collision_leaves_every_atom_alone(monkeypatch, caplog):
    """Classes are checked to be equitable: merged by a (forced) hash collision, the
    atoms are left unmerged."""
    monkeypatch.setattr(_orbits, "_hash_rows",
                        lambda first, keys: np.zeros(len(first), dtype=np.uint64))
    graphs = collection([rock_salt(), perovskite()])
    with caplog.at_level(logging.WARNING, logger="skcgcnn.graph._orbits"):
        classes = graphs.equivalent_atoms()
    assert "not equitable" in caplog.text
    np.testing.assert_array_equal(classes, np.r_[np.arange(8), np.arange(5)])


@pytest.mark.parametrize("conv", ["gated", "simple"])
@pytest.mark.parametrize("pooling", ["mean", "sum"])
@pytest.mark.parametrize("radius", [8.0, 3.0])  # 3 Å leaves neighbour slots empty
def test_network_on_reduced_batches_equals_the_full_one(conv, pooling, radius):
    graphs = collection([rock_salt(), bcc_iron(), perovskite()], radius=radius)
    full, reduced = tensors(graphs.collate()), tensors(graphs.collate(reduce=True))
    assert len(reduced["atom_fea"]) < len(full["atom_fea"])
    torch.manual_seed(0)
    net = CGCNN(conv=conv, pooling=pooling).double()
    twin = copy.deepcopy(net)
    assert_same_step(twin, net, twin(**reduced), net(**full))
    net.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(**reduced), net(**full), rtol=1e-10, atol=1e-10)


def test_weighted_batch_norm_follows_repeated_rows():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([1.0, 3.0, 2.0, 1.0, 4.0], dtype=torch.float64)
    repeated = x.repeat_interleave(weight.long(), dim=0)
    bn = torch.nn.BatchNorm1d(3, momentum=None).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    twin = copy.deepcopy(bn)
    out = batch_norm(x, bn, weight)
    want = twin(repeated)
    torch.testing.assert_close(out.repeat_interleave(weight.long(), dim=0), want)
    grad = torch.randn_like(want)
    (want * grad).sum().backward()
    got_grad = x.grad.clone()
    x.grad = None
    # the same loss through the weighted rows: row r's gradient sums its copies'
    (out.repeat_interleave(weight.long(), dim=0) * grad).sum().backward()
    torch.testing.assert_close(x.grad, got_grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(twin, name), msg=name)
    torch.testing.assert_close(bn.weight, twin.weight)


def test_weighted_batch_norm_refuses_other_batch_norms():
    sync = torch.nn.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="atom weights cannot be used with SyncBatchNorm"):
        batch_norm(torch.randn(4, 3), sync, torch.ones(4))


@needs_shared
def test_estimator_fits_reduced_batches_as_full_ones():
    """AdamW, the default recipe: the same losses and predictions within float
    rounding whether the batches are reduced (the default) or not (reduce_atoms=False)."""
    _, structures, y = load_structures(str(SAMPLE500), 40)
    graphs = StructureGraphTransformer().fit_transform(structures)
    kwargs = dict(max_epochs=3, random_state=0, batch_size=16, module__atom_fea_len=8,
                  module__n_conv=2, module__h_fea_len=16)
    reduced = CGCNNRegressor(**kwargs).fit(graphs, y)
    assert reduced.get_dataset(graphs).reduce and reduced.reduce_atoms
    full = CGCNNRegressor(**kwargs, reduce_atoms=False).fit(graphs, y)
    assert not full.get_dataset(graphs).reduce
    np.testing.assert_allclose(reduced.history[:, "train_loss"], full.history[:, "train_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(reduced.predict(graphs), full.predict(graphs), rtol=1e-4,
                               atol=1e-5)
    assert reduced.history[-1, "train_loss"] < reduced.history[0, "train_loss"]


def test_reduced_collection_batches_as_collate_reduce():
    graphs = collection([rock_salt(), bcc_iron(), perovskite()], radius=3.0)
    reduced, weight = graphs.reduced()
    assert reduced.n_atoms.tolist() == [2, 1, 3]
    for rows in ([0, 1, 2], [2, 0], [1]):
        want = graphs.collate(np.array(rows), reduce=True)
        got = reduced.collate(np.array(rows))
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        np.testing.assert_array_equal(weight[reduced._atom_rows(np.array(rows))],
                                      want["atom_weight"])


def test_device_batches_are_reduced_as_host_ones():
    from skcgcnn.estimators import GraphDataset, collate_graphs
    from skcgcnn.estimators._device_batches import device_batches

    graphs = collection([rock_salt(), bcc_iron(), perovskite()], radius=3.0)
    dataset = GraphDataset(graphs, np.arange(3.0), reduce=True)
    (X, y), = list(device_batches(dataset, "cpu", 3))
    want, want_y = collate_graphs([dataset[i] for i in range(3)])
    assert set(X) == set(want) and "atom_weight" in X
    for key in X:
        torch.testing.assert_close(X[key], want[key], msg=key)
    torch.testing.assert_close(y, want_y)


def test_the_reference_kernel_trains_on_full_graphs():
    """It takes no atom weights, so reduce_atoms=True leaves its batches full."""
    graphs = collection([rock_salt(), bcc_iron(), perovskite()] * 2)
    tiny = dict(max_epochs=2, batch_size=3, random_state=0, module__atom_fea_len=4,
                module__h_fea_len=4, module__n_conv=1)
    reg = CGCNNRegressor(module__kernel="reference", **tiny).fit(graphs, np.arange(6.0))
    assert reg.reduce_atoms and not reg.get_dataset(graphs).reduce
    assert np.isfinite(reg.predict(graphs)).all()
    with pytest.raises(ValueError, match="reduce_atoms must be True or False, got 'yes'"):
        CGCNNRegressor(reduce_atoms="yes", **tiny).fit(graphs, np.arange(6.0))
