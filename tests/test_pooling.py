"""pooling="mean" (intensive targets) and pooling="sum" (extensive targets)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from skcgcnn import CGCNNClassifier, CGCNNRegressor, StructureGraphTransformer
from skcgcnn.explain import atom_contributions
from skcgcnn.model import CGCNN, sum_pool

from .test_graph import bcc_iron, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=2, module__h_fea_len=8, batch_size=4,
            max_epochs=3, random_state=0)


def _cells():
    """Crystals whose atoms of one element are all alike, so that ties at the
    12-neighbour cut pick equivalent neighbours in a cell and in its supercells."""
    return [rock_salt(5.64), bcc_iron(2.87), rock_salt(5.4), bcc_iron(2.95)]


@pytest.fixture(scope="module")
def fitted():
    cells = _cells()
    totals = np.array([-3.5 * len(s) for s in cells]) + np.array([0.2, -0.1, 0.3, 0.0])
    transformer = StructureGraphTransformer().fit()
    graphs = transformer.transform(cells)
    per_atom = totals / graphs.n_atoms
    summed = CGCNNRegressor(module__pooling="sum", **TINY).fit(graphs, totals)
    mean = CGCNNRegressor(**TINY).fit(graphs, per_atom)
    return transformer, summed, mean


@pytest.mark.parametrize("make", [rock_salt, bcc_iron], ids=["NaCl", "Fe"])
def test_supercells_scale_the_sum_and_keep_the_mean(fitted, make):
    transformer, summed, mean = fitted
    cell = make()
    graphs = transformer.transform([cell, cell * (2, 1, 1), cell * (2, 2, 1)])
    assert graphs.n_atoms.tolist() == [len(cell), 2 * len(cell), 4 * len(cell)]
    total = summed.predict(graphs)
    np.testing.assert_allclose(total / total[0], [1.0, 2.0, 4.0], rtol=1e-5)
    intensive = mean.predict(graphs)
    np.testing.assert_allclose(intensive, intensive[0], rtol=1e-5)


def test_sum_pooling_scales_targets_without_a_shift(fitted):
    _, summed, mean = fitted
    np.testing.assert_array_equal(summed.target_scaler_.mean_, [0.0])
    assert summed.target_scaler_.scale_[0] > 0
    assert mean.target_scaler_.mean_[0] != 0.0


def test_atom_contributions_add_up_to_the_sum_pooled_prediction(fitted):
    transformer, summed, _ = fitted
    cells = [rock_salt(5.5), bcc_iron(2.9) * (1, 1, 2)]
    graphs = transformer.transform(cells)
    frame = atom_contributions(summed, graphs)
    totals = frame.groupby("crystal", sort=False)["contribution"].sum().to_numpy()
    np.testing.assert_allclose(totals, summed.predict(graphs), rtol=1e-5)
    np.testing.assert_allclose(frame["sum_contribution"], frame["prediction"], rtol=1e-5)


def test_module_pooling_by_hand():
    torch.manual_seed(0)
    net = CGCNN(orig_atom_fea_len=4, atom_fea_len=5, n_conv=1, h_fea_len=6,
                pooling="sum").eval()
    atoms = torch.randn(5, 5)
    idx = torch.tensor([0, 0, 1, 1, 1])
    per_atom = net.head(atoms)
    np.testing.assert_allclose(net.pool_and_head(atoms, idx).detach().numpy(),
                               [per_atom[:2].sum(0).detach().numpy(),
                                per_atom[2:].sum(0).detach().numpy()], rtol=1e-6)
    assert sum_pool(per_atom, idx, 3).shape == (3, 1)  # a crystal without atoms: zeros
    net.pooling = "mean"
    np.testing.assert_allclose(net.pool_and_head(atoms, idx).detach().numpy(),
                               net.head(torch.stack([atoms[:2].mean(0), atoms[2:].mean(0)]))
                               .detach().numpy(), rtol=1e-6)


def test_bad_pooling_is_refused():
    with pytest.raises(ValueError, match=r"pooling must be one of \['mean', 'sum'\], got 'max'"):
        CGCNN(pooling="max")
    with pytest.raises(ValueError, match="use pooling='mean' for classification"):
        CGCNN(pooling="sum", classification=True)
    graphs = StructureGraphTransformer().fit_transform(_cells())
    with pytest.raises(ValueError, match="pooling='mean' for classification"):
        CGCNNClassifier(module__pooling="sum", **TINY).fit(graphs, ["a", "b", "a", "b"])


def test_sum_pooled_model_saves_and_loads(fitted, tmp_path):
    from skcgcnn import load_model, save_model

    transformer, summed, _ = fitted
    graphs = transformer.transform([rock_salt(), rock_salt() * (2, 1, 1)])
    save_model(summed, tmp_path / "total.pt")
    loaded = load_model(tmp_path / "total.pt")
    assert loaded.module_.pooling == "sum"
    np.testing.assert_allclose(loaded.predict(graphs), summed.predict(graphs), rtol=1e-6)
