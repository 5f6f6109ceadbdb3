"""What a core install (no extras) can do, and what skcgcnn does to its host process.

Each test runs a fresh interpreter: one where the optional packages cannot be imported
(as after ``pip install skcgcnn`` without extras), or one whose environment and allocator
settings are still untouched.  The real core install (a venv built from the pins without
the extras) is checked by ``.ci/core-install.sh`` in CI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ._shared import PRETRAINED, SAMPLE500, SAMPLE_REGRESSION, needs_shared

REPO = Path(__file__).resolve().parents[1]

#: The packages of the extras; a core install has none of them.
OPTIONAL = ("matminer", "optuna", "optuna_integration", "mp_api", "ase", "gemmi")

# Made-up crystals and a tiny fit, shared by the scripts below.
FIT = textwrap.dedent("""
    import numpy as np
    from pymatgen.core import Lattice, Structure
    from sklearn.pipeline import Pipeline
    from skcgcnn import CGCNNRegressor, StructureGraphTransformer

    structures = [Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
                  for a in np.linspace(2.8, 3.6, 6)]
    pipe = Pipeline([("graph", StructureGraphTransformer()),
                     ("cgcnn", CGCNNRegressor(max_epochs=1, batch_size=3, random_state=0,
                                              verbose=0, module__n_conv=1))])
    pipe.fit(structures, np.linspace(-1, 1, 6))
    assert np.isfinite(pipe.predict(structures)).all()
""")


def _python(code: str, *, block: tuple[str, ...] = (), env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this checkout first on the path) in which the
    modules ``block`` cannot be imported."""
    # a None entry in sys.modules makes `import name` raise ImportError
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "SKCGCNN_NO_MALLOPT")}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    base.update(env or {})
    return subprocess.run([sys.executable, "-c", prelude + code], env=base, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# -- the core install ------------------------------------------------------------------
def test_core_install_trains_and_predicts_with_the_default_features():
    done = _python(FIT + "print(sorted(m for m, v in sys.modules.items() if v is not None "
                   f"and m.split('.')[0] in {OPTIONAL!r}))", block=OPTIONAL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@needs_shared
def test_core_install_loads_and_runs_an_original_checkpoint(tmp_path):
    out = tmp_path / "predictions.csv"
    code = textwrap.dedent(f"""
        from skcgcnn import load_cgcnn_checkpoint
        from skcgcnn.cli import main
        load_cgcnn_checkpoint({str(PRETRAINED / "formation-energy-per-atom.pth.tar")!r})
        sys.exit(main(["predict", "-q", {str(PRETRAINED / "formation-energy-per-atom.pth.tar")!r},
                       {str(SAMPLE_REGRESSION)!r}, "-o", {str(out)!r}]))
    """)
    done = _python(code, block=OPTIONAL)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 10


@needs_shared
def test_core_install_benchmarks_the_dummy_model(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    rows = (SAMPLE500 / "id_prop.csv").read_text().splitlines()[:12]
    (folder / "id_prop.csv").write_text("\n".join(rows) + "\n")
    for row in rows:
        name = row.split(",")[0] + ".cif"
        (folder / name).write_bytes((SAMPLE500 / name).read_bytes())
    done = _python(f"from skcgcnn.cli import main\nsys.exit(main(['benchmark', '-q', "
                   f"{str(folder)!r}, '--models', 'dummy', '--cv', '2']))", block=OPTIONAL)
    assert done.returncode == 0, done.stderr


# -- the host process ------------------------------------------------------------------
# Records calls of the allocator setting, then imports skcgcnn and fits a model.
WATCH = textwrap.dedent("""
    import os
    before = dict(os.environ)
    import skcgcnn, skcgcnn._malloc as _malloc
    calls = []
    _keep = _malloc.keep_freed_memory
    _malloc.keep_freed_memory = lambda: calls.append(1) or _keep()
""")
# The names whose values changed; torch sets some of its own (KMP_*, TORCH*) when used.
REPORT = "print(json.dumps({'env': sorted(k for k in set(os.environ) | set(before) " \
    "if os.environ.get(k) != before.get(k) and not k.startswith(('KMP_', 'TORCH'))), " \
    "'omp': os.environ.get('OMP_WAIT_POLICY'), 'mallopt_calls': len(calls)}))"


def _report(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_fit_leave_the_process_alone():
    report = _report(_python("import json\n" + WATCH + FIT + REPORT))
    assert report == {"env": [], "omp": None, "mallopt_calls": 0}


def test_the_opt_in_sets_omp_wait_policy_and_malloc():
    code = ("import json\n" + WATCH + "applied = skcgcnn.set_cpu_performance_defaults()\n"
            "import torch\n" + REPORT.replace("}))", ", 'applied': applied}))"))
    report = _report(_python(code))
    on_glibc = sys.platform.startswith("linux")
    assert report == {"env": ["OMP_WAIT_POLICY"], "omp": "PASSIVE", "mallopt_calls": 1,
                      "applied": {"OMP_WAIT_POLICY": "PASSIVE", "mallopt": on_glibc}}


def test_the_opt_in_keeps_a_users_settings():
    code = ("import json, logging\nlogging.basicConfig()\nimport torch\nimport skcgcnn\n"
            "print(json.dumps(skcgcnn.set_cpu_performance_defaults()))")
    report = _report(_python(code, env={"OMP_WAIT_POLICY": "ACTIVE",
                                        "SKCGCNN_NO_MALLOPT": "1"}))
    assert report == {"OMP_WAIT_POLICY": "ACTIVE", "mallopt": False}


def test_the_opt_in_after_torch_says_it_comes_too_late():
    done = _python("import logging\nlogging.basicConfig()\nimport torch\nimport skcgcnn\n"
                   "skcgcnn.set_cpu_performance_defaults()")
    assert done.returncode == 0, done.stderr
    assert "OMP_WAIT_POLICY=PASSIVE was set after torch was imported" in done.stderr


def test_the_command_line_applies_the_opt_in():
    report = _report(_python(
        "import json, os\nfrom skcgcnn.cli import main\nmain(['--version'])\n"
        "print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY')}))"))
    assert report == {"omp": "PASSIVE"}
