"""Tests of skcgcnn.datasets on the shared data, a loopback Materials Project server and
small broken datasets built in tmp_path."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import shutil
import socket
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from skcgcnn.datasets import (
    DatasetError,
    default_cache_dir,
    list_cgcnn_folder,
    load_cgcnn_folder,
    load_cif_table,
    load_matbench,
    load_materials_project,
)

from ._shared import (DATA, MP, SAMPLE500, SAMPLE_CLASSIFICATION,  # noqa: F401
                      SAMPLE_REGRESSION, needs)

MP_DIR = MP
TAR = MP_DIR / "cifs.tar.gz"
REG = SAMPLE_REGRESSION
CLS = SAMPLE_CLASSIFICATION

pytestmark = [
    needs(MP_DIR, REG),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

KEY = "0123456789abcdef0123456789abcdef"  # 32 characters, like a Materials Project key


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def from_file(path: Path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(path)


def same(a: Structure, b: Structure) -> bool:
    """Bit-identical lattice, species, coordinates, labels and properties."""
    return a.as_dict() == b.as_dict()


def tar_texts(names: list[str]) -> dict[str, str]:
    out = {}
    with tarfile.open(TAR) as tar:
        for name in names:
            out[name] = tar.extractfile(f"cifs/{name}.cif").read().decode()
    return out


def write_id_prop(folder: Path, lines: list[str]) -> None:
    (folder / "id_prop.csv").write_text("".join(line + "\r\n" for line in lines))


def parse_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("parsed ")]


# ----------------------------------------------------------------------------------
# CGCNN folders
# ----------------------------------------------------------------------------------
def test_reference_folder_matches_structure_from_file(tmp_path: Path) -> None:
    df = load_cgcnn_folder(REG, cache=tmp_path)
    rows = read_rows(REG / "id_prop.csv")
    assert list(df.index) == [r[0] for r in rows]
    assert df.index.name == "id"
    assert list(df.columns) == ["structure", "target"]
    assert (
        df["target"].tolist()
        == [float(r[1]) for r in rows]
        == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    )
    assert df.attrs["errors"] == []
    for ident, structure in df["structure"].items():
        assert isinstance(structure, Structure)
        assert same(structure, from_file(REG / f"{ident}.cif"))
    # oxidation states survive (the NaCl CIF has Na+ / Cl-)
    assert str(df.loc["1000041", "structure"][0].specie) == "Na+"


def test_classification_folder(tmp_path: Path) -> None:
    df = load_cgcnn_folder(CLS, cache=False)
    assert df["target"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert not any(tmp_path.iterdir())


def test_second_load_comes_from_cache_and_is_identical(tmp_path: Path, caplog) -> None:
    ids = [r[0] for r in read_rows(SAMPLE500 / "id_prop.csv")][:40]
    caplog.set_level(logging.INFO, logger="skcgcnn.datasets")
    first = load_cgcnn_folder(SAMPLE500, ids=ids, cache=tmp_path)
    assert parse_messages(caplog) == [
        "parsed 40 structures in " + parse_messages(caplog)[0].split(" in ")[1]
    ]
    files = list((tmp_path / "structures").glob("*.npz"))
    assert len(files) == 1
    caplog.clear()
    second = load_cgcnn_folder(SAMPLE500, ids=ids, cache=tmp_path)
    assert parse_messages(caplog) == []  # nothing parsed the second time
    assert list(second.index) == ids
    np.testing.assert_array_equal(first["target"], second["target"])
    for ident in ids:
        assert same(second.loc[ident, "structure"], from_file(SAMPLE500 / f"{ident}.cif"))
    # a larger request reuses the 40 cached entries and parses only the 10 new ones
    caplog.clear()
    more = [r[0] for r in read_rows(SAMPLE500 / "id_prop.csv")][:50]
    third = load_cgcnn_folder(SAMPLE500, ids=more, cache=tmp_path)
    assert len(third) == 50
    assert parse_messages(caplog)[0].startswith("parsed 10 structures")


def test_cached_load_leaves_the_collector_on_with_its_structures_in_the_oldest_generation(
    tmp_path: Path,
) -> None:
    import gc

    from skcgcnn.datasets._cache import _no_cyclic_gc

    ids = [r[0] for r in read_rows(SAMPLE500 / "id_prop.csv")][:5]
    load_cgcnn_folder(SAMPLE500, ids=ids, cache=tmp_path)
    assert gc.isenabled()
    df = load_cgcnn_folder(SAMPLE500, ids=ids, cache=tmp_path)  # from the cache
    assert gc.isenabled()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    structure = df["structure"].iloc[0]
    assert id(structure) in oldest and id(structure.sites[0]) in oldest
    gc.disable()  # a collector the caller turned off stays off
    try:
        with _no_cyclic_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_edited_cif_is_parsed_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("1000041", "9009743"):
        shutil.copy(REG / f"{name}.cif", root / f"{name}.cif")
    write_id_prop(root, ["1000041,1.0", "9009743,2.0"])
    cache = tmp_path / "cache"
    before = load_cgcnn_folder(root, cache=cache)
    assert before.loc["1000041", "structure"].composition.reduced_formula == "NaCl"
    (root / "1000041.cif").write_text((REG / "9011998.cif").read_text())  # now silicon
    after = load_cgcnn_folder(root, cache=cache)
    assert after.loc["1000041", "structure"].composition.reduced_formula == "Si"
    assert same(after.loc["1000041", "structure"], from_file(REG / "9011998.cif"))


def _rewrite_keeping_size_and_mtime(path: Path, text: str) -> None:
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_rewrite_with_same_size_and_mtime_is_not_served_stale(tmp_path: Path) -> None:
    """The cache key is the file's content, not size + mtime (folder, archive, table)."""
    def lattice_a(df: pd.DataFrame) -> float:
        return df.iloc[0]["structure"].lattice.a

    def plain_tar(member_text: str) -> bytes:  # uncompressed: same size for same lengths
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            raw = member_text.encode()
            info = tarfile.TarInfo("cifs/1000041.cif")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        return buffer.getvalue()

    root = tmp_path / "root"
    root.mkdir()
    text = (REG / "1000041.cif").read_text()  # NaCl, a = b = c = 5.62
    assert text.count("5.62\n") == 3
    other = text.replace("5.62\n", "5.92\n")  # same length, another lattice
    (root / "1000041.cif").write_text(text)
    write_id_prop(root, ["1000041,1.0"])
    cache = tmp_path / "cache"
    assert lattice_a(load_cgcnn_folder(root, cache=cache)) == pytest.approx(5.62)
    _rewrite_keeping_size_and_mtime(root / "1000041.cif", other)
    again = load_cgcnn_folder(root, cache=cache)
    assert lattice_a(again) == pytest.approx(5.92)
    assert same(again.iloc[0]["structure"], from_file(root / "1000041.cif"))

    archive = tmp_path / "cifs.tar"
    archive.write_bytes(plain_tar(text))
    write_id_prop(tmp_path, ["1000041,1.0"])
    assert lattice_a(load_cgcnn_folder(archive, cache=cache)) == pytest.approx(5.62)
    st = archive.stat()
    archive.write_bytes(plain_tar(other))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (archive.stat().st_size, archive.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert lattice_a(load_cgcnn_folder(archive, cache=cache)) == pytest.approx(5.92)

    table = tmp_path / "table.csv"
    pd.DataFrame({"id": ["a"], "cif": [text], "y": [1.0]}).to_csv(table, index=False)
    assert lattice_a(load_cif_table(table, cache=cache)) == pytest.approx(5.62)
    _rewrite_keeping_size_and_mtime(table, table.read_text().replace("5.62\n", "5.92\n"))
    assert lattice_a(load_cif_table(table, cache=cache)) == pytest.approx(5.92)


def test_disordered_structure_is_cached_as_json(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    disordered = Structure(
        Lattice.cubic(4.2), [{"Fe": 0.5, "Mn": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    disordered.to(filename=str(root / "d1.cif"))
    write_id_prop(root, ["d1,0.5"])
    for _ in range(2):  # parsed, then rebuilt from the cache
        df = load_cgcnn_folder(root, cache=tmp_path / "cache")
        assert not df.loc["d1", "structure"].is_ordered
        assert same(df.loc["d1", "structure"], from_file(root / "d1.cif"))


def test_parallel_parse_equals_serial(tmp_path: Path) -> None:
    ids = [r[0] for r in read_rows(SAMPLE500 / "id_prop.csv")][100:130]
    serial = load_cgcnn_folder(SAMPLE500, ids=ids, n_jobs=1, cache=False)
    parallel = load_cgcnn_folder(SAMPLE500, ids=ids, n_jobs=2, cache=False)
    assert list(serial.index) == list(parallel.index) == ids
    assert all(same(a, b) for a, b in zip(serial["structure"], parallel["structure"]))


def test_cache_defaults_to_skcgcnn_cache_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    load_cgcnn_folder(REG, limit=2)
    assert len(list((tmp_path / "env-cache" / "structures").glob("*.npz"))) == 1
    monkeypatch.delenv("SKCGCNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "skcgcnn"


# ----------------------------------------------------------------------------------
# archives
# ----------------------------------------------------------------------------------
def test_archive_folder_multi_target(tmp_path: Path) -> None:
    df = load_cgcnn_folder(MP_DIR, id_prop="id_prop_multi.csv", limit=12, cache=tmp_path)
    rows = read_rows(MP_DIR / "id_prop_multi.csv")[:12]
    assert list(df.index) == [str(i) for i in range(12)] == [r[0] for r in rows]
    assert list(df.columns) == [
        "structure",
        "target_0",
        "target_1",
        "target_2",
        "target_3",
        "target_4",
    ]
    expected = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_array_equal(df.iloc[:, 1:].to_numpy(), expected)
    texts = tar_texts(list(df.index))
    for ident, structure in df["structure"].items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert same(structure, Structure.from_str(texts[ident], fmt="cif"))
    # Cs (id 0) is a one-atom cell with the lattice of its CIF
    assert len(df.loc["0", "structure"]) == 1
    assert df.loc["0", "structure"].lattice.abc == pytest.approx((5.29144986,) * 3)


def test_archive_path_with_id_prop_and_ids(tmp_path: Path) -> None:
    target_names = ["e_form"]
    df = load_cgcnn_folder(
        TAR, id_prop=MP_DIR / "id_prop.csv", ids=[5, "3"], target_names=target_names, cache=False
    )
    rows = {r[0]: float(r[1]) for r in read_rows(MP_DIR / "id_prop.csv")[:6]}
    assert list(df.index) == ["5", "3"]
    assert df["e_form"].tolist() == [rows["5"], rows["3"]]
    # an id_prop path relative to the archive's folder works too
    again = load_cgcnn_folder(TAR, id_prop="id_prop.csv", ids=["3"], cache=False)
    assert again.loc["3", "target"] == rows["3"]


def test_archive_second_load_does_not_open_archive(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="skcgcnn.datasets")
    load_cgcnn_folder(MP_DIR, ids=["7", "8"], cache=tmp_path)
    caplog.clear()
    df = load_cgcnn_folder(MP_DIR, ids=["7", "8"], cache=tmp_path, verbose=0)
    assert parse_messages(caplog) == []
    assert [m for m in caplog.messages if "from the cache" in m] != []
    assert list(df.index) == ["7", "8"]


def test_missing_target_in_multi_file(tmp_path: Path) -> None:
    # id 1462 has efermi "None" in id_prop_multi.csv
    with pytest.raises(DatasetError) as info:
        load_cgcnn_folder(MP_DIR, id_prop="id_prop_multi.csv", ids=["0", "1462"], cache=False)
    assert [e[0] for e in info.value.errors] == ["1462"]
    assert "missing target 'target_2'" in str(info.value).splitlines()[0]
    skipped = load_cgcnn_folder(
        MP_DIR, id_prop="id_prop_multi.csv", ids=["0", "1462"], on_error="skip", cache=False
    )
    assert list(skipped.index) == ["0"]
    assert skipped.attrs["errors"][0][0] == "1462"
    kept = load_cgcnn_folder(
        MP_DIR, id_prop="id_prop_multi.csv", ids=["1462"], missing_target="nan", cache=False
    )
    assert np.isnan(kept.loc["1462", "target_2"]) and kept.loc["1462", "target_1"] == pytest.approx(
        0.2912
    )


def make_tar(path: Path, members: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def test_archive_missing_and_ambiguous_members(tmp_path: Path) -> None:
    nacl = (REG / "1000041.cif").read_text()
    make_tar(tmp_path / "cifs.tar.gz", {"a/1.cif": nacl, "b/1.cif": nacl, "x/2.cif": nacl})
    write_id_prop(tmp_path, ["1,0.1", "2,0.2", "3,0.3"])
    with pytest.raises(DatasetError) as info:
        load_cgcnn_folder(tmp_path, cache=False)
    reasons = dict(info.value.errors)
    assert sorted(reasons) == ["1", "3"]
    assert "two CIFs" in reasons["1"] and "no 3.cif in cifs.tar.gz" == reasons["3"]
    df = load_cgcnn_folder(tmp_path, on_error="skip", cache=False)
    assert list(df.index) == ["2"] and df.loc["2", "target"] == 0.2


# ----------------------------------------------------------------------------------
# bad CGCNN folders
# ----------------------------------------------------------------------------------
@pytest.fixture()
def bad_root(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    root.mkdir()
    for name in ("1000041", "1000050", "9009743"):
        shutil.copy(REG / f"{name}.cif", root / f"{name}.cif")
    (root / "broken.cif").write_text("data_broken\n_cell_length_a 3\nthis is not a CIF\n")
    return root


def test_id_prop_problems_are_reported_with_ids(bad_root: Path) -> None:
    write_id_prop(
        bad_root,
        ["1000041,1.0", "1000050,", "1000041,3.0", "9009743,abc", "broken,5.0", "nocif,6.0"],
    )
    with pytest.raises(DatasetError) as info:
        load_cgcnn_folder(bad_root, cache=False)
    errors = info.value.errors
    assert [e[0] for e in errors] == ["1000050", "1000041", "9009743"]
    assert "missing target 'target'" in errors[0][1] and "line 2" in errors[0][1]
    assert errors[1][1].startswith("duplicate id (lines 1 and 3")
    assert "'abc' is not a number" in errors[2][1]
    message = str(info.value)
    assert message.startswith("3 of 6 entries of ") and "on_error='skip'" in message

    df = load_cgcnn_folder(bad_root, on_error="skip", cache=False)
    assert list(df.index) == ["1000041"]
    assert df.loc["1000041", "target"] == 1.0  # the first of the duplicates is kept
    reasons = dict(df.attrs["errors"])
    assert sorted(reasons) == ["1000041", "1000050", "9009743", "broken", "nocif"]
    assert reasons["nocif"] == f"no CIF file {bad_root / 'nocif.cif'}"
    assert reasons["broken"].startswith("unreadable CIF file")


def test_rows_with_another_column_count_are_one_error(bad_root: Path) -> None:
    """A stray comma or a missing column is named with the lines, ids and counts, not
    reported as a missing target on every other row."""
    prop = bad_root / "id_prop.csv"
    write_id_prop(bad_root, ["1000041,1.0", "1000050,2.0", "9009743,3.0,7", "broken,4.0"])
    for on_error in ("raise", "skip"):
        with pytest.raises(DatasetError) as info:
            load_cgcnn_folder(bad_root, on_error=on_error, missing_target="nan", cache=False)
        assert str(info.value) == (
            f"{prop}: line 3 (id 9009743) has 3 columns, but the file's first row has 2; "
            "every row needs id,target[,target...] with the same number of targets (leave "
            "a field empty for a missing target, e.g. 'mp-1,1.5,,0.3')")
        assert info.value.errors == [("9009743", "3 columns on line 3, expected 2")]
    # the same check for list_cgcnn_folder, several bad rows, and a header
    lines = ["id,e_form,gap"] + [f"{i},1.0,2.0" for i in range(1, 7)]
    lines[1], lines[3], lines[4], lines[5], lines[6] = "1,1.0", "3", "4,1,2,3", "5,1", "6,1"
    write_id_prop(bad_root, lines)
    with pytest.raises(DatasetError) as info:
        list_cgcnn_folder(bad_root)
    assert str(info.value).startswith(
        f"{prop}: line 2 (id 1) has 2 columns, line 4 (id 3) has 1, line 5 (id 4) has 4 "
        "(and 2 more rows differ), but the header has 3; every row needs ")
    assert [e[0] for e in info.value.errors] == ["1", "3", "4", "5", "6"]


def test_infinite_targets_are_refused_with_ids(bad_root: Path, tmp_path: Path) -> None:
    write_id_prop(
        bad_root, ["1000041,1.0", "1000050,inf", "9009743,-Infinity", "broken,1e999"]
    )
    for missing_target in ("error", "nan"):  # inf is never a missing value
        with pytest.raises(DatasetError) as info:
            load_cgcnn_folder(bad_root, missing_target=missing_target, cache=False)
        errors = info.value.errors
        assert [e[0] for e in errors] == ["1000050", "9009743", "broken"]
        assert errors[0][1].startswith(
            "target 'target' is infinite ('inf') (line 2 of id_prop.csv)")
        assert "('-Infinity') (line 3" in errors[1][1] and "('1e999') (line 4" in errors[2][1]
    df = load_cgcnn_folder(bad_root, on_error="skip", cache=False)
    assert list(df.index) == ["1000041"] and np.isfinite(df["target"]).all()
    # CIF tables: text and JSON numbers (json writes float('inf') as Infinity)
    path = tmp_path / "table.json"
    cif = (REG / "1000041.cif").read_text()
    path.write_text(json.dumps([{"id": "a", "cif": cif, "y": 1.0},
                                {"id": "b", "cif": cif, "y": float("inf")},
                                {"id": "c", "cif": cif, "y": "-inf"}]))
    with pytest.raises(DatasetError) as info:
        load_cif_table(path, target_columns=["y"], cache=False)
    assert [e[0] for e in info.value.errors] == ["b", "c"]
    assert "target 'y' is infinite (inf) (row 1)" in info.value.errors[0][1]


def test_long_values_are_not_echoed_whole(bad_root: Path, tmp_path: Path) -> None:
    """A CIF text in a target column is named by its first line, not dumped."""
    cif = (REG / "1000041.cif").read_text()
    path = tmp_path / "table.csv"
    pd.DataFrame({"id": ["a"], "cif": [cif], "y": [cif]}).to_csv(path, index=False)
    with pytest.raises(DatasetError) as info:
        load_cif_table(path, target_columns=["y"], cache=False)
    reason = info.value.errors[0][1]
    first = cif.splitlines()[0]
    assert reason.startswith(f"target 'y' {first!r}... ({len(cif)} characters, ")
    assert len(str(info.value)) < 600 and cif.splitlines()[3] not in str(info.value)


def test_unreadable_cif_and_missing_cif_raise(bad_root: Path, caplog) -> None:
    write_id_prop(bad_root, ["1000041,1.0", "nocif,2.0"])
    with pytest.raises(DatasetError, match=r"nocif: no CIF file"):
        load_cgcnn_folder(bad_root, cache=False)
    write_id_prop(bad_root, ["1000041,1.0", "broken,2.0"])
    with pytest.raises(DatasetError) as info:
        load_cgcnn_folder(bad_root, cache=False)
    assert [e[0] for e in info.value.errors] == ["broken"]
    with caplog.at_level(logging.WARNING, logger="skcgcnn.datasets"):
        df = load_cgcnn_folder(bad_root, on_error="skip", cache=False)
    assert list(df.index) == ["1000041"]
    assert any("skipped 1 of 2 entries" in m and "broken" in m for m in caplog.messages)


def test_header_and_target_names(bad_root: Path) -> None:
    (bad_root / "id_prop.csv").write_text("id,e_form,gap\n1000041,1.5,2.0\n9009743,-0.5,0.0\n")
    df = load_cgcnn_folder(bad_root, cache=False)
    assert list(df.columns) == ["structure", "e_form", "gap"]
    assert df["gap"].tolist() == [2.0, 0.0]
    named = load_cgcnn_folder(bad_root, target_names=["a", "b"], cache=False)
    assert list(named.columns) == ["structure", "a", "b"]
    with pytest.raises(ValueError, match="target_names has 1 names but id_prop.csv has 2"):
        load_cgcnn_folder(bad_root, target_names=["a"], cache=False)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_error='ignore' is not allowed"):
        load_cgcnn_folder(REG, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cgcnn_folder(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no id_prop.csv"):
        load_cgcnn_folder(tmp_path)
    with pytest.raises(ValueError, match="1 requested ids are not in"):
        load_cgcnn_folder(REG, ids=["1000041", "12"], cache=False)


# ----------------------------------------------------------------------------------
# CIF tables
# ----------------------------------------------------------------------------------
NAMES = ["1000041", "1000050", "7206075", "9011998"]


def test_csv_of_cif_text(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    frame = pd.DataFrame(
        {
            "material_id": NAMES,
            "cif": [(REG / f"{n}.cif").read_text() for n in NAMES],
            "formula": ["NaCl", "KCl", "TiO2", "Si"],
            "band_gap": [5.0, 6.0, 3.0, 1.1],
        }
    )
    frame.to_csv(path, index=False)
    df = load_cif_table(path, cache=tmp_path / "cache")
    assert list(df.index) == NAMES and list(df.columns) == ["structure", "band_gap"]
    assert df["band_gap"].tolist() == [5.0, 6.0, 3.0, 1.1]
    for n in NAMES:
        assert same(df.loc[n, "structure"], from_file(REG / f"{n}.cif"))
    again = load_cif_table(path, cache=tmp_path / "cache")
    assert all(same(a, b) for a, b in zip(df["structure"], again["structure"]))


def test_csv_gz_and_json_of_structure_dicts(tmp_path: Path) -> None:
    structures = [from_file(REG / f"{n}.cif") for n in NAMES]
    targets = [0.5, -1.0, 2.0, 0.0]
    csv_path = tmp_path / "dicts.csv.gz"
    pd.DataFrame(
        {"id": NAMES, "s": [json.dumps(s.as_dict()) for s in structures], "y": targets}
    ).to_csv(csv_path, index=False)
    records = tmp_path / "records.json"
    records.write_text(
        json.dumps(
            [{"mid": n, "s": s.as_dict(), "y": y} for n, s, y in zip(NAMES, structures, targets)]
        )
    )
    split = tmp_path / "split.json.gz"
    with gzip.open(split, "wt") as handle:
        json.dump(
            {
                "index": NAMES,
                "columns": ["s", "y"],
                "data": [[s.as_dict(), y] for s, y in zip(structures, targets)],
            },
            handle,
        )
    columns = tmp_path / "columns.json"
    columns.write_text(
        json.dumps(
            {
                "s": {n: s.as_dict() for n, s in zip(NAMES, structures)},
                "y": dict(zip(NAMES, targets)),
            }
        )
    )
    frames = [
        load_cif_table(csv_path, structure_column="s", cache=False),
        load_cif_table(
            records, structure_column="s", id_column="mid", target_columns=["y"], cache=False
        ),
        load_cif_table(split, structure_column="s", cache=False),
        load_cif_table(columns, structure_column="s", cache=False),
    ]
    for df in frames:
        assert list(df.index) == NAMES
        assert df["y"].tolist() == targets
        assert all(same(a, b) for a, b in zip(df["structure"], structures))


def test_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "a", "c", "d"],
            "cif": [
                (REG / "1000041.cif").read_text(),
                "",
                (REG / "9011998.cif").read_text(),
                "garbage",
                (REG / "9011998.cif").read_text(),
            ],
            "y": ["1", "2", "3", "4", ""],
        }
    ).to_csv(path, index=False)
    with pytest.raises(DatasetError) as info:
        load_cif_table(path, target_columns="y", cache=False)
    assert [e[0] for e in info.value.errors] == ["b", "a", "d"]
    df = load_cif_table(path, target_columns=["y"], on_error="skip", cache=False)
    assert list(df.index) == ["a"]
    reasons = dict(df.attrs["errors"])
    assert sorted(reasons) == ["a", "b", "c", "d"]
    assert reasons["b"] == "no structure in column 'cif' (row 1)"
    assert reasons["c"].startswith("unreadable CIF text")
    assert reasons["d"].startswith("missing target 'y' (row 4)")
    with pytest.raises(ValueError, match="has no column 'structure'"):
        load_cif_table(path, structure_column="structure")


# ----------------------------------------------------------------------------------
# Materials Project through the real mp-api client and a loopback server
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mp_docs() -> list[dict]:
    from .mp_server import build_summary_documents

    pytest.importorskip("mp_api.client")
    return build_summary_documents(MP_DIR, limit=30)


@pytest.fixture()
def mp_server(mp_docs):
    from .mp_server import MPTestServer

    with MPTestServer(mp_docs, api_key=KEY) as server:
        yield server


def test_mp_ids_chunked_cached_and_offline_second_call(mp_server, mp_docs, tmp_path: Path) -> None:
    ids = [d["material_id"] for d in mp_docs[:25]]
    endpoint = mp_server.endpoint
    df = load_materials_project(ids, api_key=KEY, endpoint=endpoint, cache=tmp_path, chunk_size=10)
    assert list(df.index) == ids and list(df.columns) == ["structure", "formation_energy_per_atom"]
    assert df["formation_energy_per_atom"].tolist() == [
        d["formation_energy_per_atom"] for d in mp_docs[:25]
    ]
    for doc, structure in zip(mp_docs, df["structure"]):
        assert structure.as_dict() == Structure.from_dict(doc["structure"]).as_dict()
    searches = mp_server.summary_requests()
    assert [len(p["material_ids"].split(",")) for p in searches] == [10, 10, 5]
    assert all(p["_fields"] == "material_id,structure,formation_energy_per_atom" for p in searches)

    # the key never reaches the cache
    files = list((tmp_path / "materials-project").glob("*.json.gz"))
    assert len(files) == 3
    assert all(KEY not in gzip.open(f, "rt").read() for f in files)

    # second call: same rows, no request, even with the server gone and no key at all
    mp_server.stop()
    again = load_materials_project(ids, endpoint=endpoint, cache=tmp_path, chunk_size=10)
    pd.testing.assert_series_equal(
        df["formation_energy_per_atom"], again["formation_energy_per_atom"]
    )
    assert all(a.as_dict() == b.as_dict() for a, b in zip(df["structure"], again["structure"]))


def test_mp_criteria_query_pages(mp_server, mp_docs, tmp_path: Path) -> None:
    df = load_materials_project(
        criteria={"formation_energy": (-2.0, -1.0)},
        fields=["formation_energy_per_atom", "band_gap"],
        api_key=KEY,
        endpoint=mp_server.endpoint,
        cache=tmp_path,
        chunk_size=4,
    )
    expected = [d for d in mp_docs if -2.0 <= d["formation_energy_per_atom"] <= -1.0]
    assert len(expected) > 4  # several pages
    assert list(df.index) == [d["material_id"] for d in expected]
    assert df["band_gap"].tolist() == [d["band_gap"] for d in expected]
    searches = mp_server.summary_requests()
    assert searches[0]["formation_energy_per_atom_min"] == "-2.0"
    assert len(searches) == -(-len(expected) // 4)
    assert [p.get("_skip", "0") for p in searches] == [str(4 * i) for i in range(len(searches))]


def test_mp_retries_then_gives_up(mp_server, mp_docs, tmp_path: Path) -> None:
    ids = [d["material_id"] for d in mp_docs[:3]]
    mp_server.fail_next = 2
    df = load_materials_project(
        ids, api_key=KEY, endpoint=mp_server.endpoint, cache=False, retries=2, retry_delay=0
    )
    assert list(df.index) == ids
    assert len(mp_server.summary_requests()) == 3
    mp_server.fail_next = 5
    with pytest.raises(ConnectionError, match="failed 2 times"):
        load_materials_project(
            ids, api_key=KEY, endpoint=mp_server.endpoint, cache=False, retries=1, retry_delay=0
        )


def test_mp_key_handling(mp_server, mp_docs, tmp_path: Path, monkeypatch) -> None:
    ids = [mp_docs[0]["material_id"]]
    wrong = "f" * 32
    with pytest.raises(PermissionError, match="rejected the API key") as info:
        load_materials_project(
            ids, api_key=wrong, endpoint=mp_server.endpoint, cache=False, retry_delay=0
        )
    assert wrong not in str(info.value)
    n_requests = len(mp_server.requests)
    with pytest.raises(ValueError, match="has 5 characters; MP keys have 32"):
        load_materials_project(ids, api_key="short", endpoint=mp_server.endpoint, cache=False)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no Materials Project API key"):
        load_materials_project(ids, endpoint=mp_server.endpoint, cache=False)
    assert len(mp_server.requests) == n_requests  # no request without a usable key
    monkeypatch.setenv("MP_API_KEY", KEY)
    df = load_materials_project(ids, endpoint=mp_server.endpoint, cache=False)
    assert list(df.index) == ids
    with pytest.raises(ValueError, match="give material_ids and/or criteria"):
        load_materials_project(endpoint=mp_server.endpoint)


def test_mp_missing_ids_and_values(mp_docs, tmp_path: Path) -> None:
    from .mp_server import MPTestServer

    docs = [dict(d) for d in mp_docs[:4]]
    docs[1]["efermi"] = None
    ids = [d["material_id"] for d in docs] + ["mp-999999"]
    with MPTestServer(docs, api_key=KEY) as server:
        with pytest.raises(DatasetError) as info:
            load_materials_project(
                ids, fields=["efermi"], api_key=KEY, endpoint=server.endpoint, cache=tmp_path
            )
        reasons = dict(info.value.errors)
        assert sorted(reasons) == sorted([docs[1]["material_id"], "mp-999999"])
        assert reasons["mp-999999"].startswith("not returned by the Materials Project")
        assert reasons[docs[1]["material_id"]].startswith("missing target 'efermi'")
        n_requests = len(server.summary_requests())
        df = load_materials_project(
            ids,
            fields=["efermi"],
            api_key=KEY,
            endpoint=server.endpoint,
            cache=tmp_path,
            missing_target="nan",
            on_error="skip",
        )
        assert len(server.summary_requests()) == n_requests  # answered from the cache
        assert list(df.index) == ids[:4] and np.isnan(df["efermi"].iloc[1])
        assert [e[0] for e in df.attrs["errors"]] == ["mp-999999"]
        skipped = load_materials_project(
            ids, fields=["efermi"], endpoint=server.endpoint, cache=tmp_path, on_error="skip"
        )
        assert list(skipped.index) == [ids[0], ids[2], ids[3]]
        with pytest.raises(ValueError, match="was rejected"):
            load_materials_project(
                ids, fields=["no_such_field"], api_key=KEY, endpoint=server.endpoint, cache=False
            )


def test_mp_server_documents_validate_in_the_client_document_model(mp_server, mp_docs) -> None:
    from mp_api.client import MPRester

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rester = MPRester(KEY, endpoint=mp_server.endpoint, mute_progress_bars=True)
        docs = rester.materials.summary.search(
            material_ids=[mp_docs[0]["material_id"]],
            fields=["material_id", "structure", "band_gap"],
        )
    assert rester.db_version == "2025.09.25"
    assert str(docs[0].material_id) == mp_docs[0]["material_id"]
    assert isinstance(docs[0].structure, Structure)
    assert [p for p, _ in mp_server.requests].count("/heartbeat") >= 1


# ----------------------------------------------------------------------------------
# matbench through matminer
# ----------------------------------------------------------------------------------
def write_matbench_file(path: Path, n: int = 3) -> list[Structure]:
    structures = [from_file(REG / f"{name}.cif") for name in NAMES[:n]]
    payload = {
        "index": list(range(n)),
        "columns": ["structure", "e_form"],
        "data": [[s.as_dict(), -0.5 * i] for i, s in enumerate(structures)],
    }
    with gzip.open(path, "wt") as handle:
        json.dump(payload, handle)
    return structures


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_matbench_offline_error_is_fast_and_explains(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matminer")
    proxy = f"http://127.0.0.1:{closed_port()}"
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as info:
        load_matbench("mp_e_form", data_home=tmp_path, timeout=5)
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "is unreachable" in message
    assert str(tmp_path / "matbench_mp_e_form.json.gz") in message and "path=" in message
    assert not any(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_matbench("matbench_mp_e_form", data_home=tmp_path, download=False)


def test_matbench_local_copy(tmp_path: Path) -> None:
    pytest.importorskip("matminer")
    structures = write_matbench_file(tmp_path / "matbench_mp_e_form.json.gz")
    through_matminer = load_matbench("mp_e_form", data_home=tmp_path)
    direct = load_matbench("mp_e_form", path=tmp_path / "matbench_mp_e_form.json.gz")
    for df in (through_matminer, direct):
        assert list(df.index) == ["0", "1", "2"] and list(df.columns) == ["structure", "e_form"]
        assert df["e_form"].tolist() == [0.0, -0.5, -1.0]
        assert all(same(a, b) for a, b in zip(df["structure"], structures))
    with pytest.raises(ValueError, match="unknown matbench task 'nope'"):
        load_matbench("nope", data_home=tmp_path)
    with pytest.raises(ValueError, match="compositions, not structures"):
        load_matbench("expt_gap", data_home=tmp_path)


def test_id_prop_ids_skip_a_header_as_the_loader_does(tmp_path):
    from skcgcnn.datasets import id_prop_ids, sample_rows

    path = tmp_path / "id_prop.csv"
    path.write_text("\ufeffid,e_form\r\nmp-1,0.5\r\n\r\nmp-2,-1.0\r\n", encoding="utf-8")
    assert id_prop_ids(path) == ["mp-1", "mp-2"]
    path.write_text("7,0.5\n8,nan\n", encoding="utf-8")
    assert id_prop_ids(path) == ["7", "8"]
    assert id_prop_ids(tmp_path / "none.csv") is None
    assert sample_rows(10, None, 0) is None and sample_rows(10, 10, 0) is None
    rows = sample_rows(10, 4, 0)
    expected = np.sort(np.random.default_rng(0).choice(10, size=4, replace=False))
    np.testing.assert_array_equal(rows, expected)
