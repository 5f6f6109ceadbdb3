"""UncertaintyFeatures: the ensemble's spread and the domain distance as features of the
error, alone and as MAPIE's residual estimator (issue 28 item 5)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline

from skcgcnn import (CGCNNEnsembleRegressor, CGCNNRegressor, OutsideDomainWarning,
                     StructureGraphTransformer, UncertaintyFeatures)

from .test_conformal import TINY, _crystals

mapie_regression = pytest.importorskip("mapie.regression")
from mapie.conformity_scores import ResidualNormalisedScore  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    train, cal, test = _crystals(12, 0.0), _crystals(16, 0.02), _crystals(9, 0.03)
    pipe = Pipeline([("graph", StructureGraphTransformer()),
                     ("cgcnn", CGCNNEnsembleRegressor(n_estimators=2, domain="knn", **TINY))])
    pipe.fit(*train)
    return pipe, train, cal, test


def _quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutsideDomainWarning)
        return call(*args, **kwargs)


def test_columns_are_the_logs_of_what_predict_answers(fitted):
    pipe, _, _, (x_test, _) = fitted
    features = UncertaintyFeatures(pipe).fit()
    columns = features.transform(x_test)
    _, std, distance = _quiet(pipe.predict, x_test, return_std=True, return_domain=True)
    np.testing.assert_array_equal(columns, np.column_stack([np.log(std), np.log(distance)]))
    assert list(features.get_feature_names_out()) == ["log_std", "log_distance"]
    raw = UncertaintyFeatures(pipe, features=("distance", "epistemic_std"), log=False).fit()
    np.testing.assert_array_equal(raw.transform(x_test), np.column_stack([distance, std]))
    assert raw.n_features_out_ == 2
    # on graphs, with the network alone
    graphs = pipe[0].transform(x_test)
    np.testing.assert_array_equal(UncertaintyFeatures(pipe[-1]).fit().transform(graphs),
                                  columns)


def test_clone_keeps_the_fitted_model(fitted):
    pipe, *_ = fitted
    features = UncertaintyFeatures(pipe, features=("distance",))
    copy = clone(features)
    assert copy.model is pipe and copy.features == ("distance",)
    assert clone(make_pipeline(features, LinearRegression()))[0].model is pipe


def test_what_the_model_cannot_answer_is_named(fitted):
    pipe, (x_train, y_train), _, _ = fitted
    with pytest.raises(NotFittedError, match="fit it first"):
        UncertaintyFeatures(CGCNNEnsembleRegressor(**TINY)).fit()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        UncertaintyFeatures(pipe).transform(x_train)
    with pytest.raises(TypeError, match="CGCNNEnsembleRegressor or CGCNNRegressor"):
        UncertaintyFeatures(LinearRegression()).fit()
    with pytest.raises(ValueError, match="use one or more of"):
        UncertaintyFeatures(pipe, features=("spread",)).fit()
    with pytest.raises(ValueError, match="variance heads predict"):
        UncertaintyFeatures(pipe, features=("aleatoric_std",)).fit()
    single = Pipeline([("graph", StructureGraphTransformer()),
                       ("cgcnn", CGCNNRegressor(**TINY))]).fit(x_train, y_train)
    with pytest.raises(ValueError, match="fit it with domain='knn'"):
        UncertaintyFeatures(single, features=("distance",)).fit()
    with pytest.raises(ValueError, match="loss='gaussian_nll'"):
        UncertaintyFeatures(single, features=("std",)).fit()
    with pytest.raises(ValueError, match="use a CGCNNEnsembleRegressor"):
        UncertaintyFeatures(single, features=("epistemic_std",)).fit()


def test_residual_normalised_intervals_scale_with_the_predicted_error(fitted):
    pipe, _, (x_cal, y_cal), (x_test, _) = fitted
    score = ResidualNormalisedScore(
        residual_estimator=make_pipeline(UncertaintyFeatures(pipe), LinearRegression()),
        split_size=0.5, random_state=0)
    conformal = mapie_regression.SplitConformalRegressor(
        pipe, confidence_level=0.8, conformity_score=score, prefit=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimator does not appear fitted")
        warnings.simplefilter("ignore", OutsideDomainWarning)
        conformal.conformalize(x_cal, y_cal)
        point, bounds = conformal.predict_interval(x_test)
        fitted_error_model = score.residual_estimator_
        predicted_error = np.exp(fitted_error_model.predict(x_test))
    # the residual estimator was fitted on the features (two coefficients), and each
    # interval's half-width is one conformal quantile times that crystal's predicted error
    assert fitted_error_model[0].model is pipe
    assert fitted_error_model[-1].coef_.shape == (2,)
    half = (bounds[:, 1, 0] - bounds[:, 0, 0]) / 2
    np.testing.assert_allclose(point, _quiet(pipe.predict, x_test))
    ratio = half / predicted_error
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    assert np.ptp(half) > 0  # the widths differ from crystal to crystal
