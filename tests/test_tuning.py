"""Tests for skcgcnn.tuning: search space, graph cache, pruning, shared storages, resume."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from skcgcnn.cli import main  # noqa: E402
from skcgcnn.graph import GraphCache  # noqa: E402
from skcgcnn.tuning import (  # noqa: E402
    CGCNN_GROUPS_CHOICE,
    PruningCallback,
    SearchSpace,
    ValidationMAE,
    fail_beatless_trials,
    load_tuning_data,
    make_storage,
    pipeline_distributions,
    pipeline_from_params,
    recover_stale_trials,
    tune,
)
from skcgcnn.tuning._study import _Run  # noqa: E402

from ._shared import SAMPLE500, needs  # noqa: E402
from .test_graph_cache import DAMAGE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = SAMPLE500
needs_data = needs(DATA)

#: A space of tiny, fast networks (a fraction of a second per trial on 80 crystals).
TINY = {"atom_features": ["cgcnn", "onehot"], "atom_fea_len": 8, "h_fea_len": 16,
        "n_conv": [1, 2], "n_h": 1, "conv": "simple", "optimizer": ["adam", "sgd"],
        "weight_decay": 0.0, "batch_size": 16, "radius": 8.0, "max_num_nbr": 8}
N_DATA = 80
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks run fastest on one thread (and the test machine's cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is not there")
    X, y, _ = load_tuning_data(DATA, limit=N_DATA, random_state=0, cache=False)
    return X, y


def _tiny() -> SearchSpace:
    return SearchSpace.from_dict(TINY)


def _cli(args: list[str], tmp_path: Path, run_class: str | None = None,
         env: dict | None = None) -> subprocess.Popen:
    """``skcgcnn tune ...`` in another process; ``run_class``: the name of a ``_Run``
    subclass of this module that its ``tune`` uses instead (a worker that behaves)."""
    env = dict(os.environ, SKCGCNN_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1", **(env or {}))
    code = "import sys; from skcgcnn.cli import main; sys.exit(main(sys.argv[1:]))"
    if run_class is not None:
        code = (f"from skcgcnn.tuning import _tune; from {__name__} import {run_class}; "
                f"_tune._Run = {run_class}; {code}")
    return subprocess.Popen([sys.executable, "-c", code, "tune", str(DATA), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cli_args(storage: str, n_trials: int, epochs: int, extra: tuple = ()) -> list[str]:
    return ["--limit", str(N_DATA), "--space", json.dumps(TINY), "--storage", storage,
            "--study-name", "shared",
            "--n-trials", str(n_trials), "--epochs", str(epochs), "--baselines", "none",
            "--random-state", "0", "-q", *extra]


def _poll_until(condition, what: str, timeout: float = 90, check=None) -> None:
    """Return once ``condition()`` is true (looked at every 0.1 s); ``check()`` (looked at
    before each look) raises to give up early.  AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.1)


def _wait_for(study_name: str, storage: str, ready, proc: subprocess.Popen, timeout: float = 90):
    """The study once ``ready(its trials)``, while the worker ``proc`` runs."""
    found = []

    def study_ready() -> bool:
        try:
            study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
        except KeyError:
            return False
        found[:] = [study]
        return ready(study.get_trials(deepcopy=False))

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early:\n{proc.stdout.read()}")

    _poll_until(study_ready, "sign of the worker in the study", timeout, alive)
    return found[0]


class _TakesTurns(_Run):
    """``tune``'s worker, which begins its second trial only once another worker has begun
    one: every worker of the study runs trials, however fast the first one to start is
    (unpickled by name in tune's worker processes, and in ``_cli(run_class=...)``)."""

    def _evaluate(self, trial):
        self._begun = getattr(self, "_begun", 0) + 1
        if self._begun == 2:
            me = trial.user_attrs["worker"]
            _poll_until(lambda: any(t.user_attrs.get("worker", me) != me
                                    for t in trial.study.get_trials(deepcopy=False)),
                        "trial of another worker", timeout=150)
        return super()._evaluate(trial)


class _HangsInItsSecondTrial(_Run):
    """``tune``'s worker, to be killed in the middle of a trial: its second trial draws its
    parameters, creates the file named by ``$SKCGCNN_TEST_HUNG`` and waits for ever (its
    heartbeat goes on beating)."""

    def _evaluate(self, trial):
        self._begun = getattr(self, "_begun", 0) + 1
        if self._begun < 2:
            return super()._evaluate(trial)
        self.space.suggest(trial, self.choices)
        Path(os.environ["SKCGCNN_TEST_HUNG"]).touch()
        threading.Event().wait()  # until killed


# -- search space ------------------------------------------------------------------
def test_search_space_config_fixes_and_groups():
    space = SearchSpace(atom_features=("cgcnn", CGCNN_GROUPS_CHOICE), cgcnn_groups=("group",
                        "period", "block"), n_conv=(1, 3), radius=8.0, max_num_nbr=12,
                        optimizer="adam", weight_decay=0.0)
    assert sorted(space.searched()) == ["atom_fea_len", "atom_features", "batch_size", "conv",
                                        "h_fea_len", "lr", "n_conv", "n_h"]
    trial = optuna.trial.FixedTrial({
        "atom_features": CGCNN_GROUPS_CHOICE, "group_group": True, "group_period": False,
        "group_block": True, "atom_fea_len": 32, "h_fea_len": 64, "conv": "gated",
        "batch_size": 64, "n_conv": 2, "n_h": 3, "lr": 0.003})
    cfg = space.suggest(trial)
    assert cfg.atom_features == ("group", "block")
    assert (cfg.radius, cfg.max_num_nbr, cfg.dmin, cfg.step) == (8.0, 12, 0.0, 0.2)
    assert cfg.estimator_params == {
        "module__n_conv": 2, "module__atom_fea_len": 32, "module__h_fea_len": 64,
        "module__n_h": 3, "module__conv": "gated", "optimizer": "adam", "lr": 0.003,
        "optimizer__weight_decay": 0.0, "batch_size": 64}
    # no group chosen: all nine (the full CGCNN table)
    empty = dict(trial.params, group_group=False, group_block=False)
    assert space.config(empty).atom_features == "cgcnn"
    with pytest.raises(ValueError, match="'n_conv' is searched .* missing"):
        space.config({k: v for k, v in trial.params.items() if k != "n_conv"})
    # a fixed tuple of groups is one choice, not a search
    assert SearchSpace(atom_features=("group", "period")).atom_feature_choices() == [
        ("group", "period")]
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.to_dict() == space.to_dict()


@pytest.mark.parametrize("field, value, message", [
    ("n_conv", (0, 3), "integers >= 1"),
    ("lr", (0.0, 0.1), "must be > 0"),
    ("weight_decay", (0.0, 1e-3), "log scale"),
    ("conv", ("gated", "fancy"), "'fancy'"),
    ("atom_fea_len", (8, -1), "integers >= 1"),
    ("cgcnn_groups", ("group", "colour"), "colour"),
    ("atom_features", ("cgcnn", ("group",)), "must be names"),
])
def test_search_space_rejects_bad_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**{field: value}).validate()
    with pytest.raises(ValueError, match="unknown SearchSpace field"):
        SearchSpace.from_dict({"depth": 3})


@needs_data
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_trials_complete_on_a_damaged_graph_cache_file(data, tmp_path, damage, caplog):
    # the cache itself (rebuilt, written again whole): tests/test_graph_cache.py
    X, y = data
    structures, ids = list(X)[:30], list(X.index)[:30]
    clean, _ = GraphCache(structures, ids=ids, cache_dir=tmp_path).get(8.0, 8)
    (path,) = tmp_path.glob("graphs-*.npz")
    DAMAGE[damage](path)
    caplog.set_level("WARNING", logger="skcgcnn.graph")
    result = tune(X[:30], y[:30], space=_tiny(), n_trials=2, max_epochs=1,
                  storage=":memory:", graph_cache=tmp_path, refit=False, verbose=0)
    assert list(result.trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert result.graph_builds == 1 and "is damaged" in caplog.text
    with np.load(path) as stored:
        np.testing.assert_array_equal(stored["nbr_dist"], clean.nbr_dist)


# -- callbacks --------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1000.0, 500.0)])
def test_validation_mae_is_the_mae_of_predict(data, scale, shift):
    """In the target's units: the regressor standardises y inside; for 1000 y + 500 an
    MAE in standard deviations would be about a thousand times too small."""
    from sklearn.metrics import mean_absolute_error
    from skorch.callbacks import EpochScoring
    from skorch.helper import predefined_split

    from skcgcnn.estimators import CGCNNRegressor, GraphDataset
    from skcgcnn.transformers import StructureGraphTransformer

    X, y = data
    y = scale * y + shift
    graphs = StructureGraphTransformer(max_num_nbr=8).fit_transform(X)
    train, valid = np.arange(60), np.arange(60, N_DATA)
    callback = ValidationMAE()
    assert isinstance(callback, EpochScoring) and callback.use_caching
    est = CGCNNRegressor(max_epochs=2, batch_size=16, random_state=0,
                         module__atom_fea_len=8, module__h_fea_len=16, module__n_conv=1,
                         train_split=predefined_split(GraphDataset(graphs[valid], y[valid])),
                         callbacks=[callback])
    est.fit(graphs[train], y[train])
    expected = mean_absolute_error(y[valid], est.predict(graphs[valid]))
    assert est.history[-1, "valid_mae"] == pytest.approx(expected, rel=1e-5)
    assert len(est.history[:, "valid_mae"]) == 2


def test_pruning_callback_reports_and_prunes():
    class Net:
        max_epochs = 5

        def __init__(self, values):
            self.history = [{"valid_mae": v} for v in values]

    class History(list):
        def __getitem__(self, key):
            if isinstance(key, tuple):
                return list.__getitem__(self, key[0])[key[1]]
            return list.__getitem__(self, key)

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    cb = PruningCallback(trial, "valid_mae", step_offset=10)
    from optuna_integration import SkorchPruningCallback

    assert isinstance(cb, SkorchPruningCallback)
    assert cb.get_params() == {"trial": trial, "monitor": "valid_mae", "step_offset": 10,
                               "prune_last_epoch": False}
    net = Net([0.5])
    net.history = History(net.history)
    cb.on_epoch_end(net)
    assert study.trials[0].intermediate_values == {10: 0.5}
    net.history.append({"valid_mae": 2.0})
    with pytest.raises(optuna.TrialPruned, match="step 11"):
        cb.on_epoch_end(net)
    net.history.append({"valid_mae": float("nan")})
    with pytest.raises(optuna.TrialPruned, match="diverged"):
        cb.on_epoch_end(net)
    # after the last epoch the value is reported, not pruned on
    net.history = History({"valid_mae": 3.0} for _ in range(5))
    PruningCallback(study.ask(), "valid_mae").on_epoch_end(net)
    with pytest.raises(optuna.TrialPruned):
        PruningCallback(study.ask(), "valid_mae", prune_last_epoch=True).on_epoch_end(net)
    net.history = History([{"valid_loss": 1.0}])
    with pytest.raises(KeyError, match="ValidationMAE"):
        cb.on_epoch_end(net)


# -- studies ----------------------------------------------------------------------
GOOD = {"atom_features": "cgcnn", "optimizer": "adam", "n_conv": 1, "lr": 0.01}
BAD = {"atom_features": "cgcnn", "optimizer": "sgd", "n_conv": 1, "lr": 300.0}  # diverges


@needs_data
def test_tiny_study_really_prunes(data, tmp_path):
    X, y = data
    space = SearchSpace.from_dict(dict(TINY, lr=[1e-4, 1e3]))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    result = tune(X, y, space=space, n_trials=2, max_epochs=4, storage=":memory:",
                  pruner=pruner, enqueue=[GOOD, BAD], refit=False, verbose=0,
                  output_dir=tmp_path / "out", baselines={"dummy": 0.8})
    good, bad = result.study.trials
    assert good.state == TrialState.COMPLETE and good.params == GOOD
    assert sorted(good.intermediate_values) == [0, 1, 2, 3]
    assert good.value == pytest.approx(good.intermediate_values[3])
    assert bad.state == TrialState.PRUNED and bad.params == BAD
    assert list(bad.intermediate_values) == [0]  # stopped after its first epoch
    assert bad.intermediate_values[0] > 10 * good.intermediate_values[0]
    assert result.best_value == good.value
    names = {p.name for p in result.files}
    assert {"trials.csv", "best_trials.md", "history.png", "intermediate.png",
            "baselines.png", "summary.json"} <= names
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trials"]["PRUNED"] == 1 and summary["best_trial"] == 0
    assert summary["baselines"] == {"dummy": 0.8}
    # without a pruner the same bad trial runs every epoch
    result = tune(X, y, space=space, n_trials=2, max_epochs=4, storage=":memory:",
                  pruner="none", enqueue=[GOOD, BAD], refit=False, verbose=0)
    assert [len(t.intermediate_values) for t in result.study.trials] == [4, 4]
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2


@needs_data
def test_cv_reports_every_fold_and_refits_from_cached_graphs(data):
    X, y = data
    result = tune(X[:40], y[:40], space=_tiny(), n_trials=1, max_epochs=2, cv=2,
                  storage=":memory:", pruner="none", enqueue=[GOOD], verbose=0)
    trial = result.study.trials[0]
    folds = trial.user_attrs["valid_mae_folds"]
    assert sorted(trial.intermediate_values) == [0, 1, 2, 3]
    assert trial.intermediate_values[1] == pytest.approx(folds[0])
    assert trial.intermediate_values[3] == pytest.approx(folds[1])
    assert trial.value == pytest.approx(np.mean(folds))
    assert result.graph_builds == 1  # both folds and the refit used one neighbour search
    pipe = result.best_pipeline
    assert pipe.named_steps["graph"].get_params()["max_num_nbr"] == 8
    assert pipe.named_steps["cgcnn"].get_params()["module__n_conv"] == 1
    assert pipe.predict(list(X[:3])).shape == (3,)
    study, model = result  # unpacks as (study, best pipeline)
    assert study is result.study and model is pipe


@needs_data
@pytest.mark.timeout(300)
def test_two_workers_on_a_journal_file_finish_n_trials(data, tmp_path, monkeypatch):
    X, y = data
    monkeypatch.setattr("skcgcnn.tuning._tune._Run", _TakesTurns)  # both workers run trials
    storage = str(tmp_path / "study.log")
    result = tune(X, y, space=_tiny(), n_trials=6, max_epochs=6, storage=storage,
                  n_workers=2, refit=False, verbose=0, heartbeat_interval=2)
    trials = optuna.load_study(study_name=result.study.study_name,
                               storage=make_storage(storage)).trials
    assert sum(t.state in FINISHED for t in trials) == 6
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state in FINISHED or "skipped" in t.user_attrs for t in trials)
    assert len({t.user_attrs["worker"] for t in trials if t.state in FINISHED}) == 2
    assert result.best_value == min(t.value for t in trials if t.value is not None)
    # a journal file has no heartbeat of Optuna's: the trials carry ours
    assert all("heartbeat" in t.user_attrs for t in trials if t.state in FINISHED)


@needs_data
@pytest.mark.timeout(300)
def test_two_processes_share_an_sqlite_study(data, tmp_path):
    X, y = data
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # it waits for a trial of this process before its second: both run trials
    other = _cli(_cli_args(storage, 8, 8), tmp_path, run_class="_TakesTurns")
    try:
        _wait_for("shared", storage, lambda ts: len(ts) > 0, other)
        tune(X, y, space=_tiny(), n_trials=8, max_epochs=8, storage=storage,
             study_name="shared", refit=False, verbose=0)
        out, _ = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, out
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 8
    # when both start a trial at the same moment for the last slot, the later one stops
    # before drawing parameters and is recorded as a failed, skipped trial
    others = [t for t in trials if t.state not in FINISHED]
    assert all(t.state == TrialState.FAIL and "skipped" in t.user_attrs and not t.params
               for t in others)
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2  # both processes ran trials
    assert f"{socket.gethostname()}:{os.getpid()}" in workers


@needs_data
@pytest.mark.timeout(300)
def test_killed_worker_resumes_without_losing_trials(data, tmp_path):
    # SQLite: the operating system drops a killed process's file locks at once (a journal
    # file's lock would hold the next writer up to 30 s, optuna's lock grace period)
    X, y = data
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    hung = tmp_path / "hung"
    # its second trial stops after drawing its parameters, and is killed there
    worker = _cli(_cli_args(storage, 4, 10, ("--heartbeat-interval", "1")), tmp_path,
                  run_class="_HangsInItsSecondTrial", env={"SKCGCNN_TEST_HUNG": str(hung)})
    try:
        # killed before or after the running trial's first heartbeat: Optuna fails a
        # trial with a stale heartbeat row, fail_beatless_trials one without a row
        _wait_for("shared", storage, lambda trials: hung.exists(), worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    study = optuna.load_study(study_name="shared", storage=make_storage(storage))
    before = {t.number: (t.state, t.value) for t in study.trials}
    assert [state for state, _ in before.values()] == [TrialState.COMPLETE, TrialState.RUNNING]
    killed = [n for n, (state, _) in before.items() if state == TrialState.RUNNING]
    result = tune(X, y, space=_tiny(), n_trials=4, max_epochs=10, storage=storage,
                  study_name="shared", refit=False, verbose=0, heartbeat_interval=1,
                  grace_period=3)
    after = {t.number: t for t in result.study.trials}
    for number, (state, value) in before.items():
        if state in FINISHED:  # finished trials are kept as they were
            assert (after[number].state, after[number].value) == (state, value)
    assert after[killed[0]].state == TrialState.FAIL
    retries = [t for t in after.values() if t.user_attrs.get("retry_of") == killed[0]]
    assert len(retries) == 1
    # an RDB storage: Optuna's own heartbeat and RetryHeartbeatStaleTrialCallback did it
    assert retries[0].system_attrs["failed_trial"] == killed[0]
    assert not any("heartbeat" in t.user_attrs for t in after.values())
    # the parameters the killed trial had drawn are kept
    assert after[killed[0]].params and after[killed[0]].params == retries[0].params
    assert retries[0].state in FINISHED
    assert sum(t.state in FINISHED for t in after.values()) == 4


def test_recover_stale_trials_fails_and_requeues_once():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    trial.set_user_attr("heartbeat", time.time() - 100)
    fresh = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    fresh.set_user_attr("heartbeat", time.time())
    assert recover_stale_trials(study, grace_period=10) == [trial.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[trial.number].state == TrialState.FAIL
    assert trials[fresh.number].state == TrialState.RUNNING
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    assert waiting[0].user_attrs == {"retry_of": trial.number, "retry_count": 1}
    assert waiting[0].system_attrs["fixed_params"] == {"x": 1.0}
    assert recover_stale_trials(study, grace_period=10) == []
    # a trial retried max_retries times is not queued again
    retry = study.ask()
    retry.set_user_attr("heartbeat", time.time() - 100)
    assert recover_stale_trials(study, grace_period=10, max_retries=1) == [retry.number]
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def rdb_study(tmp_path):
    """A SQLite study whose trials beat every second and are stale after 30 s of silence
    (one retry), and the search space of its trials."""
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1,
                           grace_period=30, max_retries=1)
    return storage, optuna.create_study(storage=storage), \
        {"x": optuna.distributions.FloatDistribution(0, 2)}


def _backdate(storage, table: str, column: str, trial_id: int, seconds: float) -> None:
    """Move a time stamp of a trial in an RDB storage ``seconds`` into the past: as if its
    worker had gone silent that long ago, without waiting for it."""
    import sqlalchemy as sa

    rows = sa.table(table, sa.column("trial_id"), sa.column(column, sa.DateTime))
    with storage.engine.begin() as connection:
        when = connection.execute(sa.select(rows.c[column]).where(
            rows.c.trial_id == trial_id)).scalar_one()
        connection.execute(rows.update().where(rows.c.trial_id == trial_id).values(
            {column: when - timedelta(seconds=seconds)}))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_rdb_storage_requeues_stale_trials_with_optunas_heartbeat(tmp_path):
    storage, study, x = rdb_study(tmp_path)
    trial = study.ask(x)
    storage.record_heartbeat(trial._trial_id)  # then its worker dies
    optuna.storages.fail_stale_trials(study)  # a fresh beat: left alone
    assert study.trials[trial.number].state == TrialState.RUNNING
    _backdate(storage, "trial_heartbeats", "heartbeat", trial._trial_id, 60)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[trial.number].state == TrialState.FAIL
    (waiting,) = [t for t in trials if t.state == TrialState.WAITING]
    assert waiting.params == {"x": trial.params["x"]}
    assert waiting.user_attrs == {"retry_of": trial.number, "retry_count": 1}
    # the retry dies too: max_retries=1, not queued again
    retry = study.ask(x)
    assert retry.number == waiting.number
    storage.record_heartbeat(retry._trial_id)
    _backdate(storage, "trial_heartbeats", "heartbeat", retry._trial_id, 60)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[retry.number].state == TrialState.FAIL
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_rdb_trial_killed_before_its_first_beat_is_failed_and_requeued(tmp_path):
    storage, study, x = rdb_study(tmp_path)
    beatless = study.ask(x)  # its worker dies before the first beat: no heartbeat row
    alive = study.ask(x)
    for old in (beatless, alive):  # both started a minute ago
        _backdate(storage, "trials", "datetime_start", old._trial_id, 60)
    storage.record_heartbeat(alive._trial_id)
    fresh = study.ask(x)  # started under grace_period ago: not judged yet
    optuna.storages.fail_stale_trials(study)  # Optuna's own check passes over it
    assert study.trials[beatless.number].state == TrialState.RUNNING
    assert fail_beatless_trials(study, grace_period=30) == [beatless.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[beatless.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    assert trials[fresh.number].state == TrialState.RUNNING
    (waiting,) = [t for t in trials if t.state == TrialState.WAITING]
    assert waiting.params == {"x": beatless.params["x"]}
    assert waiting.user_attrs == {"retry_of": beatless.number, "retry_count": 1}
    assert fail_beatless_trials(study, grace_period=30) == []  # failed once only


def _postgres_url() -> str | None:
    """SKCGCNN_TEST_POSTGRES_URL, else the server of .ci/postgres.sh if it answers."""
    url = os.environ.get("SKCGCNN_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError:
        return None
    url = "postgresql://skcgcnn:skcgcnn@127.0.0.1:5432/skcgcnn"  # as .ci/postgres.sh makes it
    try:
        make_storage(url)
    except Exception:  # another server, without that role or database, or no driver
        return None
    return url


@needs_data
@pytest.mark.timeout(300)
def test_postgresql_study_with_two_workers(data, monkeypatch):
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server (set SKCGCNN_TEST_POSTGRES_URL or run .ci/postgres.sh)")
    X, y = data
    monkeypatch.setattr("skcgcnn.tuning._tune._Run", _TakesTurns)  # both workers run trials
    name = f"skcgcnn-test-{os.getpid()}-{time.time_ns()}"
    try:
        result = tune(X, y, space=_tiny(), n_trials=4, max_epochs=4, storage=url,
                      study_name=name, n_workers=2, refit=False, verbose=0)
        trials = result.study.trials
        assert sum(t.state in FINISHED for t in trials) == 4
        assert len({t.user_attrs["worker"] for t in trials if t.state in FINISHED}) == 2
        again = tune(X, y, space=_tiny(), n_trials=4, max_epochs=4, storage=url,
                     study_name=name, refit=False, verbose=0)  # resumed: nothing to do
        assert len(again.study.trials) == len(trials)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=make_storage(url))
        except KeyError:
            pass


# -- OptunaSearchCV, storages, command line ---------------------------------------------
@needs_data
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:`optuna.terminator` module has been deprecated")
def test_pipeline_works_with_optuna_search_cv(data):
    integration = pytest.importorskip("optuna_integration")
    X, y = data
    space = SearchSpace.from_dict(dict(TINY, batch_size=[16, 32]))
    dists = pipeline_distributions(space)
    assert set(dists) == {"graph__atom_features", "cgcnn__module__n_conv", "cgcnn__optimizer",
                          "cgcnn__lr", "cgcnn__batch_size"}
    pipe = pipeline_from_params(dict(GOOD, batch_size=16), space, max_epochs=2, random_state=0)
    search = integration.OptunaSearchCV(pipe, dists, cv=2, n_trials=2, random_state=0,
                                        error_score="raise")
    search.fit(list(X[:40]), y[:40])
    assert len(search.trials_) == 2
    assert set(search.best_params_) == set(dists)
    assert search.predict(list(X[40:43])).shape == (3,)


def test_make_storage_kinds(tmp_path):
    from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage

    assert isinstance(make_storage(":memory:"), InMemoryStorage)
    assert isinstance(make_storage(str(tmp_path / "a" / "s.log")), JournalStorage)
    assert isinstance(make_storage(f"journal:{tmp_path / 'b.txt'}"), JournalStorage)
    rdb = make_storage(str(tmp_path / "c" / "s.db"))
    assert isinstance(rdb, RDBStorage) and rdb.url == f"sqlite:///{tmp_path / 'c' / 's.db'}"
    assert (tmp_path / "c" / "s.db").exists()
    with pytest.raises(ValueError, match="not understood"):
        make_storage(str(tmp_path / "study.txt"))


def _open_new_study_at_once(url: str, barrier, results) -> None:
    """What ``skcgcnn tune`` does first: open the storage and create (or load) the study."""
    try:
        barrier.wait(timeout=60)
        storage = make_storage(url)
        optuna.create_study(storage=storage, study_name="race", load_if_exists=True)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}"[:300])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lock", [True, False], ids=["file-lock", "retries-only"])
def test_processes_creating_one_new_sqlite_study_at_once_all_succeed(tmp_path, monkeypatch,
                                                                     lock):
    """Independent workers started together on a new SQLite file: before the fix one of
    them died with "IntegrityError ... alembic_version" or "table ... already exists"
    (8 of 10 rounds of 4 processes).  retries-only: without the file lock (PostgreSQL,
    a network file system), the retries alone must do."""
    import contextlib
    import multiprocessing

    from skcgcnn.tuning import _storage

    if not lock:
        monkeypatch.setattr(_storage, "_storage_lock", lambda url: contextlib.nullcontext())
    ctx = multiprocessing.get_context("fork")  # the children inherit the patch
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'study-{round_}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_new_study_at_once, args=(url, barrier, results))
                 for _ in range(4)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert outcomes == ["ok"] * 4, f"round {round_}: {outcomes}"
        assert optuna.get_all_study_names(url) == ["race"]


@needs_data
@pytest.mark.timeout(300)
def test_cli_runs_resumes_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    from skcgcnn.estimators import load_model

    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    args = ["tune", str(DATA), "--limit", "40", "--space", json.dumps(TINY), "--n-trials",
            "3", "--epochs", "2", "--output-dir", str(out), "--baselines", "dummy",
            "--save-model", str(tmp_path / "best.pt"), "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| number | valid_mae |" in printed and "dummy:" in printed
    assert (out / "study.db").exists() and list((out / "graphs").glob("*.npz"))
    model = load_model(tmp_path / "best.pt")
    X, _, _ = load_tuning_data(DATA, limit=3, random_state=1, cache=False)
    assert model.predict(list(X)).shape == (3,)
    (name,) = optuna.get_all_study_names(storage)  # skcgcnn-<hash of data and settings>
    assert name.startswith("skcgcnn-")
    # again: the same data and settings find their study, which has its 3 trials already
    assert main(args) == 0
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.trials) == 3
    assert set(study.user_attrs["baselines"]) == {"dummy"}
    # other settings make another study; forcing them into this one is refused
    assert main(args[:-5] + ["--epochs", "3", "--n-trials", "1", "-q"]) == 0
    assert len(optuna.get_all_study_names(storage)) == 2
    capsys.readouterr()
    assert main(args[:-5] + ["--epochs", "3", "--study-name", name, "-q"]) == 2
    assert "other data or settings" in capsys.readouterr().err


@needs_data
@pytest.mark.timeout(300)
def test_cli_exits_nonzero_when_every_new_trial_failed(tmp_path, monkeypatch, capsys):
    """A resumed study keeps its old best: if all of this run's trials fail (a disk or
    data fault), the command must not report that best and exit 0."""
    from skcgcnn.tuning._study import _Run

    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def args(n_trials: int) -> list[str]:
        return ["tune", str(DATA), "--limit", "30", "--space", json.dumps(TINY), "--storage",
                storage, "--study-name", "s", "--n-trials", str(n_trials), "--epochs", "1",
                "--baselines", "none", "-q"]

    assert main(args(2)) == 0
    capsys.readouterr()

    def broken(self, trial):
        raise OSError("simulated: graph cache unreadable")

    monkeypatch.setattr(_Run, "_evaluate", broken)
    assert main(args(4)) == 2
    err = capsys.readouterr().err
    assert "all 2 trials run in study 's' failed; the first was trial 2: OSError: " \
        "simulated: graph cache unreadable" in err
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2


def test_bad_structures_stop_the_study_or_are_left_out():
    from pymatgen.core import Lattice, Structure

    from skcgcnn.graph import StructureError

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    structures, y = [nacl] * 7 + [disordered], np.arange(8.0)
    space = SearchSpace.from_dict(dict(TINY, n_conv=1, optimizer="adam"))
    with pytest.raises(StructureError, match="structure 7 has a disordered"):
        tune(structures, y, space=space, n_trials=3, max_epochs=1, storage=":memory:",
             verbose=0)
    result = tune(structures, y, space=space, n_trials=1, max_epochs=1, storage=":memory:",
                  on_error="skip", verbose=0)
    # the disordered one is left out of the graphs, the trials and the refit
    assert result.best_pipeline.named_steps["cgcnn"].target_scaler_.n_samples_seen_ == 7
    assert len(result.trials) == 1 and result.trials["state"][0] == "COMPLETE"
    with pytest.raises(StructureError, match="structure 1 is a NoneType"):
        tune([nacl, None], [1.0, 2.0], storage=":memory:", n_trials=1)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not available")
def test_tuning_data_stop_at_a_bad_structure_unless_skipped(tmp_path, capsys):
    """`skcgcnn tune` stops at an unreadable CIF as the other commands do; --skip-errors
    (on_error="skip", the library default) leaves it out."""
    from skcgcnn.datasets import DatasetError

    rows = (DATA / "id_prop.csv").read_text().splitlines()[:4]
    (tmp_path / "id_prop.csv").write_text("\n".join(rows) + "\n")
    ids = [row.split(",")[0] for row in rows]
    for ident in ids[1:]:
        os.symlink(DATA / f"{ident}.cif", tmp_path / f"{ident}.cif")
    (tmp_path / f"{ids[0]}.cif").write_text("data_broken\n_cell_length_a 1\n")
    with pytest.raises(DatasetError, match=ids[0]):
        load_tuning_data(tmp_path, on_error="raise", cache=False)
    X, y, _ = load_tuning_data(tmp_path, cache=False)
    assert list(X.index) == ids[1:] and len(y) == 3
    assert main(["tune", str(tmp_path), "--n-trials", "1", "-q", "--no-cache"]) == 2
    assert f"{ids[0]}: unreadable CIF file" in capsys.readouterr().err
