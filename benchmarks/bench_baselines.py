"""Featurization speed of the matminer featurizers considered for skcgcnn.baselines.

Times each featurizer on the first N crystals of a CGCNN folder (serially, one process)
and prints milliseconds per structure, the number of features and failures. This is how
the featurizers of the "structure-gb" baseline were chosen (see docs/benchmark.md).

Usage::

    python benchmarks/bench_baselines.py [DATA_DIR] [--n 100] [--slow]
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

logger = logging.getLogger("bench_baselines")

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/mp-formation-energy-36737/sample-500"
)


def featurizers(slow: bool) -> dict[str, object]:
    from matminer.featurizers import structure as st

    from skcgcnn.baselines import ElementPropertyPreset, SineCoulombEigenvalues

    out = {
        "ElementPropertyPreset(magpie)": ElementPropertyPreset("magpie"),
        "DensityFeatures": st.DensityFeatures(),
        "GlobalSymmetryFeatures": st.GlobalSymmetryFeatures(
            ["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]
        ),
        "StructuralComplexity": st.StructuralComplexity(),
        "SineCoulombEigenvalues(32)": SineCoulombEigenvalues(32),
    }
    if slow:
        out.update({
            "ChemicalOrdering": st.ChemicalOrdering(),
            "MaximumPackingEfficiency": st.MaximumPackingEfficiency(),
            "SiteStatsFingerprint(CoordinationNumber_ward-prb-2017)":
                st.SiteStatsFingerprint.from_preset("CoordinationNumber_ward-prb-2017"),
            "SiteStatsFingerprint(LocalPropertyDifference_ward-prb-2017)":
                st.SiteStatsFingerprint.from_preset("LocalPropertyDifference_ward-prb-2017"),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=100, help="number of structures")
    parser.add_argument("--slow", action="store_true",
                        help="also time slow featurizers (SiteStatsFingerprint, ...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")

    from skcgcnn.baselines import MatminerFeaturizer
    from skcgcnn.datasets import load_cgcnn_folder

    df = load_cgcnn_folder(args.data_dir, limit=args.n)
    structures = list(df["structure"])
    sites = sum(len(s) for s in structures) / len(structures)
    logger.info("%d structures, %.1f sites on average", len(structures), sites)
    logger.info("| featurizer | ms / structure | features | failures |")
    logger.info("|---|---|---|---|")
    for name, featurizer in featurizers(args.slow).items():
        feat = MatminerFeaturizer([featurizer], n_jobs=1)
        start = time.perf_counter()
        X = feat.fit_transform(structures)
        elapsed = time.perf_counter() - start
        logger.info("| %s | %.1f | %d | %d |", name, 1000 * elapsed / len(structures),
                    X.shape[1], len(feat.failed_indices_))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
