"""CGCNNEmbedder: a fitted CGCNN's crystal embeddings as transformer output."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks

from skcgcnn import (CGCNNEmbedder, CGCNNEnsembleRegressor, CGCNNRegressor,
                     StructureGraphTransformer)
from skcgcnn.estimators import make_cgcnn_pipeline

from .test_graph import bcc_iron, perovskite, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=2, random_state=0)


@pytest.fixture(scope="module")
def data():
    structures = [rock_salt(5.3), bcc_iron(2.8), perovskite(3.8), rock_salt(5.8),
                  bcc_iron(3.0), perovskite(4.0), rock_salt(5.5), bcc_iron(2.9)]
    y = np.array([-2.0, 0.1, -3.0, -1.8, 0.0, -2.9, -1.9, 0.05])
    graphs = StructureGraphTransformer().fit_transform(structures)
    return structures, graphs, y, CGCNNRegressor(**TINY).fit(graphs, y)


def _pooled_by_hand(reg, graphs):
    """The mean over each crystal's atoms of the module's last-convolution output."""
    t = {k: torch.as_tensor(v) for k, v in graphs.collate(np.arange(len(graphs))).items()}
    with torch.no_grad():
        atoms = reg.module_.eval().atom_embeddings(t["atom_fea"], t["nbr_idx"].long(),
                                                   t["nbr_dist"])
    idx = t["crystal_idx"].long().numpy()
    return np.stack([atoms.numpy()[idx == i].mean(axis=0) for i in range(len(graphs))])


def test_transform_gives_the_pooled_atom_features(data):
    _, graphs, _, reg = data
    emb = CGCNNEmbedder(reg).fit(graphs)
    out = emb.transform(graphs)
    assert out.shape == (len(graphs), 8) and emb.n_features_out_ == 8
    np.testing.assert_allclose(out, _pooled_by_hand(reg, graphs), rtol=1e-5, atol=1e-6)
    assert emb.get_feature_names_out()[:2].tolist() == ["cgcnn_embedding0",
                                                        "cgcnn_embedding1"]


def test_pipeline_with_ridge_and_grid_search_keep_the_network(data):
    structures, _, y, reg = data
    second_target = 0.3 * y + 1.0
    before = {k: v.clone() for k, v in reg.module_.state_dict().items()}
    pipe = make_pipeline(StructureGraphTransformer(), CGCNNEmbedder(reg), Ridge())
    pipe.fit(structures, second_target)
    assert np.isfinite(pipe.predict(structures)).all()
    twin = clone(pipe)
    assert twin[1].estimator is reg  # frozen: clone shares the fitted network
    search = GridSearchCV(pipe, {"ridge__alpha": [0.1, 10.0]}, cv=KFold(2)).fit(
        structures, second_target)
    assert search.best_estimator_[1].estimator is reg
    assert all(torch.equal(before[k], v) for k, v in reg.module_.state_dict().items())
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(restored.predict(structures), pipe.predict(structures))


def test_fitted_pipeline_and_ensemble(data):
    structures, graphs, y, _ = data
    pipe = make_cgcnn_pipeline(**TINY).fit(structures, y)
    from_pipe = CGCNNEmbedder(pipe).fit(structures).transform(structures)
    np.testing.assert_allclose(from_pipe, pipe[-1].predict_crystal_features(
        pipe[0].transform(structures)))
    ens = CGCNNEnsembleRegressor(n_estimators=2, **TINY).fit(graphs, y)
    out = CGCNNEmbedder(ens).fit(graphs).transform(graphs)
    assert out.shape == (len(graphs), 16)
    np.testing.assert_allclose(out[:, 8:], _pooled_by_hand(ens.estimators_[1], graphs),
                               rtol=1e-5, atol=1e-6)


def test_unfitted_or_foreign_estimators_are_refused(data):
    _, graphs, _, _ = data
    with pytest.raises(NotFittedError, match="not fitted"):
        CGCNNEmbedder(CGCNNRegressor()).fit(graphs)
    with pytest.raises(TypeError, match="needs a fitted CGCNNRegressor"):
        CGCNNEmbedder(Ridge()).fit(graphs)
    with pytest.raises(NotFittedError):
        CGCNNEmbedder(data[3]).transform(graphs)


def test_skipped_structures_give_nan_rows(data):
    structures, _, _, reg = data
    from pymatgen.core import Lattice, Structure

    far = Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]])  # no neighbour within 8 Å
    transformer = StructureGraphTransformer(on_error="skip").fit()
    graphs = transformer.transform([structures[0], far, structures[1]])
    out = CGCNNEmbedder(reg).fit(graphs).transform(graphs)
    assert out.shape == (3, 8)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


@pytest.mark.parametrize("check_name", [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_transformers_unfitted", "check_mixin_order"])
def test_api_checks(check_name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(estimator_checks, check_name)("CGCNNEmbedder", CGCNNEmbedder())
