"""The fast CIF reader (skcgcnn._cif): pymatgen's structures, or pymatgen itself."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from ._shared import SAMPLE500, skip_unless

gemmi = pytest.importorskip("gemmi")

from skcgcnn import _cif  # noqa: E402

# a plain P1 CIF as pymatgen writes them (the Materials Project's files): four sites of
# three elements, not in pymatgen's order, coordinates that pymatgen rounds and wraps
HEADER = """# generated using pymatgen
data_NaClO
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   5.64000000
_cell_length_b   5.70000000
_cell_length_c   6.10000000
_cell_angle_alpha   90.00000000
_cell_angle_beta   101.50000000
_cell_angle_gamma   119.00000000
_symmetry_Int_Tables_number   1
_chemical_formula_structural   NaClO
_chemical_formula_sum   'Na2 Cl1 O1'
_cell_volume   170.0
_cell_formula_units_Z   1
loop_
 _symmetry_equiv_pos_site_id
 _symmetry_equiv_pos_as_xyz
{symops}
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
"""
SITES = [
    "  O  O0  1  0.33333000  0.66667000  0.25000000  1",
    "  Na  Na1  1  -0.10000000  0.50000000  1.00000000  1",
    "  Cl  Cl2  1  0.50000000  0.00000000  0.50000000  1",
    "  Na  'Na 3'  1  0.75000000  0.25000000  0.12500000  1",
]
IDENTITY = "  1  'x, y, z'"


def cif(sites=SITES, symops=IDENTITY, extra=""):
    return HEADER.format(symops=symops) + "\n".join(sites) + "\n" + extra


def split_symbols(n_symbols):
    """cif() with the type symbols in a loop of their own, of n_symbols rows."""
    text = cif().replace(" _atom_site_type_symbol\n", "")
    for site in SITES:
        symbol = site.split()[0]
        text = text.replace(site, site.replace(f"  {symbol}  ", "  ", 1))
    symbols = "".join(f"  {site.split()[0]}\n" for site in SITES[:n_symbols])
    return text + f"loop_\n _atom_site_type_symbol\n{symbols}"


def pymatgen(text):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(text, fmt="cif")


def assert_same(got, want):
    """Equal to the bit: lattice, species, fractional coordinates, labels, order."""
    assert type(got) is type(want)
    np.testing.assert_array_equal(got.lattice.matrix, want.lattice.matrix)
    np.testing.assert_array_equal(got.frac_coords, want.frac_coords)
    assert [site.species for site in got] == [site.species for site in want]
    assert got.labels == want.labels
    assert got.as_dict() == want.as_dict()
    assert got == want


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.delenv("SKCGCNN_CIF_READER", raising=False)
    _cif.reset_reader_counts()
    yield
    _cif.reset_reader_counts()


def test_a_plain_p1_cif_is_read_fast_and_equals_pymatgen():
    text = cif()
    got = _cif.read_cif(text, "gemmi")
    assert _cif.reader_counts() == {"gemmi": 1, "pymatgen": 0, "fallbacks": {}}
    want = pymatgen(text)
    assert_same(got, want)
    # what pymatgen does beyond parsing, and so the fast path too
    assert [str(s) for s in got.species] == ["Na", "Na", "Cl", "O"]  # by electronegativity
    assert got.labels == ["Na1", "Na 3", "Cl2", "O0"]  # ties in file order, unquoted
    assert got.frac_coords[3, :2].tolist() == [1 / 3, 2 / 3]  # 0.33333 -> 1/3
    assert got.frac_coords[0].tolist() == pytest.approx([0.9, 0.5, 0.0])  # wrapped


def test_the_sample_500_cifs_equal_pymatgen_and_take_the_fast_path():
    from pymatgen.core import Structure

    paths = sorted(SAMPLE500.glob("*.cif"))
    if not paths:
        skip_unless(SAMPLE500 / "id_prop.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per file
        got = [_cif.read_cif_file(p, "gemmi") for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = [Structure.from_file(p) for p in paths]
    for a, b in zip(got, want):
        assert_same(a, b)
    counts = _cif.reader_counts()
    assert counts["gemmi"] + counts["pymatgen"] == len(paths)
    assert counts["gemmi"] >= len(paths) - 2  # noble gases aside, all fast


ARGON = [s.replace("  Cl  Cl2", "  Ar  Ar2") for s in SITES]


@pytest.mark.parametrize("text, reason", [
    (cif(symops=IDENTITY + "\n  2  '-x, -y, -z'"), "symmetry operations besides x, y, z"),
    (cif(symops="  1  '-x, y, z'"), "symmetry operations besides x, y, z"),
    (cif(sites=[s.replace("  1", "  0.5") if "Cl2" in s else s for s in SITES]),
     "an occupancy other than 1"),
    (cif(sites=[s.replace("0.50000000  0.00000000", "0.5000(2)  0.00000000") for s in SITES]),
     "_atom_site_fract_x is not a plain number"),
    (cif(sites=[s.replace("  Na  Na1", "  Na+  Na1") for s in SITES]),
     "a type symbol that is not an element symbol"),
    (cif(sites=ARGON), "an element without electronegativity"),
    (cif(extra="loop_\n _atom_type_symbol\n _atom_type_oxidation_number\n  Na  1\n  Cl  -1\n"
               "  O  -2\n"), "tag _atom_type_symbol"),
    (cif(extra="_atom_site_attached_hydrogens 0\n"), "tag _atom_site_attached_hydrogens"),
    (cif() + "\n" + cif().replace("data_NaClO", "data_second"), "not exactly one data block"),
    (cif().replace("_cell_length_b   5.70000000", "_cell_length_b   '5.70000000'"),
     "_cell_length_b is not a plain number"),
])
def test_what_the_fast_path_does_not_take_goes_to_pymatgen(text, reason):
    got = _cif.read_cif(text, "gemmi")
    assert _cif.reader_counts() == {"gemmi": 0, "pymatgen": 1, "fallbacks": {reason: 1}}
    assert_same(got, pymatgen(text))


def test_type_symbols_in_a_loop_of_their_own_are_read_fast():
    text = split_symbols(len(SITES))
    assert_same(_cif.read_cif(text, "gemmi"), pymatgen(text))
    assert _cif.reader_counts()["gemmi"] == 1


@pytest.mark.parametrize("text, reason", [
    (cif().replace("_cell_length_c   6.10000000", "_cell_length_c   0.00500000"),
     "a cell thinner than pymatgen's min_thickness"),
    (cif().replace("_cell_length_a   5.64000000\n", ""), "no _cell_length_a"),
    ("data_x\n_cell_length_a 1\n", "no symmetry operations"),
    # two sites within pymatgen's tolerance (across the cell's face too): their
    # occupancies add up to 2, which pymatgen refuses
    (cif(sites=SITES + ["  Na  Na4  1  0.50000000  0.00000000  0.50002000  1"]),
     "two sites at one position"),
    (cif(sites=SITES + ["  Na  Na4  1  0.50000000  0.00000000  -0.49999000  1"]),
     "two sites at one position"),
    # the type symbols in a loop of their own, one row short of the sites
    (split_symbols(3), "no atom_site loop with type symbols, labels and coordinates"),
])
def test_files_pymatgen_refuses_are_refused_alike(text, reason):
    with pytest.raises(Exception) as fast:
        _cif.read_cif(text, "gemmi")
    with pytest.raises(Exception) as slow:
        pymatgen(text)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)
    assert _cif.reader_counts() == {"gemmi": 0, "pymatgen": 1, "fallbacks": {reason: 1}}


def test_counts_add_up_across_processes_and_log_one_line(caplog):
    import logging

    _cif.read_cif(cif(), "gemmi")
    _cif.read_cif(cif(sites=ARGON), "gemmi")
    before = _cif.reader_counts()
    _cif.read_cif(cif(sites=ARGON), "gemmi")
    since = _cif.counts_since(before)
    assert since == {"gemmi": 0, "pymatgen": 1,
                     "fallbacks": {"an element without electronegativity": 1}}
    _cif.add_reader_counts(since)  # as from a worker process
    assert _cif.reader_counts()["fallbacks"] == {"an element without electronegativity": 3}
    with caplog.at_level(logging.INFO, logger="skcgcnn._cif"):
        _cif.log_reader_counts()
    assert caplog.messages == ["CIFs read: 1 by the fast reader (gemmi), 3 by pymatgen "
                               "(fallbacks: 3 an element without electronegativity)"]


def test_the_reader_is_chosen_by_argument_or_environment(monkeypatch):
    assert _cif.resolve_reader() == "gemmi"  # installed: auto is gemmi
    monkeypatch.setenv("SKCGCNN_CIF_READER", "pymatgen")
    assert_same(_cif.read_cif(cif()), pymatgen(cif()))
    assert _cif.reader_counts() == {"gemmi": 0, "pymatgen": 1, "fallbacks": {}}
    monkeypatch.setenv("SKCGCNN_CIF_READER", "fast")
    with pytest.raises(ValueError, match="'fast' is not one of auto, gemmi, pymatgen"):
        _cif.read_cif(cif())


def test_new_structure_behaves_as_a_structure_from_the_constructor():
    from pymatgen.core import Composition, Lattice, Structure

    lattice = Lattice.from_parameters(4, 5, 6, 80, 95, 110)
    species = [Composition({"Na": 1.0}), Composition({"Cl": 1.0})]
    frac = np.array([[0.0, 0.1, 0.2], [0.5, 0.5, 0.5]])
    fast = _cif.new_structure(lattice, species, frac, ["a", "b"])
    public = Structure(lattice, species, frac, labels=["a", "b"])
    assert_same(fast, public)
    for s in (fast, public):  # edits change one structure, not the other or the input
        s.append("O", [0.25, 0.25, 0.25])
        s[0] = "K"
        s.translate_sites([1], [0.1, 0, 0])
    assert_same(fast, public)
    assert frac[1, 0] == 0.5 and species[0] == Composition({"Na": 1.0})
    assert_same(fast.copy(), public.copy())
    assert fast.get_primitive_structure() == public.get_primitive_structure()


def test_load_cgcnn_folder_reads_the_same_with_either_reader(tmp_path):
    from skcgcnn.datasets import load_cgcnn_folder

    skip_unless(SAMPLE500 / "id_prop.csv")
    frames = [load_cgcnn_folder(SAMPLE500, limit=40, cache=False, cif_reader=reader)
              for reader in ("gemmi", "pymatgen")]
    assert _cif.reader_counts()["gemmi"] >= 38
    assert list(frames[0].index) == list(frames[1].index)
    for a, b in zip(frames[0]["structure"], frames[1]["structure"]):
        assert_same(a, b)
    with pytest.raises(ValueError, match="cif_reader 'fast'"):
        load_cgcnn_folder(SAMPLE500, limit=2, cache=False, cif_reader="fast")
