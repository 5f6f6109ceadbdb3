"""Smoke test of the core install (no extras), run by .ci/core-install.sh in its venv.

It checks that the optional packages are absent, then trains, predicts and loads an
original checkpoint through the library; the command-line part is in the shell script.
Without ``../shared/data`` (beside the repository) only the parts that need no data run.
Usage: python core_smoke.py REPO_ROOT
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger("core-smoke")
OPTIONAL = ("matminer", "optuna", "optuna_integration", "mp_api", "ase")


def main(repo: Path) -> int:
    import skcgcnn
    from pymatgen.core import Lattice, Structure
    from sklearn.pipeline import Pipeline

    from skcgcnn import CGCNNRegressor, StructureGraphTransformer, load_cgcnn_checkpoint

    present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
    if present:
        raise SystemExit(f"the core venv has optional packages installed: {present}")
    if Path(skcgcnn.__file__).resolve().is_relative_to((repo / "skcgcnn").resolve()):
        raise SystemExit(f"skcgcnn is imported from the checkout ({skcgcnn.__file__}), "
                         "not from the core install")
    log.info("skcgcnn %s from %s; absent: %s", skcgcnn.__version__, skcgcnn.__file__,
             ", ".join(OPTIONAL))

    # README's first snippet on made-up crystals: default ("cgcnn") atom features
    structures = [Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
                  for a in np.linspace(2.8, 3.6, 8)]
    y = np.linspace(-1.0, 1.0, 8)
    pipe = Pipeline([("graph", StructureGraphTransformer()),
                     ("cgcnn", CGCNNRegressor(max_epochs=2, batch_size=4, random_state=0,
                                              verbose=0))])
    pred = pipe.fit(structures, y).predict(structures)
    assert pred.shape == (8,) and np.isfinite(pred).all(), pred

    data = repo.parent / "shared" / "data"
    sample500 = data / "mp-formation-energy-36737" / "sample-500"
    reference = data / "cgcnn-reference"
    if not (sample500.is_dir() and reference.is_dir()):
        log.warning("%s not found: skipping the parts that need the shared data", data)
        return 0

    rows = list(csv.reader(open(sample500 / "id_prop.csv")))[:30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crystals = [Structure.from_file(str(sample500 / f"{i}.cif")) for i, _ in rows]
    targets = np.array([float(t) for _, t in rows])
    pipe.fit(crystals, targets)
    assert np.isfinite(pipe.predict(crystals)).all()

    model = load_cgcnn_checkpoint(reference / "pre-trained" / "formation-energy-per-atom.pth.tar")
    expected = {i: float(p) for i, _, p in csv.reader(open(
        reference / "expected-predictions" / "formation-energy-per-atom" / "sample500.csv"))}
    got = model.predict(crystals)
    want = np.array([expected[i] for i, _ in rows])
    # 1e-2: the tie crystals of tests/_ties.py; the others agree to 1e-4 (tests/)
    np.testing.assert_allclose(got, want, atol=1e-2)
    log.info("library: trained on 30 crystals; the formation-energy checkpoint matches the "
             "original's predictions (max |diff| %.1e)", np.abs(got - want).max())
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1])))
