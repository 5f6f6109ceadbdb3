from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_cgcnn_table_equals_matminers_file():
    matminer = pytest.importorskip("matminer")
    path = Path(matminer.__file__).parent / "utils" / "data_files" / "cgcnn_atom_feature.json"
    reference = json.loads(path.read_text())
    table = get_atom_features("cgcnn")
    assert sorted(table.elements.tolist()) == sorted(int(k) for k in reference) \
        == list(range(1, 101))
    for key, vector in reference.items():
        np.testing.assert_array_equal(table.table[int(key)], np.asarray(vector, np.float32))


def _run_without_matminer(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``import matminer`` fails."""
    blocker = "import sys; sys.modules['matminer'] = None\n"  # None: ImportError on import
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH"))
        if p))
    return subprocess.run([sys.executable, "-c", blocker + code], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cgcnn_features_need_no_matminer():
    done = _run_without_matminer(
        "from skcgcnn.atom_features import get_atom_features\n"
        "t = get_atom_features('cgcnn'); g = get_atom_features(('group', 'block'))\n"
        "print(t.n_features, int(t.available.sum()), g.n_features, int(t.table.sum()))\n")
    assert done.returncode == 0, done.stderr
    # 100 elements; 9 one-hot groups, minus the 15 + 26 + 9 elements without a bin
    assert done.stdout.split() == ["92", "100", "23", str(9 * 100 - 15 - 26 - 9)]


def test_cgcnn_features_do_not_import_matminer():
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom skcgcnn import get_atom_features\n"
         "get_atom_features('cgcnn')\nprint(sorted(m for m in sys.modules "
         "if m.split('.')[0] in ('matminer', 'pymatgen')))"],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["magpie", "matscholar", "megnet"])
def test_matminer_sets_name_the_extra_without_matminer(name):
    done = _run_without_matminer(
        f"from skcgcnn.atom_features import get_atom_features\nget_atom_features({name!r})")
    assert done.returncode != 0
    assert "pip install 'skcgcnn[baselines]'" in done.stderr


def test_shipped_table_is_declared_as_package_data():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = [p.strip() for p in setup["options.package_data"]["skcgcnn"].split(",")]
    assert "data/*.json" in patterns
    assert (Path(__file__).resolve().parents[1] / "skcgcnn" / "data"
            / "cgcnn_atom_features.json").is_file()


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
