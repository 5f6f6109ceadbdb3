"""Fine-tuning a fitted model: CGCNNRegressor(init=..., freeze=..., init_lr_factor=...)."""
from __future__ import annotations

import csv
import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from skcgcnn import CGCNNRegressor, StructureGraphTransformer, save_model

from ._shared import MP, SAMPLE500, load_structures, needs_shared

pytestmark = needs_shared

TINY = dict(module__atom_fea_len=8, module__n_conv=2, module__h_fea_len=16, batch_size=16,
            verbose=0)
N = 80


class Snapshot(Callback):
    """The module's state when training begins (before the first step)."""

    def on_train_begin(self, net, **kwargs):
        self.state_ = _weights(net)


def _weights(net):
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def _part(state, prefixes):
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _band_gaps(ids):
    with open(MP / "id_prop_multi.csv", newline="") as fh:
        gaps = {row[0].strip(): float(row[2]) for row in csv.reader(fh) if row}
    return np.asarray([gaps[i] for i in ids])


@pytest.fixture(scope="module")
def data():
    """80 crystals of sample-500: structures, graphs, formation energies, band gaps."""
    ids, structures, y = load_structures(str(SAMPLE500), N)
    X = StructureGraphTransformer().fit_transform(structures)
    return structures, X, np.asarray(y), _band_gaps(ids)


@pytest.fixture(scope="module")
def pretrained(data):
    _, X, y, _ = data
    return CGCNNRegressor(max_epochs=3, random_state=0, **TINY).fit(X, y)


def _finetuned(pretrained, **params):
    snap = Snapshot()
    kwargs = {**TINY, "module__atom_fea_len": 4, "module__n_conv": 1,  # init's win
              "max_epochs": 6, "random_state": 1, "callbacks": [snap], **params}
    return CGCNNRegressor(init=pretrained, **kwargs), snap


# -- (a) the pretrained body, a fresh head, and learning ---------------------------------
def test_finetune_starts_from_pretrained_body_and_learns(data, pretrained):
    _, X, _, gap = data
    net, snap = _finetuned(pretrained, lr_schedule=None, lr=0.005)
    net.fit(X, np.stack([gap, gap ** 0.5], axis=1))  # two targets: another head shape
    before, trained = snap.state_, _weights(pretrained)
    body = tuple(k for k in trained if not k.startswith("fc_out."))
    assert _equal(_part(before, body), _part(trained, body))
    assert before["fc_out.weight"].shape == (2, 16)
    assert trained["fc_out.weight"].shape == (1, 16)
    assert net.module_kwargs_["atom_fea_len"] == 8 and net.module_kwargs_["n_conv"] == 2
    assert len(net.module_.convs) == 2 and net.module_kwargs_["n_out"] == 2
    losses = net.history[:, "train_loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert np.isfinite(net.predict(X)).all() and net.predict(X).shape == (N, 2)


def test_init_lr_factor_gives_body_its_own_rate(data, pretrained):
    _, X, y, _ = data
    net, _ = _finetuned(pretrained, lr_schedule=None, lr=0.004, init_lr_factor=0.25,
                        max_epochs=1)
    net.fit(X, -y)
    head = {id(p) for p in net.module_.fc_out.parameters()}
    rates = {("head" if id(p) in head else "body"): g["lr"]
             for g in net.optimizer_.param_groups for p in g["params"]}
    assert rates == {"head": 0.004, "body": 0.001}
    # the one-cycle schedule peaks at lr for the head, lr * init_lr_factor for the body
    net, _ = _finetuned(pretrained, lr=0.004, init_lr_factor=0.25, max_epochs=1)
    net.fit(X, -y)
    peaks = sorted(g["max_lr"] for g in net.optimizer_.param_groups)
    assert peaks == pytest.approx([0.001, 0.004])


# -- (b) freeze ---------------------------------------------------------------------------
def test_freeze_conv_keeps_embedding_convs_and_running_stats(data, pretrained):
    _, X, y, _ = data
    net, snap = _finetuned(pretrained, freeze="conv")
    net.fit(X, 2 * y + 1)
    after, trained = _weights(net), _weights(pretrained)
    frozen = ("embedding.", "convs.")
    assert any("running_mean" in k for k in _part(after, frozen))
    assert _equal(_part(after, frozen), _part(trained, frozen))  # bit for bit, BN stats too
    assert not torch.equal(after["fc_out.weight"], snap.state_["fc_out.weight"])
    assert not torch.equal(after["conv_to_fc.weight"], trained["conv_to_fc.weight"])
    assert not any(p.requires_grad for p in net.module_.convs.parameters())
    optimised = {id(p) for g in net.optimizer_.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in net.module_.embedding.parameters()}


def test_freeze_embedding_keeps_only_the_embedding(data, pretrained):
    _, X, y, _ = data
    net, _ = _finetuned(pretrained, freeze="embedding")
    net.fit(X, 2 * y + 1)
    after, trained = _weights(net), _weights(pretrained)
    assert _equal(_part(after, ("embedding.",)), _part(trained, ("embedding.",)))
    for key in ("convs.0.fc_full.weight", "convs.0.bn2.running_mean", "convs.1.bn1.weight"):
        assert not torch.equal(after[key], trained[key]), key


def test_bad_freeze_and_freeze_without_init_are_refused(data, pretrained):
    _, X, y, _ = data
    allowed = r"freeze='all'\): use one of \[None, 'embedding', 'conv'\]"
    with pytest.raises(ValueError, match=allowed):
        CGCNNRegressor(init=pretrained, freeze="all", **TINY).fit(X, y)
    with pytest.raises(ValueError, match="give the fitted model to start from as init"):
        CGCNNRegressor(freeze="conv", **TINY).fit(X, y)
    with pytest.raises(ValueError, match=r"init_lr_factor=-1"):
        CGCNNRegressor(init=pretrained, init_lr_factor=-1, **TINY).fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        CGCNNRegressor(init=CGCNNRegressor(), **TINY).fit(X, y)


# -- (c) graphs built otherwise -----------------------------------------------------------
@pytest.mark.parametrize("settings, differs", [
    ({"radius": 6.0}, "radius: X 6.0, model 8.0"),
    ({"max_num_nbr": 8}, "max_num_nbr: X 8, model 12")])
def test_other_graph_settings_are_refused(data, pretrained, settings, differs):
    structures, _, y, _ = data
    X = StructureGraphTransformer(**settings).fit_transform(structures[:20])
    net, _ = _finetuned(pretrained)
    with pytest.raises(ValueError) as info:
        net.fit(X, y[:20])
    message = str(info.value)
    assert message.startswith("init: X cannot be used to fine-tune the pretrained model")
    assert differs in message
    assert "StructureGraphTransformer(radius=8.0, max_num_nbr=12" in message
    assert "StructureGraphTransformer(**pretrained.graph_params_)" in message
    assert not hasattr(net, "module_")


# -- (d) init from a saved file -----------------------------------------------------------
def test_init_from_a_saved_model_file(data, pretrained, tmp_path):
    _, X, y, _ = data
    path = tmp_path / "pretrained.pt"
    save_model(pretrained, path)
    net, snap = _finetuned(str(path), max_epochs=2)
    net.fit(X, y)
    trained = _weights(pretrained)
    body = tuple(k for k in trained if not k.startswith("fc_out."))
    assert _equal(_part(snap.state_, body), _part(trained, body))
    assert np.isfinite(net.predict(X)).all()
    again = pickle.loads(pickle.dumps(net))  # a fitted fine-tuned model pickles
    np.testing.assert_allclose(again.predict(X), net.predict(X))


# -- (e) the scikit-learn contract --------------------------------------------------------
def test_params_clone_and_grid_search(data, pretrained):
    _, X, y, _ = data
    net = CGCNNRegressor(init=pretrained, freeze="embedding", init_lr_factor=0.5, **TINY)
    params = net.get_params(deep=False)
    assert params["init"] is pretrained and params["freeze"] == "embedding"
    assert params["init_lr_factor"] == 0.5
    copy = clone(net)
    assert copy.init is pretrained and copy.__sklearn_is_fitted__() is False
    assert pretrained.__sklearn_is_fitted__()  # a fitted init is shared, not cloned
    assert copy.set_params(freeze="conv", init_lr_factor=0.1).freeze == "conv"
    assert net.freeze == "embedding"
    search = GridSearchCV(CGCNNRegressor(init=pretrained, max_epochs=1, **TINY),
                          {"freeze": [None, "conv"]}, cv=2,
                          scoring="neg_mean_absolute_error").fit(X, y)
    assert search.best_estimator_.init is pretrained
    assert search.best_params_["freeze"] in (None, "conv")
