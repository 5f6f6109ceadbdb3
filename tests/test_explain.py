from __future__ import annotations

import numpy as np
import pytest

from skcgcnn import load_cgcnn_checkpoint
from skcgcnn.explain import atom_contributions, crystal_embeddings, element_contributions

from ._shared import PRETRAINED, needs_shared
from .test_graph import bcc_iron, perovskite, rock_salt


@pytest.fixture(scope="module")
def pipe():
    return load_cgcnn_checkpoint(PRETRAINED / "formation-energy-per-atom.pth.tar")


@needs_shared
def test_contributions_per_atom(pipe):
    structures = [rock_salt(), bcc_iron(), perovskite()]
    frame = atom_contributions(pipe, structures)
    assert len(frame) == 8 + 2 + 5
    assert frame["element"].tolist()[:8] == ["Na"] * 4 + ["Cl"] * 4
    np.testing.assert_allclose(frame.groupby("crystal")["prediction"].first(),
                               pipe.predict(structures), atol=1e-5)
    # equivalent atoms: every v_i is the same, so h(mean v) = mean h(v) exactly
    fe = frame[frame["crystal"] == 1]
    np.testing.assert_allclose(fe["contribution"], fe["prediction"], atol=1e-5)
    # in NaCl the sodium and chlorine sites differ
    nacl = frame[frame["crystal"] == 0]
    assert abs(nacl["contribution"].iloc[0] - nacl["contribution"].iloc[-1]) > 1e-3
    table = element_contributions(frame)
    assert list(table.columns) == ["mean", "std", "count"]
    assert table["count"].sum() == len(frame)


@needs_shared
def test_embeddings_and_bad_models(pipe):
    emb = crystal_embeddings(pipe, [bcc_iron(), rock_salt()])
    assert emb.shape == (2, 64)
    with pytest.raises(TypeError, match="needs a fitted CGCNNRegressor"):
        atom_contributions(pipe[0], [bcc_iron()])


def test_public_seams_of_the_estimators():
    """explain reads a fitted regressor through check_graphs / embed_atoms only."""
    from sklearn.exceptions import NotFittedError

    from skcgcnn import CGCNNRegressor, StructureGraphTransformer

    graphs = StructureGraphTransformer().fit_transform([rock_salt(), bcc_iron(), perovskite()])
    reg = CGCNNRegressor(max_epochs=1, batch_size=2, random_state=0,
                         module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8)
    with pytest.raises(NotFittedError):
        atom_contributions(reg, graphs)
    with pytest.raises(NotFittedError):
        reg.check_graphs(graphs)
    reg.fit(graphs, [1.0, 2.0, 3.0])
    batches = list(reg.embed_atoms(graphs))
    assert [n for _, _, n in batches] == [2, 1]  # batch_size crystals at a time
    assert [tuple(a.shape) for a, _, _ in batches] == [(10, 8), (5, 8)]
    assert batches[0][1].tolist() == [0] * 8 + [1] * 2
    pooled = reg.predict_crystal_features(graphs)
    np.testing.assert_allclose(pooled[1], batches[0][0][8:].mean(0).numpy(), rtol=1e-6)
    frame = atom_contributions(reg, graphs)
    np.testing.assert_allclose(frame.groupby("crystal")["prediction"].first(),
                               reg.predict(graphs), rtol=1e-5)
    other = StructureGraphTransformer(radius=6.0).fit_transform([rock_salt()])
    with pytest.raises(ValueError, match="other graph settings"):
        reg.check_graphs(other)
    with pytest.raises(ValueError, match="other graph settings"):
        next(iter(reg.embed_atoms(other)))
