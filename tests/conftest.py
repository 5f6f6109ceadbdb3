"""Session-wide test settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ._shared import SAMPLE500
from ._ties import numpy_above_reference_kernels


def pytest_report_header(config) -> list[str]:
    """Say which numpy kernels run: the parity references were made with the AVX2 ones."""
    above = numpy_above_reference_kernels()
    if above:
        return [f"numpy kernels: {', '.join(above)} in use, not those of the parity "
                "references (AVX2); ties at the neighbour cut may differ: run `make test`"]
    return ["numpy kernels: AVX2 or lower, as the parity references"]


# -- fixtures of the command-line tests ----------------------------------------------
@pytest.fixture(scope="module")
def structure_cache(tmp_path_factory):
    """Keep the parsed-structure cache out of the home folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKCGCNN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def folder60(tmp_path_factory) -> Path:
    """A CGCNN folder with the first 60 crystals of sample-500 (links to its CIFs)."""
    if not (SAMPLE500 / "id_prop.csv").is_file():
        pytest.skip("../shared/data is not available")
    root = tmp_path_factory.mktemp("sample60")
    lines = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:60]
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        ident = line.split(",")[0]
        os.symlink(SAMPLE500 / f"{ident}.cif", root / f"{ident}.cif")
    os.symlink(SAMPLE500 / "atom_init.json", root / "atom_init.json")
    return root
