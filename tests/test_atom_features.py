from __future__ import annotations

import json

import numpy as np
import pytest

from skcgcnn.atom_features import (CGCNN_GROUPS, MAGPIE_PROPERTIES, AtomFeatureTable,
                                   get_atom_features, load_atom_init_json)

from ._shared import REFERENCE, needs_shared


@needs_shared
def test_cgcnn_table_equals_atom_init_json():
    reference = json.loads((REFERENCE / "atom_init.json").read_text())
    table = get_atom_features("cgcnn")
    assert table.n_features == 92
    assert sorted(table.elements.tolist()) == sorted(int(k) for k in reference)
    for key, vector in reference.items():
        np.testing.assert_array_equal(table.table[int(key)], np.asarray(vector, np.float32))


def test_group_widths_add_up_to_92():
    assert sum(CGCNN_GROUPS.values()) == 92
    assert len(CGCNN_GROUPS) == 9


def test_each_group_is_one_hot_and_slices_the_full_table():
    full = get_atom_features("cgcnn")
    start = 0
    for group, width in CGCNN_GROUPS.items():
        sub = get_atom_features((group,))
        assert sub.n_features == width
        np.testing.assert_array_equal(sub.table, full.table[:, start:start + width])
        # one hot bin per element (none where the property is unknown)
        assert set(np.unique(sub.table[sub.elements].sum(axis=1))) <= {0.0, 1.0}
        start += width


def test_group_subset_order_and_names():
    table = get_atom_features(("period", "group"))
    assert table.n_features == 7 + 19
    assert table.feature_names[0] == "period_0" and table.feature_names[7] == "group_0"
    # iron: period 4 (bins start at period 1), group 8 (bin 0 is "no group": La/Ac rows)
    assert np.flatnonzero(table.table[26, :7]).tolist() == [3]
    assert np.flatnonzero(table.table[26, 7:]).tolist() == [8]


def test_onehot():
    table = get_atom_features("onehot")
    np.testing.assert_array_equal(table(np.array([1, 26, 100])), np.eye(100)[[0, 25, 99]])


def test_magpie_is_standardized_without_nan():
    table = get_atom_features("magpie")
    assert table.n_features == len(MAGPIE_PROPERTIES) == 22
    rows = table.table[1:101]
    assert not np.isnan(rows).any()
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-5)
    # Number (Z) standardized: Z=1 is the lowest, Z=100 the highest
    assert rows[0, 0] == rows[:, 0].min() and rows[99, 0] == rows[:, 0].max()


@pytest.mark.parametrize("name,width", [("matscholar", 200), ("megnet", 16)])
def test_embeddings(name, width):
    table = get_atom_features(name)
    assert table.n_features == width
    assert table.available[8] and table.available[26]  # O and Fe
    assert np.abs(table.table[8]).sum() > 0


def test_custom_mapping_by_symbol_and_number():
    table = get_atom_features({"Na": [1.0, 2.0], 17: [3.0, 4.0]})
    np.testing.assert_array_equal(table(np.array([11, 17])), [[1, 2], [3, 4]])
    assert table.missing(np.array([11, 8, 17])).tolist() == [8]


@needs_shared
def test_custom_atom_init_path():
    table = get_atom_features(str(REFERENCE / "atom_init.json"))
    assert table.n_features == 92
    np.testing.assert_array_equal(table.table, get_atom_features("cgcnn").table)


def test_table_passes_through():
    table = get_atom_features("onehot")
    assert get_atom_features(table) is table
    assert isinstance(table, AtomFeatureTable)


@pytest.mark.parametrize("spec,message", [
    ("nonsense", "unknown atom-feature set 'nonsense'"),
    (("group", "colour"), "unknown CGCNN property group"),
    ({"Xx": [1.0]}, "neither an atomic number nor an element symbol"),
    ({1: [1.0], 2: [1.0, 2.0]}, "same length"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        get_atom_features(spec)


def test_bad_type():
    with pytest.raises(TypeError, match="atom_features must be"):
        get_atom_features(3.5)


def test_unreadable_json(tmp_path):
    bad = tmp_path / "atom_init.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read atom-feature file"):
        load_atom_init_json(bad)
