"""
Per-site contributions in perovskites
=====================================

Which elements on the A and B sites of cubic ABO\\ :sub:`3` perovskites lower the
predicted formation energy? :func:`~skcgcnn.explain.atom_contributions` splits the
prediction of the published CGCNN formation-energy model into one contribution per atom
(see :doc:`/explain`).

**Settings:** 63 idealised cubic cells (7 A-site by 9 B-site elements) with a common
lattice constant of 4.0 Å, so the geometry is the same for all and the ranking reads the
model's chemistry, not relaxed structures. No training.
"""

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure

from skcgcnn import load_cgcnn_checkpoint
from skcgcnn.explain import atom_contributions

# sphinx_gallery_start_ignore
if "__file__" not in globals():  # sphinx-gallery runs examples in their folder
    __file__ = str(Path.cwd() / "perovskite_sites.py")
# sphinx_gallery_end_ignore
CHECKPOINT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "cgcnn-reference" /
              "pre-trained" / "formation-energy-per-atom.pth.tar")
A_SITE = ["Ca", "Sr", "Ba", "La", "K", "Na", "Pb"]
B_SITE = ["Ti", "Zr", "Hf", "Sn", "Nb", "Ta", "Fe", "Mn", "Al"]

cells = pd.Series({
    f"{a}{b}O3": Structure(Lattice.cubic(4.0), [a, b, "O", "O", "O"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0],
                            [0.5, 0, 0.5], [0, 0.5, 0.5]])
    for a in A_SITE for b in B_SITE})
pipe = load_cgcnn_checkpoint(CHECKPOINT)
atoms = atom_contributions(pipe, cells)
atoms.head(6).round(3)

# %%
# The predicted formation energy of every A-B pair
# ------------------------------------------------
energy = atoms.groupby("crystal")["prediction"].first()
grid = np.array([[energy[f"{a}{b}O3"] for b in B_SITE] for a in A_SITE])
fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
image = ax.imshow(grid, cmap="viridis")
ax.set(xticks=range(len(B_SITE)), xticklabels=B_SITE, yticks=range(len(A_SITE)),
       yticklabels=A_SITE, xlabel="B site", ylabel="A site",
       title="predicted formation energy of cubic ABO$_3$")
for i in range(len(A_SITE)):
    for j in range(len(B_SITE)):
        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if grid[i, j] < grid.mean() else "black")
fig.colorbar(image, ax=ax, label="eV/atom")
print("lowest:", energy.astype(float).sort_values().head(5).round(3).to_dict())

# %%
# Mean contribution of each element on its site
# ---------------------------------------------
# The A site is site 0 and the B site site 1 of every cell.
sites = atoms[atoms["site"] < 2].assign(site=lambda f: f["site"].map({0: "A", 1: "B"}))
by_site = sites.groupby(["site", "element"])["contribution"].mean()
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
for ax, site in zip(axes, ("A", "B")):
    ranking = by_site[site].sort_values(ascending=False)   # the lowest at the bottom
    ax.barh(ranking.index, ranking.to_numpy(), color="C0" if site == "A" else "C1")
    ax.set(title=f"{site} site", xlabel="mean contribution (eV/atom)")
fig.suptitle("Lower is more stable")

# %%
# Hf and Zr on the B site and the alkaline earths on the A site lower the predicted
# energy; Fe, Mn and Sn on B and Pb on A raise it.
