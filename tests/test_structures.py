"""skcgcnn.structures: the one input normaliser and its id rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import IStructure, Structure

from skcgcnn.structures import StructureError, as_structures, describe, ids_of, to_structure

from .test_graph import bcc_iron, rock_salt


def with_id(structure: Structure, ident: str) -> Structure:
    structure.properties["id"] = ident
    return structure


def test_describe_names_position_and_id():
    assert describe(17, "mp-1234") == "structure 17 (mp-1234)"
    assert describe(3, 3) == "structure 3"
    assert describe(3, np.int64(3)) == "structure 3"
    assert describe(3, None) == "structure 3"
    assert describe(3, 4) == "structure 3 (4)"


def test_series_and_dataframe_give_their_index():
    s = pd.Series([rock_salt(), bcc_iron()], index=["mp-22862", "mp-13"])
    structures, ids = as_structures(s)
    assert ids == ["mp-22862", "mp-13"] and len(structures) == 2
    df = pd.DataFrame({"e": [1.0, 2.0], "structure": s})
    assert as_structures(df)[1] == ["mp-22862", "mp-13"]
    assert as_structures(df[["structure"]].rename(columns={"structure": "s"}))[1] == \
        ["mp-22862", "mp-13"]  # a single column needs no name
    with pytest.raises(ValueError, match="'structure' column"):
        as_structures(pd.DataFrame({"a": s, "b": [1, 2]}))


def test_properties_ids_all_or_nothing():
    tagged = [with_id(rock_salt(), "a"), with_id(bcc_iron(), "b")]
    assert as_structures(tagged)[1] == ["a", "b"]
    # the index of a Series wins over the properties
    assert as_structures(pd.Series(tagged, index=[7, 8]))[1] == [7, 8]
    # one structure without an id: positions for all, never a mix
    assert as_structures([tagged[0], bcc_iron()])[1] == [0, 1]
    assert as_structures([rock_salt(), bcc_iron()])[1] == [0, 1]


def test_graph_collections_give_their_ids():
    from skcgcnn import StructureGraphTransformer

    s = pd.Series([rock_salt(), bcc_iron()], index=["x", "y"])
    graphs = StructureGraphTransformer().fit_transform(s)
    assert ids_of(graphs) == ["x", "y"]
    assert ids_of(s) == ["x", "y"]
    with pytest.raises(TypeError, match="already a GraphCollection"):
        as_structures(graphs)


def test_shapes_and_single_inputs():
    one_column = np.empty((2, 1), dtype=object)
    one_column[:, 0] = [rock_salt(), bcc_iron()]
    assert as_structures(one_column)[1] == [0, 1]
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        as_structures(one_column.T)
    for single in (rock_salt(), "NaCl.cif"):
        with pytest.raises(TypeError, match="wrap a single structure in a list"):
            as_structures(single)
    with pytest.raises(TypeError, match="sequence of structures, got int"):
        as_structures(3)
    assert as_structures([]) == ([], [])


def test_parse_reads_files_and_converts(tmp_path):
    path = tmp_path / "nacl.cif"
    rock_salt().to(filename=str(path))
    frozen = IStructure.from_sites(bcc_iron())
    structures, ids = as_structures([str(path), path, frozen])
    assert all(isinstance(s, Structure) for s in structures)
    assert [len(s) for s in structures] == [8, 8, 2]
    raw, _ = as_structures([str(path)], parse=False)
    assert raw == [str(path)]  # as given, for a caller that parses later


def test_ase_atoms():
    ase = pytest.importorskip("ase")
    atoms = ase.Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
                      cell=np.eye(3) * 2.87, pbc=True)
    (structure,), _ = as_structures([atoms])
    assert isinstance(structure, Structure) and len(structure) == 2
    atoms.pbc = False
    with pytest.raises(StructureError, match="structure 0 is an ASE Atoms without periodic"):
        as_structures([atoms])
    with pytest.raises(TypeError, match="wrap a single structure"):
        as_structures(atoms)


def test_one_error_type_naming_the_input():
    s = pd.Series([rock_salt(), {"lattice": 1}], index=["a", "b"])
    with pytest.raises(StructureError, match=r"structure 1 \(b\) is a dict, not a crystal"):
        as_structures(s)
    with pytest.raises(StructureError, match=r"structure 0 \(q\): no such file"):
        as_structures(pd.Series(["/nonexistent.cif"], index=["q"]))
    with pytest.raises(StructureError, match="is text, not a file path"):
        to_structure(rock_salt().to(fmt="cif"))
    assert isinstance(StructureError("x"), ValueError)


def test_structure_error_is_importable_from_graph():
    from skcgcnn.graph import StructureError as FromGraph

    assert FromGraph is StructureError
