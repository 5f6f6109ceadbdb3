"""The pretrained models shipped in skcgcnn/pretrained, and fine-tuning from them by name."""
from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

import skcgcnn
from skcgcnn import CGCNNRegressor, StructureGraphTransformer, save_model
from skcgcnn import pretrained as pretrained_module
from skcgcnn.datasets import load_cgcnn_folder
from skcgcnn.pretrained import (PretrainedError, finetune_pipeline, list_pretrained,
                                load_pretrained, pretrained_path, pretrained_split)

from ._shared import SAMPLE500, load_structures, needs_shared

SHIPPED = ("mp-formation-energy", "mp-band-gap")


# -- what ships -------------------------------------------------------------------------
def test_the_shipped_models_are_listed_and_small():
    assert set(SHIPPED) <= set(list_pretrained())
    assert skcgcnn.list_pretrained() == list_pretrained()
    table = list_pretrained(details=True)
    for name in SHIPPED:
        path = pretrained_path(name)
        assert path.stat().st_size <= 2 * 1024 * 1024
        torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no pickle
        assert table.loc[name, "training_crystals"] == 22043
        assert 0 < table.loc[name, "test_mae"]


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_records_data_split_recipe_and_metrics(name):
    pipe = load_pretrained(name)
    assert isinstance(pipe, Pipeline) and isinstance(pipe[-1], CGCNNRegressor)
    card = pipe[-1].model_card_
    assert card["name"] == name
    assert len(card["dataset"]["files"]["cifs.tar.gz"]) == 64
    split = pretrained_split(name)
    counts = split["split"].value_counts().to_dict()
    assert counts == {"train": 22043, "val": 7347, "test": 7347}
    assert card["split"]["n_train"] == 22043
    assert card["training"]["n_crystals"] == 22043  # trained on the training rows only
    from skcgcnn.estimators._card import ids_digest

    assert card["training"]["ids_digest"] == ids_digest(
        split.loc[split["split"] == "train", "id"])
    assert card["split"]["test_ids_digest"] == ids_digest(
        split.loc[split["split"] == "test", "id"])
    assert {"mae", "rmse", "r2"} <= set(card["test_metrics"])
    assert card["versions"]["torch"]


@needs_shared
@pytest.mark.parametrize("name", SHIPPED)
def test_pretrained_models_reproduce_their_recorded_test_predictions(name):
    pipe = load_pretrained(name)
    recorded = pipe[-1].model_card_["recorded_predictions"]
    assert len(recorded["ids"]) >= 50
    df = load_cgcnn_folder(SAMPLE500, cache=False)
    test_ids = set(pretrained_split(name).query("split == 'test'")["id"])
    assert set(recorded["ids"]) <= test_ids  # recorded on rows the model never saw
    pred = np.asarray(pipe.predict(df.loc[recorded["ids"], "structure"]))
    np.testing.assert_allclose(pred.reshape(-1), recorded["predictions"], rtol=0, atol=1e-5)


@needs_shared
def test_formation_energy_model_is_accurate_on_its_test_rows():
    df = load_cgcnn_folder(SAMPLE500, cache=False)
    test_ids = set(pretrained_split("mp-formation-energy").query("split == 'test'")["id"])
    rows = df[[str(i) in test_ids for i in df.index]]
    pred = load_pretrained("mp-formation-energy").predict(rows["structure"]).reshape(-1)
    mae = float(np.mean(np.abs(pred - rows["target"].to_numpy())))
    assert mae < 0.08  # eV/atom; the mean predictor is about 1.0 on these rows


# -- the registry's behaviour on a registry of its own -----------------------------------
@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry in tmp_path holding one tiny model 'tiny' (sample-500, 2 epochs)."""
    ids, structures, y = load_structures(str(SAMPLE500), 60)
    pipe = Pipeline([("graph", StructureGraphTransformer()),
                     ("cgcnn", CGCNNRegressor(max_epochs=2, batch_size=16, verbose=0,
                                              module__atom_fea_len=8, module__n_conv=1,
                                              module__h_fea_len=8, random_state=0))])
    pipe.fit(structures, np.asarray(y))
    save_model(pipe, tmp_path / "tiny.pt")
    with gzip.open(tmp_path / "tiny.split.csv.gz", "wt") as fh:
        fh.write("id,split\n" + "".join(f"{i},train\n" for i in ids))
    index = {"models": {"tiny": {
        "file": "tiny.pt", "sha256": pretrained_module._sha256(tmp_path / "tiny.pt"),
        "split_file": "tiny.split.csv.gz", "target": "E_form", "unit": "eV/atom",
        "training_crystals": 60, "test_metrics": {"mae": 0.5}}}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained_module, "HERE", tmp_path)
    monkeypatch.setattr(pretrained_module, "INDEX", tmp_path / "index.json")
    pretrained_module._index.cache_clear()
    yield tmp_path, structures, np.asarray(y)
    pretrained_module._index.cache_clear()


@needs_shared
def test_unknown_name_says_which_ship(registry):
    with pytest.raises(PretrainedError, match=r"no pretrained model named 'nope'.*'tiny'"):
        load_pretrained("nope")
    assert list_pretrained() == ["tiny"]
    assert pretrained_split("tiny")["split"].eq("train").all()


@needs_shared
def test_a_damaged_file_is_refused(registry):
    root, _, _ = registry
    with open(root / "tiny.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PretrainedError, match="does not match the SHA-256"):
        load_pretrained("tiny")


@needs_shared
def test_init_by_name_fine_tunes_and_learns(registry):
    _, structures, y = registry
    gap = np.clip(-y, 0, None)  # a new target, learnable from the formation energy
    pipe = finetune_pipeline("tiny", max_epochs=12, batch_size=16, lr_schedule=None,
                             lr=0.01, verbose=0, random_state=0)
    pipe.fit(structures, gap)
    est = pipe[-1]
    loss = est.history[:, "train_loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < 0.7 * loss[0]
    assert est.module_kwargs_["atom_fea_len"] == 8  # the pretrained body's shape
    tiny = load_pretrained("tiny")[-1]
    # the name resolves inside the estimator too, with a Pipeline of one's own
    own = Pipeline([("graph", StructureGraphTransformer()),
                    ("cgcnn", CGCNNRegressor(init="tiny", max_epochs=1, verbose=0,
                                             freeze="conv"))])
    own.fit(structures, gap)
    for key, value in tiny.module_.state_dict().items():
        if key.startswith(("embedding.", "convs.")):
            assert torch.equal(own[-1].module_.state_dict()[key], value), key


@needs_shared
def test_init_by_name_refuses_other_graph_settings(registry):
    _, structures, y = registry
    X = StructureGraphTransformer(radius=6.0).fit_transform(structures)
    with pytest.raises(ValueError, match="cannot be used to fine-tune"):
        CGCNNRegressor(init="tiny", max_epochs=1, verbose=0).fit(X, y)


@needs_shared
def test_init_neither_file_nor_name_is_a_clear_error(registry, tmp_path):
    _, structures, y = registry
    X = StructureGraphTransformer().fit_transform(structures[:20])
    with pytest.raises(FileNotFoundError, match="neither a file nor the name.*'tiny'"):
        CGCNNRegressor(init=str(tmp_path / "missing.pt"), max_epochs=1).fit(X, y[:20])


@needs_shared
def test_predict_command_takes_a_pretrained_name(tmp_path, capsys):
    from skcgcnn.cli import main

    recorded = load_pretrained("mp-formation-energy")[-1].model_card_["recorded_predictions"]
    folder = tmp_path / "cifs"
    folder.mkdir()
    for ident in recorded["ids"][:5]:
        shutil.copy(SAMPLE500 / f"{ident}.cif", folder / f"{ident}.cif")
    out = tmp_path / "pred.csv"
    assert main(["predict", "mp-formation-energy", str(folder), "--output", str(out),
                 "-q"]) == 0
    rows = {line.split(",")[0]: float(line.split(",")[-1])
            for line in out.read_text().splitlines() if line}
    for ident, value in zip(recorded["ids"][:5], recorded["predictions"][:5]):
        assert abs(rows[ident] - value) < 1e-5
