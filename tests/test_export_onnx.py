"""skcgcnn.export: ONNX export, and predictions under onnxruntime without torch.

The exported models must predict what the torch models predict, within 1e-5, on the
shared sample-500 crystals: the shipped mp-formation-energy model and small models
fitted here (both convolutions, both poolings, one and two targets).
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.pipeline import Pipeline

from skcgcnn import (CGCNNClassifier, CGCNNRegressor, StructureGraphTransformer,
                     save_model)
from skcgcnn.export import INPUTS, OnnxFileError, OnnxPredictor, export_onnx

from ._shared import SAMPLE500, sample_series

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-5
TINY = dict(module__atom_fea_len=8, module__h_fea_len=16, batch_size=32, verbose=0,
            random_state=0)


@pytest.fixture(scope="module")
def sample():
    """The 500 crystals of sample-500 (Series indexed by id) and their targets."""
    return sample_series(500)


@pytest.fixture(scope="module")
def graphs(sample):
    X, _ = sample
    return StructureGraphTransformer().fit_transform(X)


@pytest.fixture(scope="module")
def pretrained(sample):
    from skcgcnn import load_pretrained

    model = load_pretrained("mp-formation-energy")
    model.steps[0][1].set_params(verbose=0)
    return model, model.predict(sample[0])


@pytest.fixture(scope="module")
def pretrained_onnx(pretrained, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "mp-formation-energy.onnx"
    export_onnx(pretrained[0], path)
    return path


def test_pretrained_model_equals_torch(sample, pretrained, pretrained_onnx):
    _, expected = pretrained
    got = OnnxPredictor(pretrained_onnx).predict(sample[0])
    assert got.shape == expected.shape == (500,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("conv, pooling, n_targets", [("gated", "mean", 1),
                                                      ("simple", "sum", 2)])
def test_fitted_model_equals_torch(sample, graphs, tmp_path, conv, pooling, n_targets):
    """A bare estimator fitted here (its transformer found from graph_params_), with
    two hidden layers; 2-D targets give (n, 2) predictions."""
    _, y = sample
    y = y if n_targets == 1 else np.column_stack([y, 2 * y + 1])
    est = CGCNNRegressor(max_epochs=2, module__n_conv=2, module__n_h=2, module__conv=conv,
                         module__pooling=pooling, **TINY).fit(graphs[:120], y[:120])
    expected = est.predict(graphs)
    path = export_onnx(est, tmp_path / "fitted.onnx")
    got = OnnxPredictor(path, batch_size=64).predict(sample[0])
    assert got.shape == expected.shape == ((500,) if n_targets == 1 else (500, 2))
    assert np.std(expected, axis=0).min() > 1e-3  # a model that tells crystals apart
    # within 1e-5 of the exact network (torch in float64) ...
    np.testing.assert_allclose(got, _float64_prediction(est, graphs), rtol=0, atol=TOL)
    # ... and of torch in float32, whose own sums over up to 100 atoms of an extensive
    # target (|y| up to 57 here) are 1.2e-5 from the exact ones: there within float32's
    # precision at |y| (1e-6 of it) on top of the 1e-5
    rtol = 1e-6 if pooling == "sum" else 0.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=TOL)


def _float64_prediction(est, graphs):
    """What the fitted network predicts when computed in float64."""
    import copy

    import torch

    net = copy.deepcopy(est.module_).double().eval()
    batch = graphs.collate()
    with torch.no_grad():
        scaled = net(torch.from_numpy(batch["atom_fea"]).double(),
                     torch.from_numpy(batch["nbr_idx"]),
                     torch.from_numpy(batch["nbr_dist"]).double(),
                     torch.from_numpy(batch["crystal_idx"])).numpy()
    out = est.target_scaler_.inverse_transform(scaled.reshape(len(graphs), -1))
    return out.ravel() if est.y_ndim_ == 1 else out


def test_any_numbers_of_crystals_and_atoms_in_one_call(sample, pretrained,
                                                       pretrained_onnx):
    """Batches of 1, 7 and 200 crystals of different sizes, each one onnxruntime call,
    give the same predictions as the torch model and as one crystal at a time."""
    X, _ = sample
    _, expected = pretrained
    predictor = OnnxPredictor(pretrained_onnx, batch_size=1000)
    order = np.random.default_rng(0).permutation(500)
    sizes = np.array([len(s) for s in X])
    for rows in (order[:1], order[1:8], order[8:208]):
        graphs = predictor.transform(X.iloc[rows])
        assert len(list(predictor.batches(graphs))) == 1
        got = predictor.predict_graphs(graphs).ravel()
        np.testing.assert_allclose(got, expected[rows], rtol=0, atol=TOL)
    assert len(set(sizes[order[8:208]])) > 10
    one_by_one = [predictor.predict(X.iloc[[r]])[0] for r in order[1:8]]
    np.testing.assert_allclose(one_by_one, expected[order[1:8]], rtol=0, atol=TOL)


def test_inputs_and_metadata(pretrained, pretrained_onnx):
    """The graph's inputs are INPUTS, with the atoms and crystals axes dynamic; the
    metadata rebuilds the model's transformer, atom-feature table included."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(pretrained_onnx),
                                           providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == [name for name, _, _ in INPUTS]
    assert isinstance(inputs["atom_fea"][0], str) and inputs["atom_fea"][1] == 92
    assert isinstance(inputs["n_atoms"][0], str)
    assert isinstance(session.get_outputs()[0].shape[0], str)
    transformer = pretrained[0].steps[0][1]
    predictor = OnnxPredictor(pretrained_onnx)
    ours, theirs = predictor.transformer_.atom_features_, transformer.atom_features_
    assert np.array_equal(ours.available, theirs.available)
    assert np.array_equal(ours.table, theirs.table)
    assert predictor.graph_params_ == {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0,
                                       "step": 0.2, "var": 0.2}
    scaler = pretrained[0].steps[-1][1].target_scaler_
    assert predictor.target_["mean"] == scaler.mean_.tolist()


def test_predicts_without_torch(sample, pretrained, pretrained_onnx):
    """A process that predicts from CIF files with OnnxPredictor never imports torch."""
    X, _ = sample
    _, expected = pretrained
    cifs = [str(SAMPLE500 / f"{i}.cif") for i in X.index[:5]]
    code = (
        "import json, sys\n"
        "from skcgcnn.export import OnnxPredictor\n"
        f"values = OnnxPredictor({str(pretrained_onnx)!r}).predict({cifs!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'values': values.tolist()}))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["torch"] is False
    np.testing.assert_allclose(answer["values"], expected[:5], rtol=0, atol=TOL)


def test_skipped_structure_is_nan(sample, pretrained, pretrained_onnx):
    X, _ = sample
    _, expected = pretrained
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    structures = [X.iloc[0], disordered, X.iloc[1]]
    predictor = OnnxPredictor(pretrained_onnx, on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = predictor.predict(structures)
    assert np.isnan(got[1]) and [pos for pos, _, _ in predictor.errors_] == [1]
    np.testing.assert_allclose(got[[0, 2]], expected[:2], rtol=0, atol=TOL)


# -- what cannot be exported -----------------------------------------------------------
def test_classifier_is_refused_with_what_is_supported(sample, graphs, tmp_path):
    _, y = sample
    labels = (y[:60] > np.median(y[:60])).astype(int)
    clf = CGCNNClassifier(max_epochs=1, module__n_conv=1, **TINY).fit(graphs[:60], labels)
    with pytest.raises(TypeError, match="CGCNNClassifier.*supports a fitted CGCNNRegressor"):
        export_onnx(clf, tmp_path / "clf.onnx")
    assert not (tmp_path / "clf.onnx").exists()


def test_variance_head_and_unfitted_are_refused(sample, graphs, tmp_path):
    _, y = sample
    reg = CGCNNRegressor(max_epochs=1, module__n_conv=1, loss="gaussian_nll",
                         **TINY).fit(graphs[:60], y[:60])
    with pytest.raises(TypeError, match="variance head"):
        export_onnx(reg, tmp_path / "nll.onnx")
    with pytest.raises(ValueError, match="not fitted"):
        export_onnx(CGCNNRegressor(), tmp_path / "unfitted.onnx")
    with pytest.raises(TypeError, match="Pipeline of"):
        export_onnx(Pipeline([("cgcnn", reg)]), tmp_path / "pipe.onnx")


def test_export_checks_the_file_against_torch(pretrained, tmp_path, monkeypatch):
    """A graph that computes something else than the torch model is caught, and its
    file removed."""
    from skcgcnn.export import _network

    forward = _network.ExportableCGCNN.forward

    def off_by_1e3(self, atom_fea, nbr_idx, dist_idx, distances, crystal_idx, n_atoms):
        return forward(self, atom_fea, nbr_idx, dist_idx, distances, crystal_idx,
                       n_atoms) + 1e-3

    monkeypatch.setattr(_network.ExportableCGCNN, "forward", off_by_1e3)
    with pytest.raises(RuntimeError, match="differs from the torch model"):
        export_onnx(pretrained[0], tmp_path / "wrong.onnx")
    assert not (tmp_path / "wrong.onnx").exists()


def test_other_onnx_file_is_refused(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(OnnxFileError, match="not written by skcgcnn"):
        OnnxPredictor(tmp_path / "other.onnx")


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'skcgcnn\[onnx\]'"):
        OnnxPredictor(tmp_path / "any.onnx")


# -- the command line --------------------------------------------------------------------
def test_cli_export(sample, graphs, tmp_path, capsys):
    from skcgcnn.cli import main

    X, y = sample
    pipe = Pipeline([("graph", StructureGraphTransformer()),
                     ("cgcnn", CGCNNRegressor(max_epochs=1, module__n_conv=1, **TINY))])
    pipe.fit(X.iloc[:60], y[:60])
    save_model(pipe, tmp_path / "model.pt")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model.pt"), "--format", "onnx", "-o",
                 str(out), "-q"]) == 0
    assert str(out) in capsys.readouterr().out
    np.testing.assert_allclose(OnnxPredictor(out).predict(X.iloc[:20]),
                               pipe.predict(X.iloc[:20]), rtol=0, atol=TOL)

    labels = (y[:60] > np.median(y[:60])).astype(int)
    clf = Pipeline([("graph", StructureGraphTransformer()),
                    ("cgcnn", CGCNNClassifier(max_epochs=1, module__n_conv=1, **TINY))])
    save_model(clf.fit(X.iloc[:60], labels), tmp_path / "clf.pt")
    assert main(["export", str(tmp_path / "clf.pt"), "-o", str(tmp_path / "c.onnx")]) == 1
    err = capsys.readouterr().err
    assert "skcgcnn export: error:" in err and "CGCNNClassifier" in err
    assert "CGCNNRegressor" in err


def test_cli_default_output_name():
    from skcgcnn.cli.export import default_output

    assert default_output("mp-formation-energy") == "mp-formation-energy.onnx"
    assert default_output("runs/a/model.pt") == "model.onnx"
    assert default_output("formation-energy-per-atom.pth.tar") == \
        "formation-energy-per-atom.onnx"
