"""The mean-variance head on the command line: ``skcgcnn train --loss gaussian_nll``
(--nll-beta) writes the test predictions' std, and ``skcgcnn predict`` writes the std of
a model with a variance head (issue 17)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from skcgcnn.cli import build_parser

from .test_cli_train_recipe import NET, run  # the tiny network; main with output captured

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.usefixtures("structure_cache"),  # tests/conftest.py
]

TINY = ["--epochs", "4", "--batch-size", "16", "--train-ratio", "0.6", "--val-ratio", "0.2",
        "--test-ratio", "0.2", "--seed", "0"] + NET


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


@pytest.fixture(scope="module")
def nll_run(folder60, tmp_path_factory) -> Path:
    """A tiny run with the mean-variance head (beta-NLL, beta 0.5)."""
    out = tmp_path_factory.mktemp("nll")
    status, stdout, stderr = run(["train", folder60, "--output-dir", out, "--loss",
                                  "gaussian_nll", "--nll-beta", "0.5"] + TINY)
    assert status == 0, stderr
    assert "test std: mean" in stdout
    return out


def test_loss_choices_are_the_estimators_losses():
    from skcgcnn._defaults import REGRESSION_LOSSES
    from skcgcnn.estimators import LOSSES

    assert REGRESSION_LOSSES == tuple(LOSSES)
    status, help_text, _ = run(["train", "--help"])
    assert status == 0
    assert "gaussian_nll" in help_text and "--nll-beta" in help_text


def test_nll_beta_reaches_the_criterion_and_is_checked(folder60, tmp_path):
    from skcgcnn.cli._training import apply_recipe, check_recipe_args, make_estimator

    args = apply_recipe(build_parser().parse_args(
        ["train", "root", "--loss", "gaussian_nll", "--nll-beta", "0.5"]))
    check_recipe_args(args)
    est, _ = make_estimator(args, None, ("valid_mae", None, True), Path("unused"))
    assert est.loss == "gaussian_nll" and est.get_params()["criterion__beta"] == 0.5

    for argv, needle in ((["--nll-beta", "0.5"], "add --loss gaussian_nll"),
                         (["--loss", "gaussian_nll", "--nll-beta", "2"], "must be in [0, 1]")):
        status, _, err = run(["train", folder60, "--output-dir", tmp_path] + argv + TINY)
        assert status == 2 and "Traceback" not in err
        assert "skcgcnn train: error: --nll-beta" in err and needle in err, err


def test_train_gaussian_nll_writes_a_positive_finite_std(nll_run, folder60):
    results = rows(nll_run / "test_results.csv")
    assert len(results) == 12 and all(len(row) == 4 for row in results)  # id,target,pred,std
    values = np.array([[float(v) for v in row[1:]] for row in results])
    target, pred, std = values.T
    assert np.isfinite(std).all() and (std > 0).all()
    assert np.ptp(std) > 0  # a std per crystal, not one number

    # the NLL (negative once the variance is below 1) falls and stays finite
    losses = [row["train_loss"] for row in json.loads((nll_run / "history.json").read_text())]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses

    record = json.loads((nll_run / "metrics.json").read_text())
    assert record["optimizer"]["loss"] == "gaussian_nll"
    assert record["optimizer"]["nll_beta"] == 0.5
    m = record["test_std"]
    error = np.abs(pred - target)
    assert m["coverage_90"] == pytest.approx(np.mean(error <= 1.645 * std))
    assert m["mean_std"] == pytest.approx(std.mean(), rel=1e-5)
    assert -1 <= m["std_error_spearman"] <= 1
    assert record["test"]["mae"] == pytest.approx(error.mean(), rel=1e-5)

    # the std written is the saved model's, for the same crystals
    from skcgcnn.estimators import load_model

    cifs = [str(folder60 / f"{row[0]}.cif") for row in results]
    mean, want = load_model(nll_run / "model.pt").predict(cifs, return_std=True)
    np.testing.assert_allclose(pred, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, want, rtol=1e-5, atol=1e-7)


def test_predict_writes_the_models_std_and_resumes(nll_run, folder60, tmp_path):
    from skcgcnn.estimators import load_model

    output = tmp_path / "pred.csv"
    status, _, err = run(["predict", nll_run / "model.pt", folder60, "-o", output,
                          "--chunk-size", "7", "--device", "cpu", "-q"])
    assert status == 0, err
    full = output.read_text()
    written = rows(output)
    assert len(written) == 60 and all(len(row) == 4 for row in written)
    cifs = [str(folder60 / f"{row[0]}.cif") for row in written]
    mean, std = load_model(nll_run / "model.pt").predict(cifs, return_std=True)
    np.testing.assert_allclose([float(row[2]) for row in written], mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose([float(row[3]) for row in written], std, rtol=1e-5,
                               atol=1e-7)

    # an interrupted run (20 rows and half a line) resumed gives the same rows (up to
    # float32 noise: the chunks, hence the batches, are cut elsewhere)
    lines = full.splitlines(keepends=True)
    output.write_text("".join(lines[:20]) + lines[20][:9])
    status, _, err = run(["predict", nll_run / "model.pt", folder60, "-o", output,
                          "--chunk-size", "7", "--resume", "--device", "cpu", "-q"])
    assert status == 0, err
    resumed = rows(output)
    assert [row[:2] for row in resumed] == [row[:2] for row in written]
    assert all(len(row) == 4 for row in resumed)
    np.testing.assert_allclose(np.array([row[2:] for row in resumed], dtype=float),
                               np.array([row[2:] for row in written], dtype=float),
                               rtol=1e-5, atol=1e-6)


def test_predict_without_a_variance_head_writes_no_std(tmp_path):
    from skcgcnn.streaming import predict_iter, predicts_std

    from ._shared import PRETRAINED, SAMPLE_REGRESSION, skip_unless

    checkpoint = PRETRAINED / "formation-energy-per-atom.pth.tar"
    skip_unless(checkpoint)
    cifs = sorted(SAMPLE_REGRESSION.glob("*.cif"))[:3]
    output = tmp_path / "pred.csv"
    status, _, err = run(["predict", checkpoint, *cifs, "-o", output, "--device", "cpu",
                          "-q"])
    assert status == 0, err
    assert [len(row) for row in rows(output)] == [3, 3, 3]  # id,target,prediction

    from skcgcnn.estimators import load_model

    model = load_model(checkpoint)
    assert not predicts_std(model)
    chunk = next(predict_iter(model, [str(c) for c in cifs]))  # a list: ids are positions
    assert chunk.std is None and chunk.ids == [0, 1, 2]
    with pytest.raises(ValueError, match="variance head"):
        next(predict_iter(model, [str(c) for c in cifs], return_std=True))

