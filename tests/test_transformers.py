from __future__ import annotations

import pickle
import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Molecule, Structure
from sklearn.base import clone

from skcgcnn import StructureGraphTransformer
from skcgcnn.graph import GraphCollection, StructureError

from ._shared import SAMPLE_REGRESSION, needs_shared
from .test_graph import bcc_iron, perovskite, rock_salt


def test_transform_builds_a_collection():
    tr = StructureGraphTransformer().fit([rock_salt(), bcc_iron()])
    graphs = tr.transform([rock_salt(), bcc_iron(), perovskite()])
    assert isinstance(graphs, GraphCollection)
    assert len(graphs) == 3 and graphs.n_atoms.tolist() == [8, 2, 5]
    assert graphs.ids.tolist() == [0, 1, 2]
    assert graphs.graph_params == {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}
    assert tr.n_atom_features_ == 92 and tr.kept_indices_.tolist() == [0, 1, 2]
    assert len(tr.get_feature_names_out()) == 92


def test_ids_follow_the_one_id_rule():
    tagged = [rock_salt(), bcc_iron()]
    for structure, ident in zip(tagged, ["mp-22862", "mp-13"]):
        structure.properties["id"] = ident
    assert StructureGraphTransformer().fit_transform(tagged).ids.tolist() == ["mp-22862",
                                                                             "mp-13"]
    tagged[1].properties.clear()
    assert StructureGraphTransformer().fit_transform(tagged).ids.tolist() == [0, 1]


def test_parameters_reach_the_graphs():
    graphs = StructureGraphTransformer(radius=6.0, max_num_nbr=8, step=0.5,
                                       atom_features="onehot").fit_transform([rock_salt()])
    assert graphs.nbr_idx.shape == (8, 8)
    assert graphs.radius == 6.0 and graphs.step == 0.5
    assert graphs.atom_features.n_features == 100


def test_series_and_dataframe_give_ids():
    s = pd.Series([rock_salt(), bcc_iron()], index=["mp-22862", "mp-13"])
    assert StructureGraphTransformer().fit_transform(s).ids.tolist() == ["mp-22862", "mp-13"]
    df = pd.DataFrame({"structure": s, "e": [1.0, 2.0]})
    assert StructureGraphTransformer().fit_transform(df).ids.tolist() == ["mp-22862", "mp-13"]


def test_numpy_array_of_structures():
    arr = np.empty(2, dtype=object)
    arr[:] = [rock_salt(), bcc_iron()]
    assert len(StructureGraphTransformer().fit_transform(arr)) == 2


@needs_shared
def test_cif_paths_and_ase_atoms_match_structures():
    from pymatgen.io.ase import AseAtomsAdaptor

    path = SAMPLE_REGRESSION / "1000041.cif"
    structure = Structure.from_file(str(path))
    atoms = AseAtomsAdaptor.get_atoms(structure)
    graphs = StructureGraphTransformer().fit_transform([structure, str(path), path, atoms])
    for i in (1, 2):
        np.testing.assert_array_equal(graphs.graph(i)[1], graphs.graph(0)[1])
        np.testing.assert_array_equal(graphs.graph(i)[2], graphs.graph(0)[2])
    # the ASE round trip moves coordinates in the last bits: exact ties may reorder
    np.testing.assert_array_equal(graphs.graph(3)[0], graphs.graph(0)[0])
    np.testing.assert_allclose(graphs.graph(3)[2], graphs.graph(0)[2], atol=1e-5)


@needs_shared
def test_two_jobs_give_the_same_graphs():
    paths = sorted(SAMPLE_REGRESSION.glob("*.cif"))
    structures = [Structure.from_file(str(p)) for p in paths] * 13  # >= 128: two workers
    structures[5] = Structure(Lattice.cubic(4), [], [])
    one = StructureGraphTransformer(on_error="skip").fit(structures)
    graphs_one = one.transform(structures)
    two = StructureGraphTransformer(n_jobs=2, on_error="skip").fit(structures)
    graphs_two = two.transform(structures)
    assert one.errors_ == two.errors_ and [e[0] for e in two.errors_] == [5]
    one, two = graphs_one, graphs_two
    assert one.ids.tolist() == two.ids.tolist() and len(two) == 129
    np.testing.assert_array_equal(one.nbr_idx, two.nbr_idx)
    np.testing.assert_array_equal(one.nbr_dist, two.nbr_dist)
    np.testing.assert_array_equal(one.atom_ptr, two.atom_ptr)


@needs_shared
def test_two_jobs_on_cif_paths_give_the_same_graphs():
    # atom counts of paths are unknown before parsing: the workers send their graphs back
    paths = [str(p) for p in sorted(SAMPLE_REGRESSION.glob("*.cif"))] * 13
    one = StructureGraphTransformer().fit_transform(paths)
    two = StructureGraphTransformer(n_jobs=2).fit_transform(paths)
    for field in ("atom_ptr", "numbers", "nbr_idx", "nbr_dist"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))


def test_failed_structures_leave_no_rows_behind():
    disordered = Structure(Lattice.cubic(4), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    tr = StructureGraphTransformer(on_error="skip").fit()
    graphs = tr.transform([rock_salt(), disordered, bcc_iron(), disordered])
    alone = tr.transform([rock_salt(), bcc_iron()])
    assert graphs.ids.tolist() == [0, 2] and graphs.n_atoms.tolist() == [8, 2]
    for field in ("atom_ptr", "numbers", "nbr_idx", "nbr_dist"):
        np.testing.assert_array_equal(getattr(graphs, field), getattr(alone, field))


def test_a_raise_in_parallel_work_cleans_up():
    import gc

    structures = [rock_salt(), bcc_iron()] * 70 + [Structure(Lattice.cubic(4), [], [])]
    with pytest.raises(StructureError, match="structure 140 has no sites"):
        StructureGraphTransformer(n_jobs=2).fit_transform(structures)
    assert gc.get_freeze_count() == 0
    # and the next parallel transform works
    assert len(StructureGraphTransformer(n_jobs=2).fit_transform(structures[:140])) == 140


def test_chunks_cover_every_position_once():
    from skcgcnn.graph._parallel import _chunks

    sizes = np.random.default_rng(0).integers(1, 200, size=1000)
    for n_jobs in (1, 2, 4):
        bounds = _chunks(sizes, target=500, n_jobs=n_jobs)
        assert bounds[0][0] == 0 and bounds[-1][1] == 1000
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    guided = [sizes[lo:hi].sum() for lo, hi in _chunks(sizes, target=500, n_jobs=2)]
    assert guided[0] > 4 * guided[-2]  # the ranges shrink toward the end
    assert _chunks(np.zeros(0, dtype=int), target=500) == []


def bad_inputs():
    return [
        ("disordered", Structure(Lattice.cubic(4), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]]),
         "partially occupied"),
        ("molecule", Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), "non-periodic Molecule"),
        ("empty", Structure(Lattice.cubic(4), [], []), "has no sites"),
        ("not a structure", 42, "not a pymatgen Structure"),
        ("missing file", "/nonexistent/x.cif", "no such file"),
        ("lonely atom", Structure(Lattice.cubic(30), ["Fe"], [[0, 0, 0]]),
         "no neighbour within radius"),
        ("dummy species", with_dummy_species(), r"dummy species at site 0 \(X0\+\)"),
    ]


def with_dummy_species() -> Structure:
    """Rock salt with its first Na replaced by pymatgen's DummySpecies("X")."""
    from pymatgen.core import DummySpecies

    structure = rock_salt()
    structure.replace(0, DummySpecies("X"))
    return structure


@pytest.mark.parametrize("name,bad,message", bad_inputs())
def test_bad_input_raises_naming_the_structure(name, bad, message):
    tr = StructureGraphTransformer().fit()
    with pytest.raises(StructureError, match=message) as info:
        tr.transform([rock_salt(), bad])
    assert "structure 1" in str(info.value)
    assert "on_error='skip'" in str(info.value) or "radius" in str(info.value) or \
        "CIF" in str(info.value)


def test_bad_input_named_by_id():
    s = pd.Series([rock_salt(), Structure(Lattice.cubic(4), [], [])], index=["a", "mp-9"])
    with pytest.raises(StructureError, match=r"structure 1 \(mp-9\) has no sites"):
        StructureGraphTransformer().fit_transform(s)


def test_element_missing_from_the_table():
    tr = StructureGraphTransformer(atom_features={"Na": [1.0, 0.0]})
    with pytest.raises(StructureError, match="contains Cl, which atom-feature set 'custom'"):
        tr.fit_transform([rock_salt()])


def test_skip_keeps_the_rest_and_lists_failures():
    structures = [rock_salt()] + [bad for _, bad, _ in bad_inputs()] + [bcc_iron()]
    tr = StructureGraphTransformer(on_error="skip").fit()
    graphs = tr.transform(structures)
    n = len(structures)
    assert len(graphs) == 2
    assert graphs.ids.tolist() == [0, n - 1]
    assert tr.kept_indices_.tolist() == [0, n - 1]
    assert [pos for pos, _, _ in tr.errors_] == list(range(1, n - 1))
    for (_, _, reason), (_, _, message) in zip(tr.errors_, bad_inputs()):
        assert re.search(message, reason), reason


def test_dummy_species_is_skipped_in_parallel_work_too():
    structures = [rock_salt(), bcc_iron()] * 70
    structures[77] = with_dummy_species()
    tr = StructureGraphTransformer(n_jobs=2, on_error="skip").fit()
    graphs = tr.transform(structures)
    assert len(graphs) == 139 and 77 not in tr.kept_indices_
    assert [(pos, ident) for pos, ident, _ in tr.errors_] == [(77, 77)]
    assert "structure 77 has a dummy species at site 0 (X0+)" in tr.errors_[0][2]
    with pytest.raises(StructureError, match="structure 77 has a dummy species"):
        StructureGraphTransformer(n_jobs=2).fit_transform(structures)


@pytest.mark.parametrize("params,message", [
    ({"atom_features": "nonsense"}, "unknown atom-feature set"),
    ({"radius": -1}, "radius must be a positive"),
    ({"max_num_nbr": 0}, "max_num_nbr must be an integer"),
    ({"on_error": "ignore"}, "on_error must be one of"),
    ({"dmin": 9.0}, "dmin must be in"),
])
def test_bad_parameters_at_fit(params, message):
    with pytest.raises(ValueError, match=message):
        StructureGraphTransformer(**params).fit()


def test_not_a_sequence():
    tr = StructureGraphTransformer().fit()
    with pytest.raises(TypeError, match="wrap a single structure in a list"):
        tr.transform(rock_salt())


def test_sklearn_contract():
    tr = StructureGraphTransformer(radius=5.0, atom_features=("group", "period"))
    assert clone(tr).get_params() == tr.get_params()
    fitted = pickle.loads(pickle.dumps(tr.fit()))
    assert fitted.transform([bcc_iron()]).atom_features.n_features == 26
    with pytest.raises(Exception, match="not fitted"):
        StructureGraphTransformer().transform([bcc_iron()])


def test_citations_and_implementors():
    tr = StructureGraphTransformer()
    assert "PhysRevLett.120.145301" in tr.citations()[0]
    assert tr.implementors()


def test_verbose_progress_bar(capsys):
    StructureGraphTransformer(verbose=1).fit_transform([rock_salt(), bcc_iron()])
    assert "structures" in capsys.readouterr().err


@pytest.mark.parametrize("empty", [[], np.empty(0, dtype=object), pd.Series([], dtype=object)])
def test_no_structures_is_a_clear_error(empty):
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\): no structures "
                                         r"given to StructureGraphTransformer.fit"):
        StructureGraphTransformer().fit(empty)
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\): no structures "
                                         r"given to StructureGraphTransformer.transform"):
        StructureGraphTransformer().fit().transform(empty)
    StructureGraphTransformer().fit()  # fit without X stays allowed


def test_cif_text_is_not_echoed_whole():
    text = rock_salt().to(fmt="cif")
    tr = StructureGraphTransformer(on_error="skip").fit()
    tr.transform([rock_salt(), text])
    message = tr.errors_[0][2]
    first = text.splitlines()[0]
    assert message == (f"structure 1 is text, not a file path: {first!r}... ({len(text)} "
                       f"characters, {len(text.splitlines())} lines); parse CIF text first "
                       "with pymatgen's Structure.from_str(text, fmt='cif') or pass the "
                       "file's path")
    long_path = "/nonexistent/" + "x" * 300 + ".cif"
    with pytest.raises(StructureError, match="no such file") as info:
        StructureGraphTransformer().fit_transform([long_path])
    assert len(str(info.value)) < 250 and "(317 characters)" in str(info.value)
