"""The dask engine: ``predict_iter(..., client=client)`` on a LocalCluster of two worker
processes, against the same call in one process."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from skcgcnn.transformers import StructureGraphTransformer

from ._shared import SAMPLE500, needs_shared

distributed = pytest.importorskip("distributed")

pytestmark = [needs_shared, pytest.mark.usefixtures("structure_cache")]

CHUNK = 16


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each; closed with the module."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, worker_dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def model():
    """A tiny CGCNNRegressor Pipeline fitted on 40 crystals of sample-500."""
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import make_cgcnn_pipeline
    from skcgcnn.estimators import ShortFitWarning

    df = load_cgcnn_folder(SAMPLE500, limit=40)
    pipe = make_cgcnn_pipeline(max_epochs=2, batch_size=16, random_state=0, verbose=0,
                               module__atom_fea_len=8, module__n_conv=1,
                               module__h_fea_len=8, graph_params={"max_num_nbr": 8})
    with warnings.catch_warnings():  # 6 steps: a model to predict with, not to judge
        warnings.simplefilter("ignore", ShortFitWarning)
        return pipe.fit(df["structure"], df["target"].to_numpy())


@pytest.fixture(scope="module")
def cifs() -> list[str]:
    return sorted(str(p) for p in SAMPLE500.glob("*.cif"))[:120]


def _ids(paths):
    return [Path(p).stem for p in paths]


def _rows(chunks):
    """(id, position, value) of every row, in the order the chunks came."""
    return [(i, int(p), float(v)) for c in chunks
            for i, p, v in zip(c.ids, c.positions, c.values)]


@pytest.fixture(scope="module")
def one_process(model, cifs):
    from skcgcnn.streaming import predict_iter

    return list(predict_iter(model, cifs, ids=_ids(cifs), chunk_size=CHUNK))


def test_the_cluster_gives_the_rows_of_one_process(client, model, cifs, one_process):
    from skcgcnn.streaming import predict_iter

    stream = predict_iter(model, iter(cifs), ids=_ids(cifs), chunk_size=CHUNK,
                          client=client)
    chunks = list(stream)
    # the same chunks in input order, value for value (the same batches of the same
    # graphs through the same network)
    assert [c.ids for c in chunks] == [c.ids for c in one_process]
    assert _rows(chunks) == _rows(one_process)
    assert [i for i, _, _ in _rows(chunks)] == _ids(cifs)
    # as completed: the same rows, in some order
    loose = list(predict_iter(model, cifs, ids=_ids(cifs), chunk_size=CHUNK,
                              client=client, ordered=False))
    assert sorted(_rows(loose)) == sorted(_rows(one_process))


def test_a_generator_is_read_only_as_far_as_the_window(client, model, cifs):
    from skcgcnn._dask import default_window
    from skcgcnn.streaming import predict_iter

    pulled = []

    def source():
        for path in cifs:
            pulled.append(path)
            yield path

    stream = predict_iter(model, source(), chunk_size=4, client=client)
    first = next(stream)
    window = default_window(client)  # 2 workers x 1 thread x 2
    assert window == 4
    # the window's chunks, and the one submitted when the first came back
    assert len(pulled) == 4 * (window + 1)
    assert first.ids == [0, 1, 2, 3]
    stream.close()  # the tasks in flight are cancelled


def test_skip_ids_shard_and_std_as_in_one_process(client, model, cifs):
    from skcgcnn.streaming import predict_iter

    ids = _ids(cifs)
    kwargs = dict(ids=ids, chunk_size=CHUNK, skip_ids=ids[::3], shard=(1, 2))
    here = list(predict_iter(model, cifs, **kwargs))
    there = list(predict_iter(model, cifs, client=client, **kwargs))
    assert _rows(there) == _rows(here) and len(_rows(here)) > 20
    with pytest.raises(ValueError, match="return_std"):  # no variance head
        next(predict_iter(model, cifs, client=client, return_std=True))


def test_a_bad_input_is_listed_with_its_id_or_stops_the_run(client, model, cifs, tmp_path):
    from skcgcnn.streaming import predict_iter

    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 1\n")
    paths = cifs[:20] + [str(bad)] + cifs[20:30]
    chunks = list(predict_iter(model, paths, ids=_ids(paths), chunk_size=CHUNK,
                               on_error="skip", client=client))
    assert [(pos, ident) for c in chunks for pos, ident, _ in c.errors] == [(20, "broken")]
    assert [i for c in chunks for i in c.ids] == _ids(cifs[:30])
    with pytest.raises(ValueError, match="broken"):
        list(predict_iter(model, paths, ids=_ids(paths), chunk_size=CHUNK, client=client))


def test_not_a_client_is_refused(model, cifs):
    from skcgcnn.streaming import predict_iter

    with pytest.raises(TypeError, match="dask.distributed Client"):
        next(predict_iter(model, cifs, client="tcp://127.0.0.1:8786"))


def _killing_transformer(transformer, marker: Path, victim: str):
    """A copy of the fitted transformer whose worker process dies the first time it is
    given the chunk holding ``victim`` (the marker file, written first, records it)."""
    killer = KillOnce.__new__(KillOnce)
    killer.__dict__.update(transformer.__dict__)
    killer.marker, killer.victim = str(marker), victim
    return killer


class KillOnce(StructureGraphTransformer):
    """StructureGraphTransformer that ends its process (as a kill -9 would: no cleanup,
    no exception) on its first chunk with ``victim``; later calls behave normally."""

    def transform(self, X):
        if self.victim in list(X.index) and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(str(os.getpid()))
            os._exit(1)
        return super().transform(X)


def test_a_killed_workers_chunk_runs_again(client, model, cifs, one_process, tmp_path):
    from skcgcnn.streaming import predict_iter

    marker = tmp_path / "killed"
    victim = _ids(cifs)[2 * CHUNK + 3]  # in the third chunk
    killer = _killing_transformer(model.steps[0][1], marker, victim)
    before = set(client.run(os.getpid).values())
    chunks = list(predict_iter(model.steps[-1][1], cifs, ids=_ids(cifs), chunk_size=CHUNK,
                               transformer=killer, client=client))
    assert marker.exists()  # a worker did die on the chunk
    assert int(marker.read_text()) in before
    assert _rows(chunks) == _rows(one_process)  # and nothing is missing
    client.wait_for_workers(2, timeout=60)  # the nanny's new worker, for the next tests


def test_predict_command_on_a_scheduler(client, model, cifs, one_process, tmp_path):
    from skcgcnn import save_model
    from skcgcnn.cli import main

    path = tmp_path / "tiny.pt"
    save_model(model, path)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for cif in cifs[:3 * CHUNK]:  # the first three chunks of one_process
        os.symlink(cif, folder / Path(cif).name)
    out = tmp_path / "dask.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["predict", str(path), str(folder), "-o", str(out), "-q", "--chunk-size",
                     str(CHUNK), "--device", "cpu", "--dask-scheduler",
                     client.scheduler.address]) == 0
    with open(out, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    want = _rows(one_process)[:3 * CHUNK]
    assert [r[0] for r in rows] == [i for i, _, _ in want]
    np.testing.assert_allclose([float(r[2]) for r in rows], [v for _, _, v in want],
                               rtol=1e-6, atol=0)  # the written digits
