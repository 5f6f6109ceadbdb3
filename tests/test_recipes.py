"""The training recipe as estimator parameters, sample weights, skorch's save/load_params,
and the scikit-learn / skorch habits of issue 15."""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import sklearn
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback, EarlyStopping, LRScheduler

from skcgcnn import CGCNNClassifier, CGCNNRegressor, StructureGraphTransformer
from skcgcnn.estimators import ORIGINAL_CLASSIFIER_RECIPE, ORIGINAL_RECIPE, make_cgcnn_pipeline

from ._shared import SAMPLE500, load_structures, needs_shared

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=16, batch_size=16)


@pytest.fixture(scope="module")
def sample():
    """60 real MP crystals of sample-500, their graphs and formation energies."""
    ids, structures, y = load_structures(str(SAMPLE500), 60)
    return structures, StructureGraphTransformer().fit_transform(structures), np.asarray(y)


def _batch_lrs(net):
    return [batch["event_lr"] for epoch in net.history for batch in epoch["batches"]
            if "event_lr" in batch]  # training batches (validation ones have none)


def _weights(net):
    return {k: v.clone() for k, v in net.module_.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the original recipe -----------------------------------------------------------------
# What the estimators predicted with their defaults before the default recipe changed
# (main at bf6f586, the original main.py recipe: SGD 0.01, momentum 0.9, batch 256,
# MSE): fitted for 5 epochs, random_state=0, on the `sample` fixture; 1 and 2 torch
# threads agree to 1e-5.  ORIGINAL_RECIPE must keep giving them.
OLD_DEFAULT_REGRESSION = [0.187091, 0.119099, -0.003967, 0.063895, 0.134461, 0.108398]
OLD_DEFAULT_PROBA = [0.382553, 0.386616, 0.409905, 0.387606, 0.393217, 0.415702]


def test_original_recipe_spells_out_main_py():
    orig = CGCNNRegressor(**ORIGINAL_RECIPE).get_params()
    assert orig["optimizer"] is torch.optim.SGD and orig["optimizer__momentum"] == 0.9
    assert orig["optimizer__weight_decay"] == 0.0 and orig["lr"] == 0.01
    assert orig["batch_size"] == 256 and orig["max_epochs"] == 30
    assert orig["lr_schedule"] == "multistep" and orig["loss"] == "squared_error"
    assert ORIGINAL_RECIPE == {**ORIGINAL_CLASSIFIER_RECIPE, "loss": "squared_error"}


def test_the_defaults_are_the_default_recipe():
    from skcgcnn.estimators import DEFAULT_CLASSIFIER_RECIPE, DEFAULT_RECIPE

    for est, recipe in ((CGCNNRegressor(), DEFAULT_RECIPE),
                        (CGCNNClassifier(), DEFAULT_CLASSIFIER_RECIPE)):
        params = est.get_params()
        assert {key: params[key] for key in recipe} == recipe
    assert DEFAULT_RECIPE == {**DEFAULT_CLASSIFIER_RECIPE, "loss": "absolute_error"}
    assert (DEFAULT_RECIPE["optimizer"], DEFAULT_RECIPE["lr_schedule"]) == ("adamw",
                                                                          "onecycle")


@needs_shared
def test_default_recipe_builds_adamw_with_a_one_cycle_per_batch(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=10, random_state=0, **TINY).fit(graphs, y)
    assert isinstance(reg.optimizer_, torch.optim.AdamW)
    assert reg.optimizer_.param_groups[0]["weight_decay"] == 0.01
    assert "momentum" not in reg.optimizer_.defaults
    assert isinstance(reg.criterion_, torch.nn.L1Loss)
    lrs = _batch_lrs(reg)
    assert len(lrs) == 10 * math.ceil(60 / 16) and max(lrs) <= 0.01 + 1e-12
    peak = int(np.argmax(lrs))
    assert 0 < peak <= 0.1 * len(lrs)  # warm-up over the first tenth of the steps
    assert lrs[0] < 0.1 * 0.01 and lrs[-1] < 1e-5  # from lr / 25 up, and down to ~0


@needs_shared
def test_original_recipe_reproduces_the_old_defaults_predictions(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(**{**ORIGINAL_RECIPE, "max_epochs": 5}, random_state=0)
    reg.fit(graphs, y)
    np.testing.assert_allclose(reg.predict(graphs[:6]).ravel(), OLD_DEFAULT_REGRESSION,
                               atol=1e-4)
    clf = CGCNNClassifier(**{**ORIGINAL_CLASSIFIER_RECIPE, "max_epochs": 5}, random_state=0)
    clf.fit(graphs, (y < -1).astype(int))
    np.testing.assert_allclose(clf.predict_proba(graphs[:6])[:, 1], OLD_DEFAULT_PROBA,
                               atol=1e-4)
    assert isinstance(reg.optimizer_, torch.optim.SGD)
    assert isinstance(reg.criterion_, torch.nn.MSELoss)
    assert reg.optimizer_.param_groups[0]["momentum"] == 0.9


# -- learning-rate schedules ---------------------------------------------------------------
@needs_shared
def test_onecycle_is_torchs_one_cycle_per_batch(sample):
    _, graphs, y = sample  # 60 crystals, batch 16: 4 steps an epoch, 12 in all
    reg = CGCNNRegressor(max_epochs=3, lr=0.01, lr_schedule="onecycle", warmup_fraction=0.25,
                         optimizer="adamw", random_state=0, **TINY).fit(graphs, y)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01), max_lr=0.01,
        total_steps=12, pct_start=0.25)
    expected = []
    for _ in range(12):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    np.testing.assert_allclose(_batch_lrs(reg), expected, rtol=1e-12)
    assert max(_batch_lrs(reg)) == pytest.approx(0.01)


@needs_shared
def test_cosine_warms_up_then_decays_per_batch(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=3, lr=0.01, lr_schedule="cosine", warmup_fraction=0.25,
                         random_state=0, **TINY).fit(graphs, y)
    # 12 steps, 3 of warm-up: (t + 1) / 4, then 0.5 (1 + cos(pi (t - 3) / 9))
    expected = [0.01 * (t + 1) / 4 if t < 3 else
                0.01 * 0.5 * (1 + math.cos(math.pi * (t - 3) / 9)) for t in range(12)]
    np.testing.assert_allclose(_batch_lrs(reg), expected, rtol=1e-12)


@needs_shared
def test_per_batch_schedule_counts_the_training_rows_after_the_split(sample):
    _, graphs, y = sample  # 48 training rows after a 20 % split: 3 steps an epoch
    reg = CGCNNRegressor(max_epochs=2, lr_schedule="cosine", early_stopping=True,
                         validation_fraction=0.2, random_state=0, **TINY).fit(graphs, y)
    assert reg.callbacks_[[n for n, _ in reg.callbacks_].index("lr_scheduler")][1] \
        .total_steps_ == 6
    assert len(_batch_lrs(reg)) == 6


@needs_shared
def test_schedule_none_keeps_the_rate_and_a_user_scheduler_works_alone(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=2, lr=0.02, lr_schedule=None, random_state=0, **TINY)
    reg.fit(graphs[:20], y[:20])
    assert reg.optimizer_.param_groups[0]["lr"] == 0.02
    assert "lr_scheduler" not in dict(reg.callbacks_)
    mine = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    reg = CGCNNRegressor(max_epochs=2, lr=0.02, lr_schedule=None, callbacks=[("mine", mine)],
                         **TINY).fit(graphs[:20], y[:20])
    assert reg.optimizer_.param_groups[0]["lr"] == pytest.approx(0.005)


@needs_shared
def test_a_user_scheduler_beside_the_built_in_one_is_refused(sample):
    _, graphs, y = sample
    mine = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1)
    reg = CGCNNRegressor(max_epochs=1, callbacks=[("mine", mine)], **TINY)
    with pytest.raises(ValueError, match=re.escape(
            "callback 'mine' is an LRScheduler, and CGCNNRegressor already schedules the "
            "learning rate (lr_schedule='onecycle'): both would change it. Pass "
            "lr_schedule=None")):
        reg.fit(graphs[:20], y[:20])


@pytest.mark.parametrize("params, message", [
    ({"lr_schedule": "linear"}, "lr_schedule='linear'): use one of ['multistep', "
                                "'onecycle', 'cosine'] or None"),
    ({"warmup_fraction": 1.0}, "warmup_fraction=1.0): give a share"),
    ({"validation_fraction": 0.0}, "validation_fraction=0.0): give a share"),
    ({"n_iter_no_change": 0}, "n_iter_no_change=0): give a whole number"),
    ({"loss": "mse"}, "CGCNNRegressor(loss='mse'): use one of ['squared_error', "
                      "'absolute_error', 'huber', 'gaussian_nll']"),
])
def test_bad_recipe_parameters_are_named_at_fit(params, message):
    reg = CGCNNRegressor(**params)  # __init__ stores them unchecked
    with pytest.raises(ValueError, match=re.escape(message)):
        reg.initialize()


# -- losses ----------------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("loss, criterion", [("squared_error", torch.nn.MSELoss),
                                             ("absolute_error", torch.nn.L1Loss),
                                             ("huber", torch.nn.HuberLoss)])
def test_loss_on_standardised_targets(sample, loss, criterion):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=1, loss=loss, **TINY).fit(graphs[:20], y[:20])
    assert type(reg.criterion_) is criterion
    pred, true = torch.tensor([[0.0], [3.0]]), np.array([y[:20].mean(), y[:20].mean()])
    # the prediction 3 is three standard deviations off (standardised units)
    expected = {"squared_error": 4.5, "absolute_error": 1.5, "huber": 1.25}[loss]
    assert reg.get_loss(pred, true).item() == pytest.approx(expected, rel=1e-5)


def test_loss_and_criterion_together_are_refused():
    reg = CGCNNRegressor(criterion=torch.nn.L1Loss, loss="huber")
    with pytest.raises(ValueError, match="got both criterion=.* and loss='huber'; give one"):
        reg.initialize()


# -- early stopping --------------------------------------------------------------------------
class Snapshots(Callback):
    """The module's weights after every epoch."""

    def initialize(self):
        self.weights_ = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.weights_.append(copy.deepcopy(net.module_.state_dict()))


@needs_shared
def test_early_stopping_stops_on_a_plateau_and_restores_the_best_epoch(sample):
    _, graphs, y = sample
    snaps = Snapshots()
    reg = CGCNNRegressor(max_epochs=40, optimizer="adam", lr=0.01, early_stopping=True,
                         validation_fraction=0.3, n_iter_no_change=3, random_state=0,
                         callbacks=[("snaps", snaps)], **TINY).fit(graphs, y)
    valid = np.asarray(reg.history[:, "valid_loss"])
    assert len(valid) < 40  # stopped early
    best = int(np.argmin(valid))
    assert len(valid) == best + 1 + 3  # three epochs without improvement after the best
    assert _same_weights(_weights(reg), snaps.weights_[best])
    assert not _same_weights(_weights(reg), snaps.weights_[-1])
    # the predictions are those of the best epoch's weights
    again = CGCNNRegressor(max_epochs=40, optimizer="adam", lr=0.01, early_stopping=True,
                           validation_fraction=0.3, n_iter_no_change=3, random_state=0,
                           **TINY).fit(graphs, y)
    np.testing.assert_array_equal(again.predict(graphs), reg.predict(graphs))


@needs_shared
def test_training_checkpoint_saves_the_epoch_early_stopping_ended(sample, tmp_path):
    # the built-in EarlyStopping runs before the user's callbacks and ends training in
    # its on_epoch_end: the checkpoint must still hold that last, complete epoch
    from skcgcnn.estimators import TrainingCheckpoint, read_training_state

    _, graphs, y = sample
    cp = TrainingCheckpoint(dirname=tmp_path, every=1000)
    reg = CGCNNRegressor(max_epochs=40, optimizer="adam", lr=0.01, early_stopping=True,
                         validation_fraction=0.3, n_iter_no_change=2, random_state=0,
                         callbacks=[("cp", cp)], **TINY).fit(graphs, y)
    assert len(reg.history) < 40
    assert read_training_state(cp.path_)["epoch"] == len(reg.history)


@needs_shared
def test_early_stopping_classifier_holds_out_a_stratified_share(sample):
    _, graphs, y = sample
    labels = (y < np.median(y)).astype(int)
    clf = CGCNNClassifier(max_epochs=2, early_stopping=True, validation_fraction=0.2,
                          random_state=0, **TINY).fit(graphs, labels)
    assert np.isfinite(clf.history[:, "valid_loss"]).all()
    assert clf.history[0, "train_batch_count"] == 3  # 48 training rows, batch 16


@needs_shared
def test_early_stopping_callback_without_validation_is_a_clear_error(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=2, callbacks=[("stop", EarlyStopping())], **TINY)
    with pytest.raises(ValueError, match=re.escape(
            "callback 'stop' (EarlyStopping) watches 'valid_loss', but CGCNNRegressor has no "
            "validation set (train_split=None): pass early_stopping=True")):
        reg.fit(graphs[:20], y[:20])


@needs_shared
def test_recipe_parameters_in_a_grid_search(sample):
    _, graphs, y = sample
    search = GridSearchCV(CGCNNRegressor(max_epochs=1, **TINY),
                          {"lr_schedule": ["multistep", "onecycle"],
                           "loss": ["squared_error", "huber"]},
                          cv=2, scoring="neg_mean_absolute_error").fit(graphs, y)
    assert set(search.best_params_) == {"lr_schedule", "loss"}


@needs_shared
def test_new_options_train_with_a_finite_falling_loss():
    ids, structures, y = load_structures(str(SAMPLE500), 100)
    graphs = StructureGraphTransformer().fit_transform(structures)
    reg = CGCNNRegressor(max_epochs=12, batch_size=16, optimizer="adamw", lr=0.003,
                         optimizer__weight_decay=0.01, lr_schedule="onecycle", loss="huber",
                         early_stopping=True, n_iter_no_change=5, random_state=0)
    reg.fit(graphs, np.asarray(y))
    losses = np.asarray(reg.history[:, "train_loss"])
    assert np.isfinite(losses).all() and np.isfinite(reg.history[:, "valid_loss"]).all()
    assert losses[-1] < 0.6 * losses[0], losses
    assert isinstance(reg.optimizer_, torch.optim.AdamW)
    assert reg.optimizer_.param_groups[0]["weight_decay"] == 0.01


# -- sample weights ----------------------------------------------------------------------------
@needs_shared
def test_unit_weights_are_the_unweighted_fit_exactly(sample):
    _, graphs, y = sample
    plain = CGCNNRegressor(max_epochs=2, random_state=0, **TINY).fit(graphs, y)
    ones = CGCNNRegressor(max_epochs=2, random_state=0, **TINY).fit(
        graphs, y, sample_weight=np.full(len(y), 3.0))
    assert _same_weights(_weights(plain), _weights(ones))


@needs_shared
def test_zero_weights_equal_dropping_the_rows(sample):
    _, graphs, y = sample
    w = np.where(np.arange(len(y)) % 4 == 0, 0.0, 1.0 + np.arange(len(y)) % 3)
    keep = np.flatnonzero(w > 0)
    weighted = CGCNNRegressor(max_epochs=2, random_state=0, **TINY).fit(graphs, y,
                                                                       sample_weight=w)
    dropped = CGCNNRegressor(max_epochs=2, random_state=0, **TINY).fit(
        graphs[keep], y[keep], sample_weight=w[keep])
    np.testing.assert_allclose(weighted.predict(graphs), dropped.predict(graphs), rtol=1e-6)
    unweighted = CGCNNRegressor(max_epochs=2, random_state=0, **TINY).fit(graphs[keep],
                                                                         y[keep])
    assert not _same_weights(_weights(weighted), _weights(unweighted))


@needs_shared
def test_weighted_loss_is_scaled_by_the_mean_weight(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=1, loss="squared_error", **TINY).fit(graphs[:4], y[:4])
    tensors = next(iter(reg.get_iterator(reg.get_dataset(graphs[:2], y[:2]))))[0]
    crystal = tensors["crystal_idx"]
    pred = torch.tensor([[0.0], [1.0]])
    true = reg.target_scaler_.mean_ + reg.target_scaler_.scale_ * np.array([[1.0], [3.0]])
    X = dict(tensors, sample_weight=torch.tensor([0.5, 1.5])[crystal])
    # squared errors 1 and 4, weights 0.5 and 1.5 (mean 1): (0.5 + 6) / 2
    assert reg.get_loss(pred, true, X=X).item() == pytest.approx(3.25, rel=1e-6)


@needs_shared
def test_sample_weight_through_a_pipeline_and_for_the_classifier(sample):
    structures, graphs, y = sample
    w = np.where(np.arange(len(y)) < 30, 2.0, 0.5)
    pipe = make_cgcnn_pipeline(max_epochs=1, random_state=0, **TINY)
    pipe.fit(structures, y, cgcnn__sample_weight=w)
    direct = CGCNNRegressor(max_epochs=1, random_state=0, **TINY).fit(graphs, y,
                                                                     sample_weight=w)
    np.testing.assert_allclose(pipe.predict(structures), direct.predict(graphs), rtol=1e-6)
    labels = (y < np.median(y)).astype(int)
    clf = CGCNNClassifier(max_epochs=1, random_state=0, **TINY)
    clf.fit(graphs, labels, sample_weight=w)
    unweighted = CGCNNClassifier(max_epochs=1, random_state=0, **TINY).fit(graphs, labels)
    assert not np.allclose(clf.predict_proba(graphs), unweighted.predict_proba(graphs))


@needs_shared
def test_bad_sample_weights(sample):
    _, graphs, y = sample
    reg = CGCNNRegressor(max_epochs=1, **TINY)
    with pytest.raises(ValueError, match="sample_weight has 3 values but X has 60 crystals"):
        reg.fit(graphs, y, sample_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=re.escape("must be finite and >= 0; rows [1]")):
        reg.fit(graphs, y, sample_weight=np.r_[1.0, -1.0, np.ones(58)])
    with pytest.raises(ValueError, match="every sample_weight is 0"):
        reg.fit(graphs, y, sample_weight=np.zeros(60))
    with pytest.raises(ValueError, match="sample_weight must be 1-D"):
        reg.fit(graphs, y, sample_weight=np.ones((60, 1)))
    # a list, a pandas Series; the caller's array is left as it was
    import pandas as pd

    w = np.linspace(0.0, 2.0, 60)
    reg.fit(graphs, y, sample_weight=list(w))
    reg.fit(graphs, y, sample_weight=pd.Series(w))
    np.testing.assert_array_equal(w, np.linspace(0.0, 2.0, 60))
    # the classes left with a weight above 0 are the classes fitted
    labels = (y < np.median(y)).astype(int)
    with pytest.raises(ValueError, match="at least two classes"):
        CGCNNClassifier(max_epochs=1, **TINY).fit(graphs, labels,
                                                  sample_weight=labels.astype(float))


# -- skorch's save_params / load_params --------------------------------------------------------
@needs_shared
def test_skorch_save_params_load_params_round_trip(sample, tmp_path):
    _, graphs, y = sample
    labels = np.where(y < np.median(y), "low", "high")
    for cls, target in ((CGCNNRegressor, y + 10.0), (CGCNNClassifier, labels)):
        net = cls(max_epochs=2, random_state=0, **TINY).fit(graphs, target)
        files = {"f_params": tmp_path / "params.pt", "f_optimizer": tmp_path / "opt.pt",
                 "f_history": tmp_path / "history.json", "f_fitted": tmp_path / "fitted.json"}
        net.save_params(**files)
        again = cls(**TINY).initialize()
        again.load_params(**files)
        np.testing.assert_array_equal(again.predict(graphs), net.predict(graphs))
        assert len(again.history) == 2


@needs_shared
def test_load_params_without_the_fitted_state_says_what_to_do(sample, tmp_path):
    _, graphs, y = sample
    net = CGCNNRegressor(max_epochs=1, **TINY).fit(graphs[:20], y[:20])
    net.save_params(f_params=tmp_path / "params.pt")
    again = CGCNNRegressor(**TINY).initialize()
    with pytest.raises(NotFittedError, match=re.escape(
            "Save with save_params(..., f_fitted='fitted.json') and load with "
            "load_params(..., f_fitted='fitted.json'), or use skcgcnn.save_model")):
        again.load_params(f_params=tmp_path / "params.pt")


# -- set_output ---------------------------------------------------------------------------------
@needs_shared
def test_pipeline_under_pandas_transform_output(sample):
    structures, _, y = sample
    pipe = make_cgcnn_pipeline(max_epochs=1, random_state=0, **TINY)
    with sklearn.config_context(transform_output="pandas"):
        pred = pipe.fit(structures[:20], y[:20]).predict(structures[:5])
    assert pred.shape == (5,) and np.isfinite(pred).all()
