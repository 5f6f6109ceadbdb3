"""Resumable training: a fit stopped after k epochs and resumed ends as an uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, Checkpoint, LoadInitState

from skcgcnn import CGCNNClassifier, CGCNNRegressor, StructureGraphTransformer
from skcgcnn.estimators import (LoadTrainingState, TrainingCheckpoint, TrainingStateError,
                                read_training_state)

from ._shared import SAMPLE500, load_structures, needs_shared

pytestmark = needs_shared

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=16, batch_size=16)


@pytest.fixture(scope="module")
def sample():
    """60 real MP crystals of sample-500: graphs and formation energies."""
    _, structures, y = load_structures(str(SAMPLE500), 60)
    return StructureGraphTransformer().fit_transform(structures), np.asarray(y)


class Kill(Callback):
    """Raise in the middle of epoch ``epoch`` (after its second batch), as a crash would."""

    def __init__(self, epoch: int, error: type = RuntimeError) -> None:
        self.epoch = epoch
        self.error = error

    def on_batch_end(self, net, training=None, **kwargs):
        if training and len(net.history) == self.epoch and \
                len(net.history[-1]["batches"]) == 2:
            raise self.error("killed")


def regressor(folder, max_epochs=6, extra=(), **params):
    state = TrainingCheckpoint(dirname=folder)
    return CGCNNRegressor(max_epochs=max_epochs, random_state=0,
                          lr_schedule="multistep", callbacks__lr_scheduler__milestones=[4],
                          callbacks=[("state", state), ("resume", LoadTrainingState(state)),
                                     *extra], **{**TINY, **params})


def assert_same_state(a, b):
    for key, value in a.module_.state_dict().items():
        assert torch.equal(value, b.module_.state_dict()[key]), key
    sa, sb = a.optimizer_.state_dict(), b.optimizer_.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for index, state in sa["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][index][key]))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_per_batch_schedule_resumes_exactly(sample, tmp_path, schedule):
    """The one-cycle and cosine schedules continue at the step the history reached."""
    graphs, y = sample

    def make(folder, extra=()):
        state = TrainingCheckpoint(dirname=folder)
        return CGCNNRegressor(max_epochs=5, random_state=0, lr_schedule=schedule,
                              optimizer="adamw", warmup_fraction=0.3,
                              callbacks=[("state", state), ("resume", LoadTrainingState(state)),
                                         *extra], **TINY)

    whole = make(tmp_path / "whole").fit(graphs, y)
    with pytest.raises(RuntimeError, match="killed"):
        make(tmp_path / "killed", extra=[("kill", Kill(3))]).fit(graphs, y)
    resumed = make(tmp_path / "killed").fit(graphs, y)
    lrs = [[b["event_lr"] for b in row["batches"]] for row in resumed.history]
    assert lrs == [[b["event_lr"] for b in row["batches"]] for row in whole.history]
    assert_same_state(resumed, whole)


@pytest.mark.parametrize("kill_epoch", [2, 5])
def test_a_killed_fit_resumes_to_the_weights_of_an_uninterrupted_fit(sample, tmp_path,
                                                                     kill_epoch):
    graphs, y = sample
    whole = regressor(tmp_path / "whole").fit(graphs, y)
    with pytest.raises(RuntimeError, match="killed"):
        regressor(tmp_path / "killed", extra=[("kill", Kill(kill_epoch))]).fit(graphs, y)
    saved = read_training_state(tmp_path / "killed" / "training_state.pt")
    assert saved["epoch"] == kill_epoch - 1  # the epoch cut short is not saved

    resumed = regressor(tmp_path / "killed").fit(graphs, y)
    # max_epochs in all, not max_epochs more; the lr dropped at epoch 4 in both runs
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.optimizer_.param_groups[0]["lr"] == pytest.approx(0.001)
    assert_same_state(resumed, whole)
    assert resumed.history[:, "train_loss"] == whole.history[:, "train_loss"]
    np.testing.assert_array_equal(resumed.predict(graphs), whole.predict(graphs))


def test_a_classifier_with_dropout_and_a_validation_split_resumes_exactly(sample, tmp_path):
    from skorch.dataset import ValidSplit

    graphs, y = sample
    labels = (y < np.median(y)).astype(int)

    def make(folder, extra=()):
        state = TrainingCheckpoint(dirname=folder)
        return CGCNNClassifier(max_epochs=5, random_state=1, optimizer="adam", lr=0.003,
                               train_split=ValidSplit(4, stratified=True),
                               module__dropout=0.3,
                               callbacks=[("state", state),
                                          ("resume", LoadTrainingState(state)), *extra],
                               **TINY)

    whole = make(tmp_path / "whole").fit(graphs, labels)
    with pytest.raises(RuntimeError):
        make(tmp_path / "killed", [("kill", Kill(3))]).fit(graphs, labels)
    resumed = make(tmp_path / "killed").fit(graphs, labels)
    assert len(resumed.history) == 5
    assert_same_state(resumed, whole)
    # the validation loss's best-so-far marks continue from the restored history
    assert resumed.history[:, "valid_loss_best"] == whole.history[:, "valid_loss_best"]


def test_fitting_a_finished_run_again_trains_nothing(sample, tmp_path):
    graphs, y = sample
    first = regressor(tmp_path, max_epochs=3).fit(graphs, y)
    again = regressor(tmp_path, max_epochs=3).fit(graphs, y)
    assert len(again.history) == 3
    assert_same_state(again, first)
    longer = regressor(tmp_path, max_epochs=5).fit(graphs, y)  # a longer run: 2 more epochs
    assert [row["epoch"] for row in longer.history] == [1, 2, 3, 4, 5]


def test_checkpoint_every_n_epochs_and_at_the_end(sample, tmp_path):
    graphs, y = sample
    written = []

    net = regressor(tmp_path, max_epochs=5)
    net.set_params(callbacks__state__every=2, callbacks__state__sink=written.append)
    net.fit(graphs, y)
    assert [line.split()[4] for line in written] == ["2", "4", "5"]
    assert read_training_state(tmp_path / "training_state.pt")["epoch"] == 5


def test_ctrl_c_inside_an_epoch_keeps_the_last_complete_epoch(sample, tmp_path):
    graphs, y = sample
    # skorch ends training quietly on KeyboardInterrupt; the partial epoch is not saved
    net = regressor(tmp_path, extra=[("kill", Kill(3, KeyboardInterrupt))]).fit(graphs, y)
    assert len(net.history) == 3
    assert read_training_state(tmp_path / "training_state.pt")["epoch"] == 2


def test_skorch_checkpoint_and_load_init_state_train_the_epochs_left(sample, tmp_path):
    """The skorch way (docs/models.md): weights, optimizer and history are restored and
    fit trains up to max_epochs, not max_epochs more."""
    graphs, y = sample

    def make(extra=()):
        cp = Checkpoint(monitor=None, dirname=str(tmp_path))
        return CGCNNRegressor(max_epochs=5, random_state=0,
                              callbacks=[cp, LoadInitState(cp), *extra], **TINY)

    with pytest.raises(RuntimeError):
        make([Kill(3)]).fit(graphs, y)
    resumed = make().fit(graphs, y)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5]


def test_partial_fit_still_trains_max_epochs_more(sample, tmp_path):
    graphs, y = sample
    net = regressor(tmp_path, max_epochs=2).fit(graphs, y)
    net.partial_fit(graphs, y)
    assert len(net.history) == 4


def test_a_state_of_another_network_or_no_state_file(sample, tmp_path):
    graphs, y = sample
    regressor(tmp_path, max_epochs=1).fit(graphs, y)
    with pytest.raises(TrainingStateError, match="weights of another network"):
        regressor(tmp_path, max_epochs=2, module__atom_fea_len=4).fit(graphs, y)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "training_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingStateError, match="not a readable training state"):
        regressor(bad, max_epochs=2).fit(graphs, y)
    torch.save({"format": "something else"}, bad / "training_state.pt")
    with pytest.raises(TrainingStateError, match="not a training state written by"):
        read_training_state(bad / "training_state.pt")
    with pytest.raises(ValueError, match="every=0"):
        CGCNNRegressor(callbacks=[TrainingCheckpoint(dirname=tmp_path, every=0)]).initialize()
