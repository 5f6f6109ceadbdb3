"""What ``from skcgcnn import CGCNNRegressor, StructureGraphTransformer`` imports.

The two classes need torch, scikit-learn and skorch at import; everything else is imported
where it is used, so that the line stays close to the cost of those three
(``benchmarks/bench_import.py`` measures it).  pandas and scipy.stats are not on the list:
scikit-learn itself imports them (``sklearn.utils.fixes``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Modules the line must not import: optional extras, plotting, CIF parsing, the
#: neighbour search of scikit-learn, and the parts of skcgcnn the two classes do not use.
NOT_AT_IMPORT = (
    "ase", "mapie", "matminer", "matplotlib", "mp_api", "optuna", "optuna_integration",
    "pymatgen", "pymatgen.core", "pymatgen.io.cif", "pymatgen.optimization.neighbors",
    "sklearn.neighbors", "sklearn.linear_model", "sklearn.decomposition",
    "skcgcnn.baselines", "skcgcnn.benchmark", "skcgcnn.cli", "skcgcnn.datasets",
    "skcgcnn.explain", "skcgcnn.model_selection", "skcgcnn.reporting", "skcgcnn.tuning",
    "skcgcnn.estimators._callbacks", "skcgcnn.estimators._classifier",
    "skcgcnn.estimators._embedder", "skcgcnn.estimators._ensemble",
    "skcgcnn.estimators._persistence", "skcgcnn.graph._cache", "skcgcnn.graph._io",
)


def _imported_by(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after ``code`` runs in a fresh process."""
    check = (f"import json, sys\n{code}\n"
             f"print(json.dumps([m for m in {names!r} if m in sys.modules]))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_two_classes_leaves_the_heavy_modules_alone():
    line = "from skcgcnn import CGCNNRegressor, StructureGraphTransformer"
    assert _imported_by(line, NOT_AT_IMPORT) == []


def test_the_check_sees_a_module_that_is_imported():
    # the same check after using the deferred parts: it must find them
    code = ("from skcgcnn import CGCNNRegressor, StructureGraphTransformer\n"
            "import skcgcnn.reporting\n"
            "from skcgcnn.estimators import save_model\nfrom skcgcnn.graph import GraphCache\n"
            "from pymatgen.core import Lattice")
    assert _imported_by(code, ("skcgcnn.reporting", "skcgcnn.estimators._persistence",
                               "skcgcnn.graph._cache", "pymatgen.core")) == [
        "skcgcnn.reporting", "skcgcnn.estimators._persistence", "skcgcnn.graph._cache",
        "pymatgen.core"]
