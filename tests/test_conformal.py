"""skcgcnn Pipelines as MAPIE's prefit estimator (split conformal intervals)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from skcgcnn import CGCNNEnsembleRegressor, CGCNNRegressor, StructureGraphTransformer

from .test_graph import bcc_iron, perovskite, rock_salt

mapie_regression = pytest.importorskip("mapie.regression")

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=3, random_state=0)
LEVELS = [0.8, 0.9]


def _crystals(n: int, offset: float) -> tuple[list, np.ndarray]:
    makers = [(rock_salt, 5.2, -2.0), (bcc_iron, 2.8, 0.1), (perovskite, 3.8, -3.0)]
    structures, y = [], []
    for i in range(n):
        make, a, energy = makers[i % 3]
        stretch = offset + 0.04 * (i // 3)
        structures.append(make(a + stretch))
        y.append(energy + 0.5 * stretch)
    return structures, np.array(y)


@pytest.fixture(scope="module")
def splits():
    return _crystals(9, 0.0), _crystals(15, 0.02), _crystals(9, 0.03)


def _pipeline(estimator, train):
    return Pipeline([("graph", StructureGraphTransformer()), ("cgcnn", estimator)]).fit(*train)


@pytest.mark.parametrize("estimator", [CGCNNRegressor(**TINY),
                                       CGCNNEnsembleRegressor(n_estimators=2, **TINY)],
                         ids=["single", "ensemble"])
def test_prefit_pipeline_in_split_conformal_regressor(estimator, splits):
    train, (x_cal, y_cal), (x_test, _) = splits
    pipe = _pipeline(estimator, train)
    conformal = mapie_regression.SplitConformalRegressor(pipe, confidence_level=LEVELS,
                                                         prefit=True)
    with warnings.catch_warnings():
        # MAPIE guesses fittedness from attributes such as coef_ that a Pipeline of
        # structures does not have; the pipeline is fitted
        warnings.filterwarnings("ignore", message="Estimator does not appear fitted")
        conformal.conformalize(x_cal, y_cal)
    point, bounds = conformal.predict_interval(x_test)
    assert bounds.shape == (len(x_test), 2, len(LEVELS))
    np.testing.assert_allclose(point, pipe.predict(x_test))
    # the interval is the point prediction plus or minus the ceil((n+1) level)-th
    # smallest absolute residual on the calibration rows
    residuals = np.sort(np.abs(y_cal - pipe.predict(x_cal)))
    for j, level in enumerate(LEVELS):
        q = residuals[int(np.ceil((len(y_cal) + 1) * level)) - 1]
        np.testing.assert_allclose(bounds[:, 0, j], point - q, rtol=1e-6)
        np.testing.assert_allclose(bounds[:, 1, j], point + q, rtol=1e-6)
    assert (bounds[:, 1, 1] - bounds[:, 0, 1] >= bounds[:, 1, 0] - bounds[:, 0, 0]).all()
    # on the calibration rows themselves, at least the nominal share is covered
    _, cal_bounds = conformal.predict_interval(x_cal)
    for j, level in enumerate(LEVELS):
        inside = (y_cal >= cal_bounds[:, 0, j]) & (y_cal <= cal_bounds[:, 1, j])
        assert inside.mean() >= level
