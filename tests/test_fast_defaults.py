"""Issue 25: fit and predict set the CPU up themselves, schedules of any length, a
warning for fits too short to mean anything, the epoch table by default."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from skcgcnn import CGCNNRegressor, StructureGraphTransformer, _cpu, _malloc
from skcgcnn.estimators import EpochTable, PerBatchLRScheduler, ShortFitWarning
from skcgcnn.estimators._recipe import MIN_STEPS, warmup_steps

from ._shared import SAMPLE500, load_structures, needs_shared

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=16)


@pytest.fixture(scope="module")
def sample():
    ids, structures, y = load_structures(str(SAMPLE500), 40)
    return StructureGraphTransformer().fit_transform(structures), np.asarray(y)


# -- threads: never more than the free cores ------------------------------------------
@pytest.mark.parametrize("others, ceiling, cores, expected", [
    (0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.4, 2, 2, 1), (1.0, 2, 2, 1), (3.0, 2, 2, 1),
    (0.0, 1, 2, 1), (1.0, 8, 8, 7), (2.5, 8, 8, 5), (0.0, 4, 2, 2), (-0.2, 2, 2, 2)])
def test_threads_for_leaves_the_cores_others_take(others, ceiling, cores, expected):
    assert _cpu.threads_for(others, ceiling, cores) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                    reason="reads /proc; needs two cores")
def test_a_busy_process_beside_the_call_gets_its_core():
    # it says when it is in its loop (the test waits for that line, not for a set time)
    busy = subprocess.Popen([sys.executable, "-c", "print('busy', flush=True)\n"
                             "while True: pass"], stdout=subprocess.PIPE)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert busy.stdout.readline() == b"busy\n"
        assert _cpu._running_elsewhere() >= 1
        with _cpu.cpu_settings("cpu") as settings:
            assert torch.get_num_threads() == 1 == settings.threads
            with _cpu.cpu_settings("cpu"):  # nested: the outer one's settings
                assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # set back
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)


def test_the_epoch_look_counts_other_processes_not_this_one(monkeypatch):
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(_cpu.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(_cpu, "_machine_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(_cpu, "_own_seconds", lambda: clock["own"])
    monkeypatch.setattr(_cpu, "_running_elsewhere", lambda: 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _cpu.cpu_settings("cpu") as settings:
            settings.cores = 2
            assert settings.threads == 2
            clock.update(t=10.0, busy=20.0, own=19.5)  # this process used both cores
            _cpu.adjust_threads()
            assert torch.get_num_threads() == 2
            clock.update(t=20.0, busy=40.0, own=29.5)  # another process took 1 core
            _cpu.adjust_threads()
            assert torch.get_num_threads() == 1
            clock.update(t=30.0, busy=50.0, own=39.5)  # it is gone again
            _cpu.adjust_threads()
            assert torch.get_num_threads() == 2
        _cpu.adjust_threads()  # no call in progress: nothing to do
    finally:
        torch.set_num_threads(before)


def test_deterministic_algorithms_keep_the_thread_count(monkeypatch):
    # the thread count changes float32 sums (the pipeline-consistency test failed in CI
    # when one of its two fits ran with 1 thread and the other with 2): torch's switch
    # for reproducible results keeps it
    monkeypatch.setattr(_cpu, "_running_elsewhere", lambda: 5)
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)
    try:
        with _cpu.cpu_settings("cpu") as settings:
            assert torch.get_num_threads() == 1 == settings.threads
        torch.use_deterministic_algorithms(True)
        with _cpu.cpu_settings("cpu") as settings:
            assert torch.get_num_threads() == 2 == settings.threads
            _cpu.adjust_threads()
            assert torch.get_num_threads() == 2
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(before)


def test_no_cpu_settings_on_other_devices_or_when_switched_off(monkeypatch):
    monkeypatch.setattr(_cpu, "_running_elsewhere", lambda: 5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _cpu.cpu_settings("cuda"):
            assert torch.get_num_threads() == 2
        monkeypatch.setenv("SKCGCNN_CPU_SETTINGS", "0")
        with _cpu.cpu_settings("cpu"):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_malloc_settings_last_for_the_block_only(monkeypatch):
    calls = []
    real = _malloc._libc_functions()
    if real is None:
        pytest.skip("not glibc")
    monkeypatch.setattr(_malloc, "_libc_functions",
                        lambda: (lambda k, v: calls.append((k, v)) or 1,
                                 lambda pad: calls.append(("trim", pad)) or 1))
    monkeypatch.setattr(_malloc, "_done", False)
    with _malloc.keep_freed_memory_for_a_while() as outer:
        with _malloc.keep_freed_memory_for_a_while() as inner:
            assert not inner.applied
        assert calls == [(_malloc._M_MMAP_MAX, 0), (_malloc._M_TRIM_THRESHOLD, 2 ** 31 - 1)]
    assert outer.applied
    assert calls[2:] == [(_malloc._M_MMAP_MAX, 65536), (_malloc._M_TRIM_THRESHOLD, 128 * 1024),
                         ("trim", 0)]
    calls.clear()
    monkeypatch.setattr(_malloc, "_done", True)  # the whole process asked for them
    with _malloc.keep_freed_memory_for_a_while() as block:
        assert not block.applied
    assert calls == []


@needs_shared
def test_fit_and_predict_set_the_thread_count_back(sample, monkeypatch):
    graphs, y = sample
    seen = []
    monkeypatch.setattr(_cpu, "_running_elsewhere", lambda: 1)  # as if one core is busy
    monkeypatch.setattr(_cpu, "_machine_busy_seconds", lambda: None)  # no epoch looks
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reg = CGCNNRegressor(max_epochs=2, batch_size=20, random_state=0, verbose=0, **TINY)
        reg.set_params(callbacks=[("seen", _Seen(seen))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShortFitWarning)
            reg.fit(graphs, y)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        reg.predict(graphs)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _Seen(Callback):
    """Notes the torch thread count at the end of each epoch."""

    def __init__(self, seen):
        self.seen = seen

    def on_epoch_end(self, net, **kwargs):
        self.seen.append(torch.get_num_threads())


# -- schedules of any length -------------------------------------------------------------
@pytest.mark.parametrize("total", range(1, 25))
@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_work_for_any_number_of_steps(schedule, total):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW(params, lr=0.01)
    cb = PerBatchLRScheduler(schedule, warmup_fraction=0.1).initialize()

    class Net:
        optimizer_ = opt
        lr = 0.01
        max_epochs = total
        batch_size = 4

        def get_params_for(self, prefix):
            return {}

    cb.on_epoch_begin(Net(), dataset_train=range(3))  # one batch per epoch
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(total):
        opt.step()
        cb._step(Net(), cb.lr_scheduler_)
        lrs.append(opt.param_groups[0]["lr"])
    assert all(math.isfinite(v) and 0 <= v <= 0.01 + 1e-12 for v in lrs)
    peak = int(np.argmax(lrs[:total]))
    if total >= 3:  # at least one step of warm-up, then the decay
        assert peak >= 1 and lrs[0] < lrs[peak] and lrs[total - 1] < lrs[peak]
    else:  # no room for both phases
        assert lrs[0] > 0


def test_warmup_steps():
    assert [warmup_steps(n, 0.1) for n in (1, 2, 3, 9, 10, 19, 20, 1000)] == \
        [0, 1, 1, 1, 1, 1, 2, 100]
    assert warmup_steps(100, 0.0) == 0


@needs_shared
@pytest.mark.parametrize("n, epochs, batch_size", [(20, 10, 20), (40, 5, 20)])
def test_small_fits_train_and_warn(sample, n, epochs, batch_size):
    """10 steps (100 crystals x 10 epochs, 250 x 5 in batches of 128) crashed in torch's
    one-cycle schedule (a warm-up of 0 steps); now they train, and say the fit is too
    short."""
    graphs, y = sample
    reg = CGCNNRegressor(max_epochs=epochs, batch_size=batch_size, random_state=0, verbose=0,
                         **TINY)
    with pytest.warns(ShortFitWarning, match=r"trains \d+ optimiser step\(s\)") as caught:
        reg.fit(graphs[:n], y[:n])
    assert caught[0].filename == __file__  # pointed at the caller's line
    losses = reg.history[:, "train_loss"]
    assert all(math.isfinite(v) for v in losses)


@needs_shared
def test_a_long_enough_fit_does_not_warn(sample):
    graphs, y = sample
    epochs = math.ceil(MIN_STEPS / 4)  # 40 crystals in batches of 10: 4 steps an epoch
    reg = CGCNNRegressor(max_epochs=epochs, batch_size=10, random_state=0, verbose=0, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortFitWarning)
        reg.fit(graphs, y)
    assert len(reg.history) == epochs
    with pytest.warns(ShortFitWarning, match=f"trains {4 * (epochs - 1)} optimiser"):
        reg.set_params(max_epochs=epochs - 1).fit(graphs, y)


# -- the epoch table ---------------------------------------------------------------------
@needs_shared
def test_the_epoch_table_is_shown_by_default_on_stderr_without_colours(sample, capsys):
    graphs, y = sample
    assert CGCNNRegressor().verbose == 1
    reg = CGCNNRegressor(max_epochs=2, batch_size=20, random_state=0, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortFitWarning)
        reg.fit(graphs, y)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "dur"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2"]
    assert "\x1b[" not in err
    assert isinstance(dict(reg.callbacks_)["print_log"], EpochTable)


@needs_shared
def test_verbose_0_prints_nothing(sample, capsys):
    graphs, y = sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortFitWarning)
        CGCNNRegressor(max_epochs=2, batch_size=20, verbose=0, **TINY).fit(graphs, y)
    assert capsys.readouterr() == ("", "")


def test_the_epoch_table_is_coloured_on_a_terminal(monkeypatch):
    class Terminal:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return True

    table = EpochTable().initialize()
    row = {"epoch": 1, "train_loss": 0.5, "train_loss_best": True, "dur": 0.1}
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    table._sink(table.table(row), verbose=1)
    assert "\x1b[" in term.text
    monkeypatch.setattr(term, "isatty", lambda: False)
    assert "\x1b[" not in table.table(row)
