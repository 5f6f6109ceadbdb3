"""Which elements on the A and B sites of cubic ABO3 perovskites lower the predicted
formation energy?  Per-atom contributions of the published CGCNN formation-energy model.

    python examples/perovskite_sites.py [CHECKPOINT]
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from pymatgen.core import Lattice, Structure

from skcgcnn import load_cgcnn_checkpoint
from skcgcnn.explain import atom_contributions

checkpoint = sys.argv[1] if len(sys.argv) > 1 else (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "cgcnn-reference" /
    "pre-trained" / "formation-energy-per-atom.pth.tar")

A_SITE = ["Ca", "Sr", "Ba", "La", "K", "Na", "Pb"]
B_SITE = ["Ti", "Zr", "Hf", "Sn", "Nb", "Ta", "Fe", "Mn", "Al"]
structures, names = [], []
for a in A_SITE:
    for b in B_SITE:
        # an idealised cubic cell; the lattice constant from the Goldschmidt picture is
        # not needed for a ranking, a common 4.0 Å keeps the geometry the same for all
        structures.append(Structure(Lattice.cubic(4.0), [a, b, "O", "O", "O"],
                                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0],
                                     [0.5, 0, 0.5], [0, 0.5, 0.5]]))
        names.append(f"{a}{b}O3")

pipe = load_cgcnn_checkpoint(checkpoint)
frame = atom_contributions(pipe, pd.Series(structures, index=names))
sites = frame[frame["site"] < 2].assign(site=lambda f: f["site"].map({0: "A", 1: "B"}))
ranking = sites.groupby(["site", "element"])["contribution"].mean().sort_values()
print("mean contribution by site and element (eV/atom; lower = more stable):")
for (site, element), value in ranking.items():
    print(f"  {site}  {element:2s}  {value:7.3f}")
best = frame.groupby("crystal")["prediction"].first().sort_values()
print("lowest predicted formation energies:", best.head(5).round(3).to_dict())
