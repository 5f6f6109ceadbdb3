"""CGCNNEnsembleRegressor: members, spread, parameters, persistence."""
from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skcgcnn import (CGCNNEnsembleRegressor, CGCNNRegressor, StructureGraphTransformer,
                     load_model, save_model)

from .test_graph import bcc_iron, perovskite, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=2)


@pytest.fixture(scope="module")
def data():
    structures = [rock_salt(5.3), bcc_iron(2.8), perovskite(3.8), rock_salt(5.8),
                  bcc_iron(3.0), perovskite(4.0)]
    y = np.array([-2.0, 0.1, -3.0, -1.8, 0.0, -2.9])
    return structures, StructureGraphTransformer().fit_transform(structures), y


@pytest.fixture(scope="module")
def fitted(data):
    _, graphs, y = data
    return CGCNNEnsembleRegressor(n_estimators=3, random_state=0, **TINY).fit(graphs, y)


def test_mean_and_std_are_those_of_the_members(fitted, data):
    _, graphs, _ = data
    members = np.stack([m.predict(graphs) for m in fitted.estimators_])
    assert members.shape == (3, len(graphs))
    np.testing.assert_array_equal(fitted.predict_members(graphs), members)
    mean, std = fitted.predict(graphs, return_std=True)
    np.testing.assert_allclose(mean, members.mean(axis=0))
    np.testing.assert_allclose(std, members.std(axis=0))
    np.testing.assert_array_equal(fitted.predict(graphs), mean)
    assert (std > 0).all()  # different seeds, different networks


def test_members_are_regressors_with_the_given_and_default_params(fitted):
    assert len(fitted.estimators_) == 3 and len(set(fitted.seeds_.tolist())) == 3
    default = CGCNNRegressor()
    for member, seed in zip(fitted.estimators_, fitted.seeds_):
        assert isinstance(member, CGCNNRegressor)
        assert member.random_state == seed
        assert member.max_epochs == 2 and member.module__n_conv == 1
        # what the ensemble was not given is CGCNNRegressor's default, whatever it is
        assert member.lr == default.lr and member.optimizer is default.optimizer
        assert member.lr_schedule == default.lr_schedule


def test_members_differ_without_random_state(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=2, **TINY).fit(graphs, y)
    assert ens.seeds_[0] != ens.seeds_[1]
    assert ens.predict(graphs, return_std=True)[1].min() > 0


def test_random_state_reproduces_and_parallel_equals_serial(data):
    import torch

    _, graphs, y = data
    # joblib's loky workers run torch on cpu_count // n_jobs threads (1 here); another
    # thread count sums in another order, and training amplifies the last bits, so the
    # serial reference is fitted on one thread too
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        serial = CGCNNEnsembleRegressor(n_estimators=3, random_state=0, **TINY).fit(graphs, y)
    finally:
        torch.set_num_threads(threads)
    again = CGCNNEnsembleRegressor(n_estimators=3, random_state=0, n_jobs=2, **TINY)
    np.testing.assert_allclose(again.fit(graphs, y).predict(graphs), serial.predict(graphs),
                               rtol=1e-6)


def test_bootstrap_members_see_resampled_rows(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=2, bootstrap=True, random_state=3,
                                 **TINY).fit(graphs, y)
    # the draws the ensemble makes: seeds first, then one sample of rows per member
    rng = np.random.RandomState(3)
    seeds = rng.randint(0, 2 ** 31 - 1, size=2)
    np.testing.assert_array_equal(ens.seeds_, seeds)
    for member, seed in zip(ens.estimators_, seeds):
        counts = np.bincount(rng.randint(0, len(y), size=len(y)), minlength=len(y))
        assert (counts == 0).any()  # some rows left out: a real resample
        by_hand = CGCNNRegressor(random_state=int(seed), **TINY).fit(
            graphs, y, sample_weight=counts.astype(float))
        np.testing.assert_array_equal(member.predict(graphs), by_hand.predict(graphs))


def test_single_member_has_zero_std(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=1, random_state=0, **TINY).fit(graphs, y)
    np.testing.assert_array_equal(ens.predict(graphs, return_std=True)[1], 0.0)


def test_params_clone_and_grid_search(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=2, random_state=0, **TINY)
    params = ens.get_params()
    assert params["module__n_conv"] == 1 and params["n_estimators"] == 2
    twin = clone(ens)
    assert twin.get_params() == params and twin is not ens
    twin.set_params(module__n_conv=2, lr=0.05)
    assert twin.get_params()["module__n_conv"] == 2 and twin.lr == 0.05
    with pytest.raises(ValueError, match="estimators_"):
        twin.set_params(estimators_=[])
    search = GridSearchCV(ens, {"module__n_conv": [1, 2]}, cv=KFold(2),
                          scoring="neg_mean_absolute_error").fit(graphs, y)
    assert search.best_estimator_.estimators_[0].module__n_conv == \
        search.best_params_["module__n_conv"]


def test_bad_params_are_refused(data):
    _, graphs, y = data
    with pytest.raises(ValueError, match="n_estimators must be an int >= 1, got 0"):
        CGCNNEnsembleRegressor(n_estimators=0).fit(graphs, y)
    with pytest.raises(ValueError, match="bootstrap must be True or False"):
        CGCNNEnsembleRegressor(bootstrap="yes").fit(graphs, y)
    with pytest.raises(ValueError, match="bogus"):
        CGCNNEnsembleRegressor(n_estimators=1, bogus=3, **TINY).fit(graphs, y)
    with pytest.raises(TypeError, match="StructureGraphTransformer"):
        CGCNNEnsembleRegressor(n_estimators=1, **TINY).fit(np.zeros((6, 3)), y)


def test_pipeline_return_std_and_save_load(data, tmp_path):
    structures, _, y = data
    pipe = make_pipeline(StructureGraphTransformer(),
                         CGCNNEnsembleRegressor(n_estimators=2, random_state=1, **TINY))
    pipe.fit(structures, y)
    mean, std = pipe.predict(structures, return_std=True)
    assert mean.shape == std.shape == (len(y),)
    save_model(pipe, tmp_path / "ensemble.pt")
    loaded = load_model(tmp_path / "ensemble.pt")
    assert isinstance(loaded[-1], CGCNNEnsembleRegressor)
    assert len(loaded[-1].estimators_) == 2
    assert loaded[-1].get_params()["module__n_conv"] == 1
    mean2, std2 = loaded.predict(structures, return_std=True)
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)
    np.testing.assert_allclose(std2, std, rtol=1e-5, atol=1e-7)


def test_graphs_built_otherwise_are_refused(fitted, data):
    structures, _, _ = data
    other = StructureGraphTransformer(radius=6.0).fit_transform(structures)
    with pytest.raises(ValueError, match="other graph settings"):
        fitted.predict(other, return_std=True)


def test_two_targets(data):
    _, graphs, y = data
    ens = CGCNNEnsembleRegressor(n_estimators=2, random_state=0, **TINY)
    mean, std = ens.fit(graphs, np.column_stack([y, -y])).predict(graphs, return_std=True)
    assert mean.shape == std.shape == (len(y), 2)


def test_weights_per_input_structure_when_structures_were_skipped(data):
    from pymatgen.core import Lattice, Structure

    structures, graphs, y = data
    far = Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]])  # no neighbour: skipped
    with_skipped = StructureGraphTransformer(on_error="skip").fit_transform(
        structures[:3] + [far] + structures[3:])
    params = dict(n_estimators=1, bootstrap=True, random_state=0, **TINY)
    ens = CGCNNEnsembleRegressor(**params).fit(
        with_skipped, np.insert(y, 3, 9.0), sample_weight=np.insert(np.ones(len(y)), 3, 5.0))
    plain = CGCNNEnsembleRegressor(**params).fit(graphs, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(ens.predict(graphs), plain.predict(graphs), rtol=1e-6)
