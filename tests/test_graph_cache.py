"""GraphCache: graphs built once per graph-parameter set, shared through checked files."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from ._shared import sample_series
from skcgcnn.graph import GraphCache, StructureError
from skcgcnn.transformers import StructureGraphTransformer


@pytest.fixture(scope="module")
def data():
    X, _ = sample_series(30)
    return X


def test_graph_cache_builds_once_and_shares_through_disk(data, tmp_path):
    structures = list(data)
    cache = GraphCache(structures, cache_dir=tmp_path)
    g8, kept = cache.get(8.0, 8)
    assert cache.get(8.0, 8)[0] is g8 and cache.builds == 1
    cache.get(6.0, 8)
    assert cache.builds == 2
    assert len(list(tmp_path.glob("graphs-*.npz"))) == 2
    # another process (here: another cache object) reads them instead of searching again
    other = GraphCache(structures, cache_dir=tmp_path)
    g8b, kept_b = other.get(8.0, 8)
    assert other.builds == 0
    np.testing.assert_array_equal(kept_b, np.arange(30))
    reference = StructureGraphTransformer(radius=8.0, max_num_nbr=8).fit_transform(structures)
    for graphs in (g8, g8b):
        featured = graphs.with_atom_features("cgcnn")
        np.testing.assert_array_equal(featured.nbr_idx, reference.nbr_idx)
        np.testing.assert_array_equal(featured.nbr_dist, reference.nbr_dist)
        np.testing.assert_array_equal(featured.collate()["atom_fea"],
                                      reference.collate()["atom_fea"])
    # other structures do not pick up these files
    assert GraphCache(structures[:29], cache_dir=tmp_path).get(8.0, 8)[0].nbr_idx.shape[0] \
        == reference.atom_ptr[29]


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # in the middle of the neighbour lists
    path.write_bytes(bytes(raw))


def _rewrite_a_distance(path: Path) -> None:
    """Change one neighbour distance and write the zip again: every CRC is right, only
    the file's own checksum can tell."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with np.load(path) as data:
        nbr_dist = data["nbr_dist"].copy()
    nbr_dist[3, 2] += 0.5
    buffer = io.BytesIO()
    np.save(buffer, nbr_dist)
    members["nbr_dist.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    with np.load(path) as data:  # a valid file, with a wrong distance
        assert data["nbr_dist"][3, 2] == nbr_dist[3, 2]


#: Ways to damage a graph cache file (test_tuning runs a study on each).
DAMAGE = {"truncated": _truncate, "bit-flipped": _flip_a_byte,
          "rewritten": _rewrite_a_distance}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_graph_cache_file_is_rebuilt(data, tmp_path, damage, caplog):
    structures, ids = list(data), list(data.index)
    clean, clean_kept = GraphCache(structures, ids=ids, cache_dir=tmp_path).get(8.0, 8)
    (path,) = tmp_path.glob("graphs-*.npz")
    DAMAGE[damage](path)
    caplog.set_level("WARNING", logger="skcgcnn.graph")
    cache = GraphCache(structures, ids=ids, cache_dir=tmp_path)
    graphs, kept = cache.get(8.0, 8)
    assert cache.builds == 1  # not read: rebuilt
    assert f"graph cache file {path} is damaged" in caplog.text
    np.testing.assert_array_equal(kept, clean_kept)
    for name in ("atom_ptr", "numbers", "nbr_idx", "nbr_dist"):
        np.testing.assert_array_equal(getattr(graphs, name), getattr(clean, name))
    # ... and written again, whole: the next reader takes it without a warning
    caplog.clear()
    again = GraphCache(structures, ids=ids, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.get(8.0, 8)[0].nbr_dist, clean.nbr_dist)
    assert again.builds == 0 and "damaged" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.stem +
                                                                ".lock"])


def test_bad_structures_raise_or_are_left_out_alike_built_and_read(tmp_path, caplog):
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    structures, ids = [nacl, disordered, nacl], ["a", "b", "c"]
    with pytest.raises(StructureError, match=r"structure 1 \(b\) has a disordered"):
        GraphCache(structures, ids=ids).get(8.0, 12)
    with pytest.raises(ValueError, match="on_error must be one of"):
        GraphCache(structures, on_error="ignore")
    caplog.set_level(logging.WARNING, logger="skcgcnn.graph")
    built, kept = GraphCache(structures, ids=ids, cache_dir=tmp_path,
                             on_error="skip").get(8.0, 12)
    assert "left out of the graphs for radius=8.0: structure 1 (b)" in caplog.text
    read, kept_read = GraphCache(structures, ids=ids, cache_dir=tmp_path,
                                 on_error="skip").get(8.0, 12)
    for graphs, rows in ((built, kept), (read, kept_read)):
        np.testing.assert_array_equal(rows, [0, 2])
        assert list(graphs.ids) == ["a", "c"] and graphs.input_positions is None
    np.testing.assert_array_equal(built.nbr_dist, read.nbr_dist)


def _hold(lock: str, log: str, tag: int) -> None:
    import time

    from skcgcnn._atomic import file_lock

    with file_lock(lock):
        with open(log, "a") as fh:
            fh.write(f"{tag} in\n")
        time.sleep(1.0)  # inside the lock: another process entering now would interleave
        with open(log, "a") as fh:
            fh.write(f"{tag} out\n")


def test_file_lock_lets_one_process_in_at_a_time(tmp_path):
    import multiprocessing

    lock, log = str(tmp_path / "x.lock"), str(tmp_path / "log")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hold, args=(lock, log, i)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    lines = Path(log).read_text().split()
    assert len(lines) == 12
    pairs = [lines[i:i + 4] for i in range(0, 12, 4)]  # "T in T out": never interleaved
    assert all(p[0] == p[2] and p[1] == "in" and p[3] == "out" for p in pairs), lines
    assert sorted(p[0] for p in pairs) == ["0", "1", "2"]
