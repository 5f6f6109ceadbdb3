"""The one validation MAE (issue 27): ``skcgcnn.estimators._scoring.validation_mae``,
which ``skcgcnn train`` records and :class:`skcgcnn.tuning.ValidationMAE` scores with."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error

from skcgcnn.estimators._scoring import ValidationMAE, validation_mae


class _Net:
    """What the scorer asks of a net: ``predict``."""

    def __init__(self, pred):
        self.pred = pred

    def predict(self, X):
        return self.pred


@pytest.mark.parametrize("shape", [(37,), (37, 1), (37, 3)])
def test_validation_mae_is_scikit_learns_to_the_last_bit(shape):
    rng = np.random.default_rng(0)
    y = (100 * rng.normal(size=shape)).astype(np.float32)  # the dataset's float32 targets
    pred = y.astype(np.float64) + rng.normal(size=shape)
    assert validation_mae(_Net(pred), None, y) == mean_absolute_error(y, pred)
    # the regressor's 1-D predictions against the (n, 1) targets of its own split
    if shape == (37, 1):
        assert validation_mae(_Net(pred.ravel()), None, y) == mean_absolute_error(y, pred)


def test_a_diverged_net_records_nan_or_infinity():
    """Where scikit-learn raises ("Input contains NaN"): train's divergence check and
    tune's PruningCallback act on the recorded value."""
    y = np.zeros(3)
    assert math.isnan(validation_mae(_Net(np.array([1.0, np.nan, 2.0])), None, y))
    assert validation_mae(_Net(np.array([1.0, np.inf, 2.0])), None, y) == math.inf


def test_validation_mae_is_the_cached_epoch_scoring_of_the_scorer():
    cb = ValidationMAE()
    assert (cb.scoring, cb.lower_is_better, cb.on_train, cb.name, cb.use_caching) == \
        (validation_mae, True, False, "valid_mae", True)
    assert ValidationMAE("mae").name == "mae"
