"""Per-atom contributions and learned embeddings of a fitted CGCNN.

CGCNN predicts a crystal's property from the mean of its atoms' learned feature
vectors: ``y = h(mean_i v_i)``, with ``h`` the layers after pooling.  The
contribution of atom ``i`` is ``c_i = h(v_i)``: what the network would predict for a
crystal made entirely of atoms like ``i`` in its environment.  When ``h`` is affine
the mean of the ``c_i`` equals the prediction exactly; for CGCNN's softplus head it
is a first-order picture (``mean c_i`` and the prediction differ by the curvature of
``h`` over the spread of the ``v_i``), which :func:`atom_contributions` reports
alongside, so the user sees how far to trust the split.  This is the site-level
reading of the CGCNN paper (Xie & Grossman 2018, the perovskite A/B-site analysis),
where ranking the contributions of the elements on a site shows which ones lower
the predicted energy.  A model with ``module__pooling="sum"`` (an extensive target)
predicts ``y = sum_i h(v_i)``: there the contributions are per-atom terms that add up
to the prediction exactly (``sum_contribution``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from .estimators._pipeline import split_pipeline
from .graph import GraphCollection


def atom_contributions(model: Any, X: Any) -> pd.DataFrame:
    """Per-atom contributions ``h(v_i)`` of a fitted CGCNNRegressor, in target units.

    Parameters
    ----------
    model : CGCNNRegressor or Pipeline ending in one
        A regressor with one target.
    X : structures (when ``model`` is a Pipeline) or a GraphCollection

    Returns
    -------
    DataFrame
        One row per atom: ``crystal`` (the crystal's id), ``site`` (its index in the
        structure), ``Z``, ``element``, ``contribution``, and for each crystal
        ``prediction`` (the model's output) and ``mean_contribution``; with sum
        pooling also ``sum_contribution``, equal to ``prediction``.
    """
    from pymatgen.core.periodic_table import Element

    from .estimators import CGCNNRegressor
    head, est = split_pipeline(model)
    if not isinstance(est, CGCNNRegressor):
        raise TypeError("atom_contributions needs a fitted CGCNNRegressor (or a Pipeline "
                        "ending in one)")
    check_is_fitted(est)
    if est.n_outputs_ != 1:
        raise ValueError("atom_contributions explains one target; this model has "
                         f"{est.n_outputs_}")
    graphs = est.check_graphs(head.transform(X) if head is not None else X)
    net = est.module_
    mean, scale = float(est.target_scaler_.mean_[0]), float(est.target_scaler_.scale_[0])
    per_atom, per_crystal = [], []
    with torch.no_grad():
        for atoms, crystal_idx, n in est.embed_atoms(graphs):
            per_atom.append(net.head(atoms)[:, 0].cpu().numpy() * scale + mean)
            outputs = net.pool_and_head(atoms, crystal_idx, n)
            per_crystal.append(outputs[:, 0].cpu().numpy() * scale + mean)
    contributions = np.concatenate(per_atom)
    predictions = np.concatenate(per_crystal)
    crystal = np.repeat(np.arange(len(graphs)), graphs.n_atoms)
    site = np.arange(len(graphs.numbers)) - np.repeat(graphs.atom_ptr[:-1], graphs.n_atoms)
    frame = pd.DataFrame({
        "crystal": graphs.ids[crystal],
        "site": site,
        "Z": graphs.numbers.astype(int),
        "element": [Element.from_Z(int(z)).symbol for z in graphs.numbers],
        "contribution": contributions,
    })
    frame["prediction"] = predictions[crystal]
    frame["mean_contribution"] = frame.groupby(crystal)["contribution"].transform("mean")
    if getattr(net, "pooling", "mean") == "sum":
        frame["sum_contribution"] = frame.groupby(crystal)["contribution"].transform("sum")
    return frame


def element_contributions(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and count of the contributions of each element (most negative first)."""
    table = frame.groupby("element")["contribution"].agg(["mean", "std", "count"])
    return table.sort_values("mean")


def crystal_embeddings(model: Any, X: Any) -> np.ndarray:
    """The pooled crystal feature vectors (the input of ``conv_to_fc``), shape (n, F)."""
    head, est = split_pipeline(model)
    graphs = head.transform(X) if head is not None else X
    if not isinstance(graphs, GraphCollection):
        raise TypeError("X must be structures (with a Pipeline) or a GraphCollection")
    return est.predict_crystal_features(graphs)
