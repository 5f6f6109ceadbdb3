"""SearchSpace's recipe and fine-tuning fields: max_epochs, loss, freeze, init_lr_factor."""
from __future__ import annotations

import json

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import FixedTrial, TrialState  # noqa: E402

from skcgcnn.tuning import (  # noqa: E402
    SearchSpace,
    fine_tuning_space,
    pipeline_distributions,
    tune,
)

from .test_tuning import TINY, data, needs_data, one_torch_thread  # noqa: E402,F401

#: The fields of a default space, as studies made before the optional fields stored it.
OLD_FIELDS = ["atom_fea_len", "atom_features", "batch_size", "cgcnn_groups", "conv", "dmin",
              "h_fea_len", "lr", "max_num_nbr", "n_conv", "n_h", "optimizer", "radius",
              "step", "weight_decay"]
RECIPE = {"max_epochs": (1, 2), "loss": ("absolute_error", "huber", "squared_error")}
FINETUNE = {"freeze": (None, "embedding", "conv"), "init_lr_factor": (0.01, 1.0)}
FAKE_INIT = {"init": "model.pt"}  # validate only looks at whether there is one


def test_default_space_stays_as_older_studies_stored_it():
    space = SearchSpace()
    assert sorted(space.to_dict()) == OLD_FIELDS
    assert not {"max_epochs", "loss", "freeze", "init_lr_factor"} & set(space.searched())
    params = {"atom_features": "cgcnn", "n_conv": 3, "atom_fea_len": 64, "h_fea_len": 128,
              "n_h": 1, "conv": "gated", "optimizer": "adam", "lr": 1e-3,
              "weight_decay": 1e-6, "batch_size": 64, "radius": 8.0, "max_num_nbr": 12}
    assert sorted(space.config(params).estimator_params) == [
        "batch_size", "lr", "module__atom_fea_len", "module__conv", "module__h_fea_len",
        "module__n_conv", "module__n_h", "optimizer", "optimizer__weight_decay"]
    # a stored space without the new fields reads back as the same space
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_suggest_asks_for_the_recipe_and_fine_tuning_fields():
    space = SearchSpace.from_dict(dict(TINY, **RECIPE, **FINETUNE))
    assert {"max_epochs", "loss", "freeze", "init_lr_factor"} <= set(space.searched())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = space.suggest(trial)
        est = cfg.estimator_params
        assert est["max_epochs"] == trial.params["max_epochs"] in (1, 2)
        assert est["loss"] == trial.params["loss"]
        assert est["freeze"] == trial.params["freeze"] in (None, "embedding", "conv")
        assert 0.01 <= est["init_lr_factor"] == trial.params["init_lr_factor"] <= 1.0
        seen.add(est["freeze"])
        # the parameters of a trial give its configuration back
        assert space.config(trial.params) == cfg
        study.tell(trial, 1.0)
    assert seen == {None, "embedding", "conv"}
    dists = study.trials[0].distributions
    assert dists["max_epochs"] == CategoricalDistribution([1, 2])
    assert dists["loss"] == CategoricalDistribution(list(RECIPE["loss"]))
    assert dists["freeze"] == CategoricalDistribution([None, "embedding", "conv"])
    assert dists["init_lr_factor"] == FloatDistribution(0.01, 1.0, log=True)
    assert space.trial_epochs(30) == [1, 2] and SearchSpace().trial_epochs(30) == [30]


def test_fixed_fields_are_passed_not_searched_and_round_trip():
    space = SearchSpace.from_dict(dict(TINY, max_epochs=40, loss="huber", freeze="conv",
                                       init_lr_factor=0.0, n_conv=2))
    assert not {"max_epochs", "loss", "freeze", "init_lr_factor"} & set(space.searched())
    cfg = space.suggest(FixedTrial({"atom_features": "cgcnn", "optimizer": "adam",
                                    "lr": 0.01}))
    assert {k: cfg.estimator_params[k] for k in ("max_epochs", "loss", "freeze",
                                                 "init_lr_factor")} == {
        "max_epochs": 40, "loss": "huber", "freeze": "conv", "init_lr_factor": 0.0}
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.to_dict()["freeze"] == "conv"
    searched = SearchSpace.from_dict(json.loads(json.dumps(
        SearchSpace(**RECIPE, **FINETUNE).to_dict())))
    assert searched.freeze == (None, "embedding", "conv") and searched.max_epochs == (1, 2)
    with pytest.raises(ValueError, match="'loss' is searched .* missing"):
        SearchSpace(loss=("huber", "squared_error")).config(
            {"atom_features": "cgcnn", "n_conv": 3, "atom_fea_len": 64, "h_fea_len": 128,
             "n_h": 1, "conv": "gated", "optimizer": "adam", "lr": 1e-3,
             "weight_decay": 1e-6, "batch_size": 64, "radius": 8.0, "max_num_nbr": 12})


@pytest.mark.parametrize("fields, fixed, message", [
    ({"loss": ("huber", "gaussian_nll")}, None, "'gaussian_nll' is not searched"),
    ({"loss": "mse"}, None, r"\['mse'\] not among \('absolute_error', 'huber'"),
    ({"max_epochs": (0, 10)}, None, r"max_epochs: \[0\] are not integers >= 1"),
    ({"max_epochs": (10.5,)}, None, "not integers >= 1"),
    ({"freeze": ("all",)}, FAKE_INIT, r"\['all'\] not among \(None, 'embedding', 'conv'\)"),
    ({"init_lr_factor": (0.0, 1.0)}, FAKE_INIT, "log scale, so low must be > 0"),
    ({"init_lr_factor": -1.0}, FAKE_INIT, "init_lr_factor=-1.0: must be >= 0"),
    ({"freeze": ("conv", None)}, None, r"SearchSpace.freeze=\('conv', None\) fine-tunes a "
     r"pretrained model, and none is given: pass it as tune\(estimator_params="),
    ({"init_lr_factor": (0.1, 1.0)}, {"init": None}, "init_lr_factor=.* fine-tunes"),
    ({}, {"lr": 0.01}, r"estimator_params \['lr'\] are set by the SearchSpace .*"
     r"SearchSpace\(lr=0.01\)"),
    ({"loss": "huber"}, {"loss": "huber"}, r"\['loss'\] are set by the SearchSpace"),
    (FINETUNE, FAKE_INIT, r"fields \['n_conv', 'n_h'\] cannot be searched"),
])
def test_validate_refuses_bad_fields_and_fine_tuning_without_init(fields, fixed, message):
    base = dict(TINY, n_conv=[1, 2], n_h=[1, 2], atom_features="cgcnn")
    if fields is FINETUNE:
        space = SearchSpace.from_dict({**base, **fields})
    else:
        space = SearchSpace.from_dict({**base, "n_conv": 1, "n_h": 1, **fields})
    with pytest.raises(ValueError, match=message):
        space.validate(fixed)


def test_validate_accepts_fine_tuning_with_init_and_fixed_shape():
    space = SearchSpace.from_dict(dict(TINY, n_conv=1, atom_features="cgcnn", **FINETUNE))
    space.validate(FAKE_INIT)
    # without freeze or init_lr_factor, no init is needed; with one, other fixed
    # parameters are fine
    SearchSpace.from_dict(dict(TINY, **RECIPE)).validate({"lr_schedule": "cosine"})
    groups = SearchSpace.from_dict(dict(TINY, n_conv=1, atom_features="cgcnn_groups"))
    with pytest.raises(ValueError, match=r"\['cgcnn_groups'\] cannot be searched"):
        groups.validate(FAKE_INIT)


def test_tune_refuses_estimator_params_it_sets_itself():
    for key, where in (("max_epochs", r"tune\(max_epochs=...\) or SearchSpace"),
                       ("callbacks", "callbacks"), ("random_state", "random_state"),
                       ("callbacks__print_log", "callbacks")):
        with pytest.raises(ValueError, match=rf"estimator_params\['{key}'\]: .*{where}"):
            tune([], [], estimator_params={key: 1}, storage=":memory:")


def test_pipeline_distributions_cover_the_new_fields():
    dists = pipeline_distributions(SearchSpace(radius=8.0, **RECIPE))
    assert dists["cgcnn__max_epochs"] == CategoricalDistribution([1, 2])
    assert dists["cgcnn__loss"] == CategoricalDistribution(list(RECIPE["loss"]))
    assert "cgcnn__freeze" not in dists
    space = SearchSpace(atom_features="cgcnn", n_conv=3, atom_fea_len=64, h_fea_len=128,
                        n_h=1, conv="gated", radius=8.0, max_num_nbr=12, **FINETUNE)
    with pytest.raises(ValueError, match="fine-tunes a pretrained model"):
        pipeline_distributions(space)
    dists = pipeline_distributions(space, estimator_params=FAKE_INIT)
    assert dists["cgcnn__init_lr_factor"] == FloatDistribution(0.01, 1.0, log=True)
    assert dists["cgcnn__freeze"] == CategoricalDistribution([None, "embedding", "conv"])


@needs_data
def test_a_study_searches_epochs_and_loss_and_refits_with_the_best(data):
    X, y = data
    space = SearchSpace.from_dict(dict(TINY, max_epochs=[1, 3], loss=["huber", "squared_error"]))
    result = tune(X[:30], y[:30], space=space, n_trials=3, max_epochs=2, pruner="none",
                  storage=":memory:", verbose=0,
                  enqueue=[{"max_epochs": 1, "loss": "huber"},
                           {"max_epochs": 3, "loss": "squared_error"}])
    trials = result.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # each trial trained its own epochs (tune's max_epochs=2 is not used)
    assert [len(t.intermediate_values) for t in trials] == [t.params["max_epochs"]
                                                           for t in trials]
    assert list(result.trials["max_epochs"]) == [t.params["max_epochs"] for t in trials]
    assert list(result.trials["loss"]) == [t.params["loss"] for t in trials]
    est = result.best_pipeline.named_steps["cgcnn"]
    assert est.max_epochs == result.best_params["max_epochs"] == len(est.history)
    assert est.loss == result.best_params["loss"]


@pytest.fixture(scope="module")
def pretrained(data):
    from skcgcnn.estimators import CGCNNRegressor
    from skcgcnn.transformers import StructureGraphTransformer

    X, y = data
    graphs = StructureGraphTransformer(max_num_nbr=8).fit_transform(X[30:60])
    return CGCNNRegressor(max_epochs=2, batch_size=16, module__atom_fea_len=8,
                          module__h_fea_len=16, module__n_conv=2, random_state=0,
                          verbose=0).fit(graphs, y[30:60])


@needs_data
def test_fine_tuning_space_fixes_the_pretrained_models_shape_and_graphs(pretrained):
    space = fine_tuning_space(pretrained, optimizer="adam", lr=(1e-3, 1e-2))
    assert (space.n_conv, space.atom_fea_len, space.h_fea_len, space.n_h, space.conv) == (
        2, 8, 16, 1, "gated")
    assert (space.atom_features, space.radius, space.max_num_nbr) == ("cgcnn", 8.0, 8)
    assert space.freeze == (None, "embedding", "conv") and space.init_lr_factor == (0.01, 1.0)
    assert space.optimizer == "adam" and space.lr == (1e-3, 1e-2)
    assert sorted(space.searched()) == ["batch_size", "freeze", "init_lr_factor", "lr",
                                        "weight_decay"]
    space.validate({"init": pretrained})


@needs_data
def test_tune_fine_tunes_a_pretrained_model_searching_freeze_and_factor(data, pretrained):
    X, y = data
    space = fine_tuning_space(pretrained, optimizer="adam", weight_decay=0.0, batch_size=16)
    result = tune(X[:30], y[:30], space=space, n_trials=2, max_epochs=1, storage=":memory:",
                  estimator_params={"init": pretrained}, verbose=0,
                  enqueue=[{"freeze": "conv", "init_lr_factor": 0.1, "lr": 0.01},
                           {"freeze": None, "init_lr_factor": 1.0, "lr": 0.01}])
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2
    assert list(result.trials["freeze"].fillna("none")) == ["conv", "none"]
    assert result.study.user_attrs["skcgcnn"]["estimator_params"] == {
        "init": "<CGCNNRegressor>"}
    est = result.best_pipeline.named_steps["cgcnn"]
    assert est.init is pretrained and est.freeze == result.best_params["freeze"]
    # the body of the fine-tuned model started from the pretrained weights
    if est.freeze == "conv":
        for name, value in pretrained.module_.state_dict().items():
            if name.startswith("convs."):
                np.testing.assert_array_equal(est.module_.state_dict()[name], value)
    # graphs built otherwise than the pretrained model's are refused before any trial
    other = fine_tuning_space(pretrained, max_num_nbr=12, optimizer="adam")
    with pytest.raises(ValueError, match="max_num_nbr"):
        tune(X[:30], y[:30], space=other, n_trials=1, max_epochs=1, storage=":memory:",
             estimator_params={"init": pretrained}, verbose=0)


@needs_data
@pytest.mark.timeout(300)
def test_cli_init_fine_tunes_and_freeze_without_init_is_refused(pretrained, tmp_path,
                                                                 monkeypatch, capsys):
    from skcgcnn.cli import main
    from skcgcnn.estimators import save_model

    from .test_tuning import DATA

    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))
    save_model(pretrained, tmp_path / "pre.pt")
    args = ["tune", str(DATA), "--limit", "30", "--n-trials", "2", "--epochs", "1",
            "--baselines", "none", "--storage", ":memory:"]
    space = json.dumps({"optimizer": "adam", "batch_size": 16, "weight_decay": 0.0})
    assert main(args + ["--init", str(tmp_path / "pre.pt"), "--space", space]) == 0
    printed = capsys.readouterr()
    lines = [x for x in printed.err.splitlines() if x.startswith("trial ")]
    assert len(lines) == 2 and all(" freeze=" in x and " init_lr_factor=" in x
                                   for x in lines)
    # the trials have the pretrained network's shape (n_conv 2, widths 8 and 16)
    assert printed.out.count("| cgcnn | 2 | 8 | 16 | 1 | gated | adam |") == 2
    assert main(args + ["--space", json.dumps({"freeze": ["conv", None]})]) == 2
    assert "skcgcnn tune --init MODEL" in capsys.readouterr().err
