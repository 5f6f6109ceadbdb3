"""ApplicabilityDomain and the regressors' domain="knn": distances, calibration, warning."""
from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcgcnn import (ApplicabilityDomain, CGCNNEmbedder, CGCNNEnsembleRegressor,
                     CGCNNRegressor, OutsideDomainWarning, StructureGraphTransformer,
                     load_model, save_model)

from .test_graph import bcc_iron, perovskite

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=8,
            max_epochs=3, random_state=0)


def rock_salt_of(cation: str, anion: str, a: float) -> Structure:
    """The primitive rock-salt cell (built directly: from_spacegroup is slow)."""
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def halides():
    """36 rock-salt halides: 12 compositions, each at three lattice constants, so every
    training crystal has two close siblings and the domain (k=2) is tight around them."""
    structures, y = [], []
    for i, cation in enumerate(["Li", "Na", "K", "Rb"]):
        for j, anion in enumerate(["F", "Cl", "Br"]):
            for stretch in (0.99, 1.0, 1.01):
                structures.append(rock_salt_of(cation, anion, stretch * (4.0 + 0.5 * (i + j))))
                y.append(-3.0 + 0.3 * i + 0.4 * j + stretch)
    transformer = StructureGraphTransformer().fit()
    graphs = transformer.transform(structures)
    reg = CGCNNRegressor(**TINY, domain=ApplicabilityDomain(n_neighbors=2)).fit(
        graphs, np.array(y))
    return structures, transformer, graphs, np.array(y), reg


# -- the domain on plain features ----------------------------------------------------
def test_threshold_is_the_quantile_of_the_leave_self_out_distances():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    domain = ApplicabilityDomain(n_neighbors=3, quantile=0.9, scale=False).fit(X)
    pairwise = np.linalg.norm(X[:, None] - X[None], axis=-1)
    np.fill_diagonal(pairwise, np.inf)  # each row without itself
    expected = np.sort(pairwise, axis=1)[:, :3].mean(axis=1)
    np.testing.assert_allclose(domain.train_distances_, expected)
    assert np.mean(domain.train_distances_ <= domain.threshold_) == 0.9  # 36 of 40 exactly
    assert domain.threshold_ == np.sort(expected)[35]

    new = np.vstack([X[:1] + 0.01, [[50.0, 50.0, 50.0]]])
    distance = domain.distance(new)
    np.testing.assert_allclose(domain.score_samples(new), -distance)
    np.testing.assert_allclose(domain.decision_function(new), domain.threshold_ - distance)
    assert domain.predict(new).tolist() == [1, -1]
    assert domain.offset_ == -domain.threshold_
    everything = ApplicabilityDomain(n_neighbors=3, quantile=1.0).fit(X)
    assert np.all(everything.train_distances_ <= everything.threshold_)


@pytest.mark.parametrize("params, message", [
    ({"n_neighbors": 0}, "n_neighbors=0"), ({"quantile": 1.5}, "quantile=1.5"),
    ({"n_neighbors": 40}, "needs more than 40 training crystals")])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        ApplicabilityDomain(**params).fit(np.random.default_rng(0).normal(size=(40, 2)))


@parametrize_with_checks([ApplicabilityDomain(n_neighbors=2)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- the regressors' domain="knn" -------------------------------------------------------
def test_far_crystals_are_outside_and_warned_about(halides):
    structures, transformer, graphs, y, reg = halides
    domain = reg.domain_
    assert math.ceil(0.95 * 36) == 35
    assert np.sum(domain.train_distances_ <= domain.threshold_) == 35  # calibrated rate
    far = transformer.transform([bcc_iron(2.87), perovskite(3.9)])
    with pytest.warns(OutsideDomainWarning, match=r"2 of 2 crystals lie outside") as record:
        pred, distance = reg.predict(far, return_domain=True)
    assert "ids [0, 1]" in str(record[0].message)
    assert pred.shape == (2,) and np.all(distance > domain.threshold_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a training crystal: inside, no warning
        _, own = reg.predict(graphs[:3], return_domain=True)
    # scored again, a training crystal counts itself (distance 0) among its neighbours
    assert np.all(own <= domain.train_distances_[:3] + 1e-9)
    without = clone(reg).set_params(domain=None).fit(graphs, y)
    with pytest.raises(ValueError, match="domain='knn'"):
        without.predict(far, return_domain=True)
    with pytest.raises(ValueError, match="domain='bogus'"):
        clone(reg).set_params(domain="bogus").fit(graphs, y)


def test_domain_of_a_pipeline_clones_pickles_and_searches(halides):
    structures, transformer, graphs, y, reg = halides
    domain = make_pipeline(StructureGraphTransformer(),
                           ApplicabilityDomain(CGCNNEmbedder(reg), n_neighbors=2))
    domain.fit(structures)
    assert domain.predict([structures[0], bcc_iron(2.87)]).tolist() == [1, -1]
    # the domain of the regressor's own domain="knn", on the same embeddings
    np.testing.assert_allclose(domain[-1].train_distances_, reg.domain_.train_distances_)
    assert clone(domain)[-1].estimator.estimator is reg  # frozen: clone shares the network
    restored = pickle.loads(pickle.dumps(domain))
    np.testing.assert_allclose(restored.score_samples(structures[:5]),
                               domain.score_samples(structures[:5]))
    embed = make_pipeline(transformer, CGCNNEmbedder(reg))  # structures -> embeddings
    search = GridSearchCV(ApplicabilityDomain(embed), {"n_neighbors": [1, 2]}, cv=KFold(2),
                          scoring=lambda est, X, y=None: est.score_samples(X).mean())
    search.fit(structures)
    assert search.best_params_["n_neighbors"] in (1, 2)
    # on features alone, the same distances as through the embedder
    features = ApplicabilityDomain(n_neighbors=2).fit(reg.predict_crystal_features(graphs))
    np.testing.assert_allclose(features.train_distances_, domain[-1].train_distances_)


def test_a_network_without_an_embedder_is_refused_naming_the_fix(halides):
    _, _, graphs, _, reg = halides
    with pytest.raises(TypeError, match=r"CGCNNRegressor has no transform.*"
                                        r"CGCNNEmbedder\(network\)"):
        ApplicabilityDomain(reg).fit(graphs)
    twin = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(twin.domain_.train_distances_, reg.domain_.train_distances_)


def test_saved_models_keep_the_domain(halides, tmp_path):
    _, transformer, graphs, _, reg = halides
    path = tmp_path / "model.pt"
    save_model(make_pipeline(transformer, reg), path)
    loaded = load_model(path)
    far = transformer.transform([bcc_iron(2.87)])
    with pytest.warns(OutsideDomainWarning):
        _, before = reg.predict(far, return_domain=True)
    with pytest.warns(OutsideDomainWarning):
        _, after = loaded[-1].predict(far, return_domain=True)
    np.testing.assert_allclose(after, before, rtol=1e-6)
    assert loaded[-1].domain_.threshold_ == reg.domain_.threshold_
    assert loaded[-1].model_card_["domain"]["n_neighbors"] == 2
    assert loaded[-1].model_card_["domain"]["n_train"] == len(graphs)


def test_ensemble_answers_mean_std_and_distance(halides):
    _, transformer, graphs, y, _ = halides
    ens = CGCNNEnsembleRegressor(n_estimators=2, domain="knn", **TINY).fit(graphs, y)
    assert ens.domain_.n_features_in_ == 16  # the two members' embeddings side by side
    assert "domain" not in ens.estimators_[0].get_params() or \
        ens.estimators_[0].domain is None  # the members fit no domain of their own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutsideDomainWarning)
        mean, std, distance = ens.predict(graphs[:4], return_std=True, return_domain=True)
    assert mean.shape == std.shape == distance.shape == (4,)
    assert clone(ens).domain == "knn"
