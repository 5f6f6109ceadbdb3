"""Streaming prediction: skcgcnn.streaming.predict_iter and ``skcgcnn predict --resume``."""
from __future__ import annotations

import csv
import io
import itertools
import shutil

import numpy as np
import pytest

from ._shared import EXPECTED, PRETRAINED, SAMPLE_REGRESSION, needs_shared

pytestmark = needs_shared

CHECKPOINT = PRETRAINED / "formation-energy-per-atom.pth.tar"


@pytest.fixture(scope="module")
def model():
    from skcgcnn.estimators import load_model

    return load_model(CHECKPOINT)


@pytest.fixture(scope="module")
def cifs() -> list[str]:
    return sorted(str(p) for p in SAMPLE_REGRESSION.glob("*.cif"))


def _expected() -> dict[str, float]:
    path = EXPECTED / "formation-energy-per-atom" / "sample_regression.csv"
    with open(path, newline="") as handle:
        return {row[0]: float(row[2]) for row in csv.reader(handle) if row}


def _stems(paths):
    return [p.rsplit("/", 1)[-1][:-4] for p in paths]


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunks_give_the_original_programs_predictions(model, cifs, chunk_size):
    chunks = list(predict_iter_of(model, cifs, chunk_size))
    assert [len(c.ids) for c in chunks] == \
        [min(chunk_size, len(cifs) - lo) for lo in range(0, len(cifs), chunk_size)]
    ids = [i for c in chunks for i in c.ids]
    assert ids == _stems(cifs)
    assert np.concatenate([c.positions for c in chunks]).tolist() == list(range(len(cifs)))
    want = _expected()
    got = np.concatenate([c.values for c in chunks])
    assert np.abs(got - np.array([want[i] for i in ids])).max() <= 1e-4


def predict_iter_of(model, cifs, chunk_size, **kwargs):
    from skcgcnn.streaming import predict_iter

    return predict_iter(model, cifs, ids=_stems(cifs), chunk_size=chunk_size, **kwargs)


def test_inputs_are_read_one_chunk_at_a_time(model, cifs):
    pulled = []

    def source():
        for path in cifs:
            pulled.append(path)
            yield path

    from skcgcnn.streaming import predict_iter

    stream = predict_iter(model, source(), chunk_size=3)
    first = next(stream)
    assert len(first.ids) == 3 and len(pulled) == 3  # nothing read ahead
    assert first.ids == [0, 1, 2]  # positions when no ids are given
    rest = list(stream)
    assert len(pulled) == len(cifs) and sum(len(c.ids) for c in rest) == len(cifs) - 3


def test_skip_ids_and_the_same_values_as_one_batch(model, cifs):
    full = np.concatenate([c.values for c in predict_iter_of(model, cifs, 100)])
    skip = set(_stems(cifs)[::2])
    chunks = list(predict_iter_of(model, cifs, 2, skip_ids=skip))
    ids = [i for c in chunks for i in c.ids]
    assert ids == [i for i in _stems(cifs) if i not in skip]
    positions = np.concatenate([c.positions for c in chunks])
    np.testing.assert_allclose(np.concatenate([c.values for c in chunks]), full[positions],
                               rtol=1e-5, atol=1e-6)


def test_a_bad_structure_is_skipped_with_its_stream_position(model, cifs, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 1\n")
    paths = cifs[:3] + [str(bad)] + cifs[3:5]
    chunks = list(predict_iter_of(model, paths, 2, on_error="skip"))
    errors = [e for c in chunks for e in c.errors]
    assert [(pos, ident) for pos, ident, _ in errors] == [(3, "broken")]
    assert [i for c in chunks for i in c.ids] == _stems(cifs[:5])
    with pytest.raises(ValueError, match="broken"):
        list(predict_iter_of(model, paths, 2))


def test_bad_arguments(model, cifs):
    from skcgcnn.streaming import predict_iter

    with pytest.raises(ValueError, match="chunk_size"):
        next(predict_iter(model, cifs, chunk_size=0))
    with pytest.raises(ValueError, match="on_error"):
        next(predict_iter(model, cifs, on_error="ignore"))
    est = model.steps[-1][1]
    with pytest.raises(ValueError, match="transformer="):
        next(predict_iter(est, cifs))
    with pytest.raises(ValueError, match="do not pass transformer= as well"):
        next(predict_iter(model, cifs, transformer=model.steps[0][1]))
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    three = Pipeline([("id", FunctionTransformer()), *model.steps])
    with pytest.raises(ValueError, match=r"Pipeline of \['FunctionTransformer', "
                                         r"'StructureGraphTransformer', 'CGCNNRegressor'\]"):
        next(predict_iter(three, cifs))


# -- the command ----------------------------------------------------------------------
def _run(argv):
    import contextlib

    from skcgcnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_predict_resumes_an_interrupted_run(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(SAMPLE_REGRESSION, folder)
    full = tmp_path / "full.csv"
    status, _, err = _run(["predict", CHECKPOINT, folder, "-o", full, "--chunk-size", "3",
                           "-q"])
    assert status == 0, err
    rows = full.read_text().splitlines(keepends=True)
    assert len(rows) == len(list(SAMPLE_REGRESSION.glob("*.cif")))
    # an interrupted run: four complete rows and one cut short
    part = tmp_path / "part.csv"
    part.write_text("".join(rows[:4]) + rows[4][:5])
    status, stdout, err = _run(["predict", CHECKPOINT, folder, "-o", part, "--resume",
                                "--chunk-size", "2", "-q"])
    assert status == 0, err
    assert part.read_text().startswith("".join(rows[:4]))
    _same_rows(part, full)
    assert f"predicted {len(rows) - 4} crystals" in stdout
    # a finished run resumed predicts nothing and changes nothing
    before = part.read_text()
    status, stdout, err = _run(["predict", CHECKPOINT, folder, "-o", part, "--resume", "-q"])
    assert status == 0, err
    assert part.read_text() == before and "predicted 0 crystals" in stdout


def _same_rows(a, b):
    """The same ids and targets in the same order, predictions within float rounding
    (other chunks make other batches)."""
    ra, rb = ([row for row in csv.reader(open(p, newline="")) if row] for p in (a, b))
    assert [r[:2] for r in ra] == [r[:2] for r in rb]
    np.testing.assert_allclose([float(r[2]) for r in ra], [float(r[2]) for r in rb],
                               rtol=1e-5, atol=1e-6)


def test_predict_rows_do_not_depend_on_the_chunk_size(tmp_path):
    outputs = []
    for size in (1, 1000):
        out = tmp_path / f"p{size}.csv"
        status, _, err = _run(["predict", CHECKPOINT, SAMPLE_REGRESSION, "-o", out,
                               "--chunk-size", size, "-q"])
        assert status == 0, err
        outputs.append([row for row in csv.reader(open(out, newline="")) if row])
    a, b = outputs
    assert [r[:2] for r in a] == [r[:2] for r in b]
    np.testing.assert_allclose([float(r[2]) for r in a], [float(r[2]) for r in b],
                               rtol=1e-5, atol=1e-6)


def test_predict_chunking_options_are_checked(tmp_path):
    status, _, err = _run(["predict", CHECKPOINT, SAMPLE_REGRESSION, "--chunk-size", "0"])
    assert status == 2 and "--chunk-size 0" in err
    status, _, err = _run(["predict", CHECKPOINT, SAMPLE_REGRESSION, "--resume"])
    assert status == 2 and "--resume needs --output" in err


def test_list_cgcnn_folder_reads_no_cif(tmp_path):
    from skcgcnn.datasets import DatasetError, list_cgcnn_folder

    folder = tmp_path / "data"
    shutil.copytree(SAMPLE_REGRESSION, folder)
    listed = list_cgcnn_folder(folder)
    ids = [line.split(",")[0] for line in (folder / "id_prop.csv").read_text().split()]
    assert listed.index.tolist() == ids
    assert listed["path"].tolist() == [str(folder / f"{i}.cif") for i in ids]
    (folder / f"{ids[2]}.cif").unlink()
    with pytest.raises(DatasetError, match=ids[2]):
        list_cgcnn_folder(folder)
    skipped = list_cgcnn_folder(folder, on_error="skip")
    assert ids[2] not in skipped.index and skipped.attrs["errors"][0][0] == ids[2]
    assert list(itertools.chain(skipped.columns)) == ["path", "target"]
