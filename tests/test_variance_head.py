"""A mean-variance head (loss="gaussian_nll"): training, std in target units, the
ensemble's epistemic + aleatoric combination, persistence and the scikit-learn contract."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skcgcnn import (CGCNNEnsembleRegressor, CGCNNRegressor, StructureGraphTransformer,
                     load_model, save_model)
from skcgcnn.estimators import GaussianNLLHead, LOSSES
from skcgcnn.estimators._recipe import VARIANCE_FLOOR, mean_and_variance

from .test_graph import bcc_iron, perovskite, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=2, loss="gaussian_nll")


@pytest.fixture(scope="module")
def data():
    structures = [rock_salt(5.3), bcc_iron(2.8), perovskite(3.8), rock_salt(5.8),
                  bcc_iron(3.0), perovskite(4.0), rock_salt(5.5), bcc_iron(2.9)]
    y = np.array([-2.0, 0.1, -3.0, -1.8, 0.0, -2.9, -1.9, 0.05])
    return structures, StructureGraphTransformer().fit_transform(structures), y


@pytest.fixture(scope="module")
def fitted(data):
    _, graphs, y = data
    return CGCNNRegressor(random_state=0, **TINY).fit(graphs, y)


def test_the_criterion_is_torch_gaussian_nll_on_softplus_variances():
    assert LOSSES["gaussian_nll"] is GaussianNLLHead
    output = torch.tensor([[0.5, -1.0, 2.0, -30.0]])  # two means, two raw variances
    target = torch.tensor([[1.0, 0.0]])
    mean, var = mean_and_variance(output, 2)
    np.testing.assert_allclose(var.numpy(), [[np.log1p(np.exp(2.0)) + VARIANCE_FLOOR,
                                              np.log1p(np.exp(-30.0)) + VARIANCE_FLOOR]],
                               rtol=1e-6)
    expected = 0.5 * (np.log(var.numpy()) + (mean.numpy() - target.numpy()) ** 2
                      / var.numpy())
    loss = GaussianNLLHead(reduction="none")(output, target)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="2 \\* 2 outputs, this one has 3"):
        mean_and_variance(output[:, :3], 2)


def test_beta_nll_weighs_each_value_by_its_variance():
    output = torch.tensor([[0.5, 2.0], [-1.0, -1.0], [2.0, 0.3]], requires_grad=True)
    target = torch.tensor([[1.0], [0.0], [1.5]])
    mean, var = mean_and_variance(output.detach(), 1)
    plain = GaussianNLLHead(reduction="none")(output, target)
    half = GaussianNLLHead(reduction="none", beta=0.5)(output, target)
    np.testing.assert_allclose(half.detach().numpy(),
                               (plain * var.sqrt()).detach().numpy(), rtol=1e-6)
    # beta = 1: the mean's gradient is the squared error's, (mean - y) / n
    GaussianNLLHead(beta=1.0)(output, target).backward()
    np.testing.assert_allclose(output.grad[:, 0].numpy(),
                               ((mean - target) / 3).squeeze(1).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="criterion__beta=2.0: .* in \\[0, 1\\]"):
        GaussianNLLHead(beta=2.0)


def test_beta_nll_fit_learns(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, criterion__beta=0.5,
                         **{**TINY, "max_epochs": 25, "lr": 0.02}).fit(graphs, y)
    assert reg.criterion_.beta == 0.5
    losses = np.asarray(reg.history[:, "train_loss"])
    assert np.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()
    assert np.abs(reg.predict(graphs) - y).mean() < np.abs(y - y.mean()).mean()
    assert (reg.predict(graphs, return_std=True)[1] > 0).all()


def test_nll_fit_learns(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, **{**TINY, "max_epochs": 25, "lr": 0.02}
                         ).fit(graphs, y)
    losses = np.asarray(reg.history[:, "train_loss"])
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 0.3  # the NLL falls, not just wobbles
    assert reg.module_.fc_out.out_features == 2 and reg.n_outputs_ == 1
    # a fitted head beats predicting the training mean
    assert np.abs(reg.predict(graphs) - y).mean() < np.abs(y - y.mean()).mean()


def test_std_is_positive_and_in_target_units(data, fitted):
    _, graphs, y = data
    mean, std = fitted.predict(graphs, return_std=True)
    assert mean.shape == std.shape == (len(y),)
    assert (std > 0).all() and np.isfinite(std).all()
    np.testing.assert_array_equal(fitted.predict(graphs), mean)
    # the std is the network's standardised one times the target scale, exactly
    tenfold = pickle.loads(pickle.dumps(fitted))
    tenfold.target_scaler_.scale_ = 10 * tenfold.target_scaler_.scale_
    tenfold.target_scaler_.mean_ = 10 * tenfold.target_scaler_.mean_
    mean10, std10 = tenfold.predict(graphs, return_std=True)
    np.testing.assert_allclose(mean10, 10 * mean, rtol=1e-12)
    np.testing.assert_allclose(std10, 10 * std, rtol=1e-12)
    # the same seed on targets times 10: the same standardised fit up to float32
    # rounding, which training amplifies to ~1e-3
    scaled = CGCNNRegressor(random_state=0, **TINY).fit(graphs, 10 * y)
    mean10, std10 = scaled.predict(graphs, return_std=True)
    np.testing.assert_allclose(mean10, 10 * mean, rtol=2e-2)
    np.testing.assert_allclose(std10, 10 * std, rtol=2e-2)


def test_two_targets_give_a_std_each(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, **TINY).fit(graphs, np.column_stack([y, 100 * y]))
    mean, std = reg.predict(graphs, return_std=True)
    assert mean.shape == std.shape == (len(y), 2)
    assert reg.module_.fc_out.out_features == 4
    assert std[:, 1].mean() > 10 * std[:, 0].mean()  # each in its own target's units


def test_return_std_without_a_variance_head_is_refused(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, **{**TINY, "loss": "absolute_error"}).fit(graphs, y)
    with pytest.raises(ValueError, match="loss='absolute_error'.*loss='gaussian_nll'"):
        reg.predict(graphs, return_std=True)
    assert reg.predict(graphs).shape == (len(y),)


def test_weighted_nll_fit(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, **TINY).fit(
        graphs, y, sample_weight=np.arange(1.0, len(y) + 1))
    assert np.isfinite(reg.history[:, "train_loss"]).all()
    assert (reg.predict(graphs, return_std=True)[1] > 0).all()


def test_skipped_structures_get_nan_std(data, fitted):
    structures, _, y = data
    far = Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]])  # no neighbour: skipped
    graphs = StructureGraphTransformer(on_error="skip").fit_transform([far] + structures)
    mean, std = fitted.predict(graphs, return_std=True)
    assert np.isnan(mean[0]) and np.isnan(std[0]) and np.isfinite(std[1:]).all()


def test_save_load_pickle_and_clone_keep_the_head(data, fitted, tmp_path):
    structures, graphs, _ = data
    mean, std = fitted.predict(graphs, return_std=True)
    save_model(fitted, tmp_path / "nll.pt")
    loaded = load_model(tmp_path / "nll.pt")
    assert loaded.loss == "gaussian_nll" and loaded.module_.fc_out.out_features == 2
    mean2, std2 = loaded.predict(graphs, return_std=True)
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)
    np.testing.assert_allclose(std2, std, rtol=1e-6)
    assert loaded.model_card_["n_outputs"] == 1
    unpickled = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(unpickled.predict(graphs, return_std=True)[1], std)
    assert clone(fitted).get_params()["loss"] == "gaussian_nll"
    fitted.save_params(f_params=tmp_path / "p.pt", f_fitted=tmp_path / "fitted.json")
    fresh = CGCNNRegressor(**TINY)
    fresh.load_params(f_params=tmp_path / "p.pt", f_fitted=tmp_path / "fitted.json")
    np.testing.assert_allclose(fresh.predict(graphs, return_std=True)[1], std, rtol=1e-6)


def test_grid_search_over_the_loss(data):
    _, graphs, y = data
    search = GridSearchCV(CGCNNRegressor(random_state=0, **TINY),
                          {"loss": ["absolute_error", "gaussian_nll"]}, cv=KFold(2),
                          scoring="neg_mean_absolute_error").fit(graphs, y)
    best = search.best_estimator_
    assert best.loss == search.best_params_["loss"]
    assert best.module_.fc_out.out_features == (2 if best.loss == "gaussian_nll" else 1)


# -- the ensemble ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ensemble(data):
    _, graphs, y = data
    return CGCNNEnsembleRegressor(n_estimators=3, random_state=0, **TINY).fit(graphs, y)


def test_ensemble_combines_members_exactly(data, ensemble):
    _, graphs, _ = data
    outputs = [member.predict(graphs, return_std=True) for member in ensemble.estimators_]
    means = np.stack([m for m, _ in outputs])
    variances = np.stack([s ** 2 for _, s in outputs])
    parts = ensemble.predict_uncertainty(graphs)
    np.testing.assert_allclose(parts.mean, means.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(parts.epistemic_std, means.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(parts.aleatoric_std, np.sqrt(variances.mean(axis=0)),
                               rtol=1e-12)
    total = np.sqrt(means.var(axis=0) + variances.mean(axis=0))
    np.testing.assert_allclose(parts.std, total, rtol=1e-12)
    mean, std = ensemble.predict(graphs, return_std=True)
    np.testing.assert_array_equal(mean, parts.mean)
    np.testing.assert_array_equal(std, parts.std)
    assert (std > parts.epistemic_std).all() and (std > parts.aleatoric_std).all()


def test_ensemble_without_heads_has_no_aleatoric_part(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=2, random_state=0,
                                 **{**TINY, "loss": "absolute_error"}).fit(graphs, y)
    parts = ens.predict_uncertainty(graphs)
    assert parts.aleatoric_std is None
    members = ens.predict_members(graphs)
    np.testing.assert_array_equal(parts.std, members.std(axis=0))
    np.testing.assert_array_equal(parts.epistemic_std, parts.std)


def test_ensemble_pipeline_save_load_and_clone(data, ensemble, tmp_path):
    structures, _, y = data
    pipe = make_pipeline(StructureGraphTransformer(), clone(ensemble)).fit(structures, y)
    mean, std = pipe.predict(structures, return_std=True)
    save_model(pipe, tmp_path / "ens.pt")
    loaded = load_model(tmp_path / "ens.pt")
    assert loaded[-1].get_params()["loss"] == "gaussian_nll"
    mean2, std2 = loaded.predict(structures, return_std=True)
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)
    np.testing.assert_allclose(std2, std, rtol=1e-5)
    graphs = pipe[0].transform(structures)
    parts = pickle.loads(pickle.dumps(pipe[-1])).predict_uncertainty(graphs)
    np.testing.assert_allclose(parts.std, std, rtol=1e-12)


def test_std_and_domain_together(data):
    _, graphs, y = data
    reg = CGCNNRegressor(random_state=0, domain="knn", **TINY).fit(graphs, y)
    mean, std, distance = reg.predict(graphs, return_std=True, return_domain=True)
    np.testing.assert_array_equal(mean, reg.predict(graphs))
    np.testing.assert_array_equal(std, reg.predict(graphs, return_std=True)[1])
    assert mean.shape == std.shape == distance.shape == (len(y),)
    np.testing.assert_allclose(distance, reg.domain_.distance_from_features(
        reg.predict_crystal_features(graphs)))
