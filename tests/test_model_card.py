"""Model cards in the files of save_model, shown by load_model."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from skcgcnn import (CGCNNEnsembleRegressor, StructureGraphTransformer, __version__,
                     load_model, save_model)
from skcgcnn.estimators import format_model_card, make_cgcnn_pipeline
from skcgcnn.estimators._card import ids_digest

from .test_graph import bcc_iron, perovskite, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=2, random_state=0)


@pytest.fixture(scope="module")
def data():
    structures = [rock_salt(5.3), bcc_iron(2.8), perovskite(3.8), rock_salt(5.8),
                  bcc_iron(3.0)]
    return structures, np.array([-2.0, 0.1, -3.0, -1.8, 0.0])


def test_card_is_saved_and_shown(data, tmp_path, caplog):
    structures, y = data
    pipe = make_cgcnn_pipeline(**TINY).fit(structures, y)
    user = {"target_names": ["E_form"], "target_units": ["eV/atom"],
            "test_metrics": {"mae": 0.123}}
    save_model(pipe, tmp_path / "m.pt", card=user)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)["card"]
    with caplog.at_level(logging.INFO, logger="skcgcnn.estimators._persistence"):
        load_model(tmp_path / "m.pt")
    assert "CGCNNRegressor of E_form" in caplog.text and "test: mae 0.123" in caplog.text
    assert "target_units" not in caplog.text  # the whole card only at DEBUG
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="skcgcnn.estimators._persistence"):
        loaded = load_model(tmp_path / "m.pt")
    card = loaded[-1].model_card_
    assert card == raw
    assert card["estimator"] == "CGCNNRegressor"
    assert card["graph_params"]["radius"] == 8.0 and card["graph_params"]["max_num_nbr"] == 12
    assert card["graph_params"]["atom_features"] == "cgcnn"
    assert len(card["graph_params"]["atom_features_digest"]) == 32
    # the training crystals: the transformer's ids are the input positions
    assert card["training"]["n_crystals"] == 5
    assert card["training"]["ids_digest"] == ids_digest(range(5))
    assert card["training"]["epochs"] == 2
    assert card["training"]["final_train_loss"] == pytest.approx(
        pipe[-1].history[-1, "train_loss"])
    assert card["recipe"]["max_epochs"] == 2 and card["recipe"]["module__n_conv"] == 1
    assert card["versions"]["skcgcnn"] == __version__
    assert card["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert card["target_units"] == ["eV/atom"] and card["test_metrics"] == {"mae": 0.123}
    assert "target_units: ['eV/atom']" in caplog.text
    assert "  radius: 8.0" in format_model_card(card)


def test_ids_digest_tells_training_sets_apart():
    assert ids_digest(["mp-1", "mp-2"]) == ids_digest(np.array(["mp-1", "mp-2"], dtype=object))
    assert ids_digest(["mp-1", "mp-2"]) != ids_digest(["mp-2", "mp-1"])
    assert ids_digest(["mp-1", "mp-2"]) != ids_digest(["mp-1mp-2"])


def test_ensemble_card_lists_members(data, tmp_path):
    structures, y = data
    graphs = StructureGraphTransformer().fit_transform(structures)
    ens = CGCNNEnsembleRegressor(n_estimators=2, bootstrap=True, **TINY).fit(graphs, y)
    save_model(ens, tmp_path / "e.pt")
    card = load_model(tmp_path / "e.pt").model_card_
    assert card["estimator"] == "CGCNNEnsembleRegressor" and card["n_members"] == 2
    # bootstrap samples leave rows out: each member's own training set
    counts = [m["n_crystals"] for m in card["members_training"]]
    assert counts == [m.n_train_ for m in ens.estimators_]
    assert all(1 <= n <= 5 for n in counts) and min(counts) < 5


def test_loaded_model_refuses_graphs_built_otherwise(data, tmp_path):
    structures, y = data
    pipe = make_cgcnn_pipeline(**TINY).fit(structures, y)
    save_model(pipe, tmp_path / "m.pt")
    est = load_model(tmp_path / "m.pt")[-1]
    other = StructureGraphTransformer(max_num_nbr=8).fit_transform(structures)
    with pytest.raises(ValueError, match="max_num_nbr: X 8, model 12"):
        est.predict(other)
