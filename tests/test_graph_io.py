"""Graph files (skcgcnn.graph, graph/_io.py): exact round trips, and no code run from a file."""
from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from skcgcnn import StructureGraphTransformer
from skcgcnn.graph import GraphCollection
from skcgcnn.graph import GraphFileError, UntrustedGraphFileError, load_graphs, save_graphs
from skcgcnn.graph._io import FORMAT

from .test_graph import bcc_iron, perovskite, rock_salt


class RunsCode:
    """Unpickling this creates the file ``path``: a stand-in for any code a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def graphs_of(ids, **params) -> GraphCollection:
    structures = pd.Series([rock_salt(), bcc_iron(), perovskite()], index=ids, dtype=object)
    return StructureGraphTransformer(**params).fit_transform(structures)


def assert_same_graphs(a: GraphCollection, b: GraphCollection) -> None:
    for name in ("atom_ptr", "numbers", "nbr_idx", "nbr_dist"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert b.ids.tolist() == a.ids.tolist()
    assert [type(v) for v in b.ids] == [type(v) for v in a.ids]
    assert b.graph_params == a.graph_params
    assert b.atom_features.name == a.atom_features.name
    assert b.atom_features.feature_names == a.atom_features.feature_names
    np.testing.assert_array_equal(b.atom_features.table, a.atom_features.table)
    np.testing.assert_array_equal(b.atom_features.available, a.atom_features.available)


def test_round_trip_is_exact(tmp_path):
    graphs = graphs_of(["mp-22862", "mp-13", "mp-5229"], radius=6.5, max_num_nbr=9, step=0.25,
                       dmin=0.5, atom_features=("group", "period"))
    targets = np.array([[-2.1, 1.0], [np.nan, 0.0], [-3.5, 1.0]])
    path = tmp_path / "graphs.npz"
    save_graphs(path, graphs, targets, ["e_form", "metal"],
                info={"source": "somewhere", "errors": [[3, "mp-1", "bad"]]})
    assert zipfile.is_zipfile(path)
    bundle = load_graphs(path)
    assert_same_graphs(graphs, bundle.graphs)
    assert bundle.graphs.graph_params == {"radius": 6.5, "max_num_nbr": 9, "dmin": 0.5,
                                          "step": 0.25}
    np.testing.assert_array_equal(bundle.targets, targets)  # NaN where NaN
    assert bundle.targets.dtype == np.float64
    assert bundle.target_names == ["e_form", "metal"]
    assert bundle.info == {"source": "somewhere", "errors": [[3, "mp-1", "bad"]]}
    # the loaded graphs batch exactly as the saved ones
    for key, value in graphs.collate().items():
        np.testing.assert_array_equal(bundle.graphs.collate()[key], value)


def test_integer_ids_and_the_collection_methods(tmp_path):
    graphs = graphs_of(np.array([7, 11, 13]))
    path = tmp_path / "g"
    graphs.save(path, targets=[1.0, 2.0, 3.0])
    assert path.is_file()  # no suffix added
    again = GraphCollection.load(path)
    assert_same_graphs(graphs, again)
    assert again.ids.tolist() == [7, 11, 13] and type(again.ids[0]) is int
    bundle = load_graphs(path)
    assert bundle.targets.tolist() == [[1.0], [2.0], [3.0]]
    assert bundle.target_names == ["target0"]


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "graphs.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT, "graphs": RunsCode(marker)}))
    with pytest.raises(UntrustedGraphFileError, match="trusted=True"):
        load_graphs(path)
    with pytest.raises(UntrustedGraphFileError):
        GraphCollection.load(path)
    assert not marker.exists()


def test_npz_with_a_pickled_array_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "graphs.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = RunsCode(marker)
    np.savez(path, metadata=evil)
    with pytest.raises(GraphFileError, match="not a readable graph file"):
        load_graphs(path, trusted=True)
    assert not marker.exists()


def test_old_pickle_file_is_read_when_trusted(tmp_path):
    graphs = graphs_of(["a", "b", "c"])
    path = tmp_path / "old.pkl"
    old = {"format": FORMAT, "version": 1, "graphs": graphs, "ids": list(graphs.ids),
           "targets": np.array([[1.0], [2.0], [3.0]]), "target_names": ["y"],
           "source": "folder", "errors": [(4, "d", "bad")]}
    path.write_bytes(pickle.dumps(old))
    with pytest.raises(UntrustedGraphFileError):
        load_graphs(path)
    bundle = load_graphs(path, trusted=True)
    assert_same_graphs(graphs, bundle.graphs)
    assert bundle.targets.tolist() == [[1.0], [2.0], [3.0]] and bundle.target_names == ["y"]
    assert bundle.info == {"source": "folder", "errors": [[4, "d", "bad"]]}


def test_damaged_files_are_refused(tmp_path):
    graphs = graphs_of(["a", "b", "c"])
    good = tmp_path / "good.npz"
    graphs.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.npz"
    buffer = bytearray(data)
    start = data.index(b"nbr_dist.npy") + 200  # inside the stored distances
    buffer[start] ^= 0xFF
    flipped.write_bytes(bytes(buffer))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    for path in (truncated, flipped, text):
        with pytest.raises(GraphFileError):
            load_graphs(path)


def test_inconsistent_arrays_are_refused(tmp_path):
    graphs = graphs_of(["a", "b", "c"])
    bad = GraphCollection(graphs.atom_ptr, graphs.numbers, graphs.nbr_idx + 5,
                          graphs.nbr_dist, graphs.ids, atom_features=graphs.atom_features)
    path = tmp_path / "bad.npz"
    save_graphs(path, bad)
    with pytest.raises(GraphFileError, match="neighbour indices outside their crystal"):
        load_graphs(path)


def test_ids_that_json_cannot_hold_are_refused(tmp_path):
    graphs = graphs_of(["a", "b", "c"])
    graphs.ids[1] = ("a", 1)
    with pytest.raises(ValueError, match=r"id of crystal 1 is \('a', 1\)"):
        save_graphs(tmp_path / "g.npz", graphs)
    assert not (tmp_path / "g.npz").exists()


def test_positions_of_skipped_structures_round_trip(tmp_path):
    from pymatgen.core import Lattice, Structure

    empty = Structure(Lattice.cubic(4), [], [])
    graphs = StructureGraphTransformer(on_error="skip").fit_transform(
        [rock_salt(), empty, bcc_iron(), empty])
    assert graphs.input_positions.tolist() == [0, 2] and graphs.n_inputs == 4
    graphs.save(tmp_path / "g.npz")
    again = GraphCollection.load(tmp_path / "g.npz")
    assert_same_graphs(graphs, again)
    assert again.input_positions.tolist() == [0, 2] and again.n_inputs == 4
    assert again.skipped_positions.tolist() == [1, 3]
