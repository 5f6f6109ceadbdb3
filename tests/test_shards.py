"""Shards: predict_iter(shard=), ``skcgcnn predict --shard I/N`` and ``skcgcnn merge``."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from ._shared import SAMPLE500, needs_shared

pytestmark = [needs_shared, pytest.mark.usefixtures("structure_cache")]

REPO = Path(__file__).resolve().parents[1]


def _run(argv):
    from skcgcnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def _rows(path):
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def _same_rows(got, want):
    """The same ids and targets in the same order; predictions within float rounding
    (other chunks make other batches)."""
    assert [r[:2] for r in got] == [r[:2] for r in want]
    np.testing.assert_allclose([float(r[2]) for r in got], [float(r[2]) for r in want],
                               rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny CGCNNRegressor Pipeline fitted on 60 crystals of sample-500, saved."""
    from skcgcnn import save_model
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import make_cgcnn_pipeline

    df = load_cgcnn_folder(SAMPLE500, limit=60)
    pipe = make_cgcnn_pipeline(max_epochs=2, batch_size=16, random_state=0, verbose=0,
                               module__atom_fea_len=8, module__n_conv=1,
                               module__h_fea_len=8, graph_params={"max_num_nbr": 8})
    pipe.fit(df["structure"], df["target"].to_numpy())
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(pipe, path)
    return path


# -- the split ------------------------------------------------------------------------
def test_shard_of_is_a_fixed_hash_of_the_id():
    from skcgcnn.streaming import shard_of

    # BLAKE2b-64 of the id's text, little-endian, modulo n: these values never change
    assert [shard_of(f"mp-{k}", 4) for k in range(6)] == [2, 1, 0, 3, 2, 2]
    assert shard_of(7, 32) == shard_of("7", 32)  # ids are hashed as text
    sizes = np.bincount([shard_of(str(i), 8) for i in range(8000)], minlength=8)
    assert sizes.min() > 900 and sizes.max() < 1100  # nearly equal shards


def test_predict_iter_shards_partition_the_inputs(model_file):
    from skcgcnn.estimators import load_model
    from skcgcnn.streaming import predict_iter, shard_of

    model = load_model(model_file)
    cifs = sorted(str(p) for p in SAMPLE500.glob("*.cif"))[:40]
    ids = [Path(p).stem for p in cifs]
    whole = {i: v for c in predict_iter(model, cifs, ids=ids, chunk_size=7)
             for i, v in zip(c.ids, c.values)}
    seen = []
    for k in range(3):
        chunks = list(predict_iter(model, cifs, ids=ids, chunk_size=7, shard=(k, 3)))
        got = [i for c in chunks for i in c.ids]
        assert got == [i for i in ids if shard_of(i, 3) == k]  # input order kept
        positions = np.concatenate([c.positions for c in chunks])
        assert [ids[p] for p in positions] == got  # positions in the whole stream
        for c in chunks:
            np.testing.assert_allclose(c.values, [whole[i] for i in c.ids], rtol=1e-5,
                                       atol=1e-6)
        seen += got
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("shard", [(3, 3), (-1, 2), (0, 0), "0/2", (0.0, 2), (True, 2)])
def test_bad_shards_are_refused(model_file, shard):
    from skcgcnn.estimators import load_model
    from skcgcnn.streaming import predict_iter

    with pytest.raises(ValueError, match="0 <= i < n"):
        next(predict_iter(load_model(model_file), [], shard=shard))


# -- the command line -------------------------------------------------------------------
@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/4", "0/0"])
def test_predict_refuses_a_bad_shard_option(model_file, text):
    status, _, err = _run(["predict", model_file, SAMPLE500, f"--shard={text}"])
    assert status == 2 and "--shard" in err, err
    assert "is not I/N" in err or "I must be 0 to N-1" in err, err


def _folder(tmp_path, n):
    """A CGCNN folder with the first n crystals of sample-500 (links to its CIFs)."""
    root = tmp_path / f"data{n}"
    root.mkdir()
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:n]
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        ident = line.split(",")[0]
        os.symlink(SAMPLE500 / f"{ident}.cif", root / f"{ident}.cif")
    return root


def test_shard_default_output_resume_and_merge_checks(model_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _folder(tmp_path, 30)
    for k in (0, 1):
        status, stdout, err = _run(["predict", model_file, data, "--shard", f"{k}/2", "-q"])
        assert status == 0, err
        assert f"of shard {k}/2" in stdout
    files = [tmp_path / f"predictions.shard-{k}-of-2.csv" for k in (0, 1)]
    assert not (tmp_path / "predictions.csv").exists()
    ids = [line.split(",")[0] for line in (data / "id_prop.csv").read_text().split()]
    assert sorted(r[0] for f in files for r in _rows(f)) == sorted(ids)

    # --resume takes the shard's default file without --output; a file of another
    # shard is refused
    status, stdout, err = _run(["predict", model_file, data, "--shard", "1/2", "--resume",
                                "-q"])
    assert status == 0 and "predicted 0 crystals" in stdout, err
    status, _, err = _run(["predict", model_file, data, "--shard", "0/2", "--resume",
                           "-o", files[1], "-q"])
    assert status == 1 and "ids of other shards" in err, err

    # merge: the input order, every input once
    status, stdout, err = _run(["merge", *files, "-o", "all.csv", "--inputs", data])
    assert status == 0, err
    assert [r[0] for r in _rows("all.csv")] == ids and "merged 30 rows" in stdout
    # a shard missing, a file given twice, a shard's rows renamed into another shard
    status, _, err = _run(["merge", files[0], "-o", "x.csv"])
    assert status == 1 and "1 of the 2 shards have no file: 1" in err
    status, _, err = _run(["merge", files[0], files[0], files[1], "-o", "x.csv"])
    assert status == 1 and "both shard 0 of 2" in err
    renamed = tmp_path / "predictions.shard-0-of-1.csv"
    renamed.write_text(files[0].read_text() + files[0].read_text().splitlines(True)[0])
    status, _, err = _run(["merge", renamed, "-o", "x.csv"])
    assert status == 1 and "have more than one row" in err, err
    other = tmp_path / "other.csv"
    other.write_text(files[0].read_text())
    status, _, err = _run(["merge", other, files[0], "-o", "x.csv"])
    assert status == 1 and "have more than one row" in err
    # a missing input: listed on standard output, non-zero exit, nothing written
    lost = _rows(files[1])[0][0]
    (tmp_path / "cut.csv").write_text("".join(
        line for line in files[1].read_text().splitlines(True)
        if not line.startswith(f"{lost},")))
    status, stdout, err = _run(["merge", files[0], "cut.csv", "-o", "y.csv", "--inputs",
                                data])
    assert status == 1 and stdout.split() == [lost] and "1 of the 30 inputs" in err
    assert not (tmp_path / "y.csv").exists()
    status, stdout, err = _run(["merge", files[0], "cut.csv", "-o", "y.csv", "--inputs",
                                data, "--allow-missing"])
    assert status == 0 and stdout.split() == [lost] and len(_rows("y.csv")) == 29
    # ids that are no input of --inputs
    status, _, err = _run(["merge", *files, "-o", "z.csv", "--inputs", _folder(tmp_path, 5)])
    assert status == 1 and "not among the --inputs" in err


def test_shards_of_an_archive_parse_only_their_own_crystals(model_file, tmp_path,
                                                           monkeypatch):
    from skcgcnn.datasets import _codec

    monkeypatch.chdir(tmp_path)
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:24]
    with tarfile.open(tmp_path / "cifs.tar.gz", "w:gz") as tar:
        for line in lines:
            ident = line.split(",")[0]
            tar.add(SAMPLE500 / f"{ident}.cif", arcname=f"cifs/{ident}.cif")
    (tmp_path / "id_prop.csv").write_text("\n".join(lines) + "\n")
    parsed = []
    real = _codec._parse_batch
    monkeypatch.setattr(_codec, "_parse_batch",
                        lambda batch, *rest: parsed.extend(batch) or real(batch, *rest))
    status, _, err = _run(["predict", model_file, tmp_path, "-o", "whole.csv", "-q",
                           "--no-cache"])
    assert status == 0, err
    assert len(parsed) == 24
    parsed.clear()
    status, _, err = _run(["predict", model_file, tmp_path, "--shard", "1/3", "-q",
                           "--no-cache"])
    assert status == 0, err
    shard_rows = _rows("predictions.shard-1-of-3.csv")
    assert len(parsed) == len(shard_rows) < 24
    whole = {r[0]: r for r in _rows("whole.csv")}
    _same_rows(shard_rows, [whole[r[0]] for r in shard_rows])


def test_an_empty_shard_writes_an_empty_file(model_file, tmp_path, monkeypatch):
    from skcgcnn.streaming import shard_of

    monkeypatch.chdir(tmp_path)
    data = _folder(tmp_path, 3)
    ids = [line.split(",")[0] for line in (data / "id_prop.csv").read_text().split()]
    empty = next(k for k in range(8) if all(shard_of(i, 8) != k for i in ids))
    status, _, err = _run(["predict", model_file, data, "--shard", f"{empty}/8", "-q"])
    assert status == 0, err
    assert (tmp_path / f"predictions.shard-{empty}-of-8.csv").read_text() == ""


# -- three shards as three processes, one killed and resumed ----------------------------
def _predict_command(model_file, *extra):
    return [sys.executable, "-m", "skcgcnn", "predict", str(model_file), str(SAMPLE500),
            "--device", "cpu", "-q", *extra]


@pytest.mark.slow
def test_three_shard_processes_one_killed_and_resumed_equal_one_process(model_file,
                                                                        tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the one-process run, in this process (the shards are processes of their own)
    status, _, err = _run(["predict", model_file, SAMPLE500, "-o", tmp_path / "one.csv",
                           "--device", "cpu", "-q"])
    assert status == 0, err
    procs = [subprocess.Popen(_predict_command(model_file, "--shard", f"{k}/3",
                                               "--chunk-size", "10"),
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
             for k in range(3)]
    killed = tmp_path / "predictions.shard-1-of-3.csv"
    try:
        while procs[1].poll() is None:  # kill shard 1 once its first rows are written
            if killed.exists() and killed.stat().st_size > 0:
                procs[1].send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == procs[2].returncode == 0, errors
    # whether the kill came before the end or not, leave shard 1 part way through a
    # row, as a kill during a write does
    lines = killed.read_text().splitlines(keepends=True)
    keep = min(10, len(lines) - 1)
    killed.write_text("".join(lines[:keep]) + lines[keep][:4])
    files = [tmp_path / f"predictions.shard-{k}-of-3.csv" for k in range(3)]
    status, _, err = _run(["merge", *files, "-o", tmp_path / "all.csv"])
    assert status == 1 and "unfinished line" in err

    again = subprocess.run(_predict_command(model_file, "--shard", "1/3", "--resume"),
                           cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert "removing the unfinished last line" not in again.stdout  # -q: said at INFO
    assert killed.read_text().startswith("".join(lines[:keep]))
    status, stdout, err = _run(["merge", *files, "-o", tmp_path / "all.csv", "--inputs",
                                SAMPLE500])
    assert status == 0, err
    merged, whole = _rows(tmp_path / "all.csv"), _rows(tmp_path / "one.csv")
    assert len(whole) == 500
    _same_rows(merged, whole)
