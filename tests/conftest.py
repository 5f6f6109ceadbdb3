"""Session-wide test settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# One torch thread for the suite and the processes it starts.  fit and predict give
# torch fewer threads when other processes take cores (skcgcnn/_cpu.py), and a fit
# with 1 thread differs from one with 2 in the last float32 bits: under CI's load a
# test that compares two fits bit for bit failed (test_pipeline_consistency, 1.1e-7).
# With a ceiling of one thread nothing changes with the load; the tests of the thread
# choice (test_fast_defaults.py) set 2 threads themselves.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402  (after the variable, which torch reads when it is imported)

torch.set_num_threads(1)

from ._shared import SAMPLE500  # noqa: E402
from ._ties import numpy_above_reference_kernels  # noqa: E402


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
