"""scikit-learn's estimator checks on StructureGraphTransformer, CGCNNRegressor,
CGCNNClassifier and CGCNNEnsembleRegressor.

scikit-learn's checks feed estimators 2-D numeric arrays (``make_blobs``, random
floats).  Ours take other inputs: the transformer a sequence of crystal structures
(or CIF paths), the estimators the GraphCollection the transformer makes.  So their
tags say ``input_tags.two_d_array = False``, which makes ``parametrize_with_checks``
run only the first check (that the estimator clones) and skip the rest, as it does
for every non-tabular estimator.  This file therefore

1. runs ``parametrize_with_checks`` (what it runs for such inputs);
2. runs by name every check of the API group that needs no 2-D data
   (``API_CHECKS``), with the two that skorch's design fails listed and explained
   (``SKORCH_FAILS``);
3. lists every other check with the reason it cannot apply to structure inputs
   (``NOT_APPLICABLE``), and fails when a scikit-learn upgrade brings a check that
   is in neither list;
4. tests what those data checks stand for -- fit returns self, leaves its
   parameters alone, is idempotent, pickles, refuses empty / NaN / one-class input,
   answers the same for a subset or a permutation -- on small real structures.
"""
from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks, get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator, parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from skcgcnn import (CGCNNClassifier, CGCNNEnsembleRegressor, CGCNNRegressor,
                     StructureGraphTransformer)
from skcgcnn.estimators import make_cgcnn_pipeline

from .test_graph import bcc_iron, perovskite, rock_salt

TINY = dict(module__atom_fea_len=8, module__n_conv=1, module__h_fea_len=8, batch_size=4,
            max_epochs=2, random_state=0)


def estimators():
    return [StructureGraphTransformer(), CGCNNRegressor(**TINY), CGCNNClassifier(**TINY),
            CGCNNEnsembleRegressor(n_estimators=2, **TINY),
            CGCNNRegressor(loss="gaussian_nll", **TINY)]  # a mean-variance head


# -- 1. parametrize_with_checks -------------------------------------------------------
@parametrize_with_checks(estimators())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- 2. the API checks that need no 2-D data -----------------------------------------------
API_CHECKS = [
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
    "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimators_unfitted", "check_transformers_unfitted",
]

#: Checks the skorch estimators fail by skorch's design, not ours.
SKORCH_FAILS = {
    "check_no_attributes_set_in_init":
        "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_; "
        "clone, get_params and set_params work regardless (tested below)",
    "check_set_params":
        "skorch's get_params lists its private _params_to_validate set; the check "
        "sets every listed parameter to inf, and skorch's set_params then calls .add "
        "on a float",
}

#: The check that CGCNNEnsembleRegressor fails by taking its members' parameters as **kwargs.
ENSEMBLE_FAILS = {
    "check_no_attributes_set_in_init":
        "the member parameters given as **member_params are stored as attributes of "
        "their own names (as skorch stores module__*), which the check cannot find in "
        "the __init__ signature; get_params lists them and clone / set_params / "
        "GridSearchCV use them (tests/test_ensemble.py)",
}


def _api_cases():
    for estimator in estimators():
        for name in API_CHECKS:
            marks = []
            if name in SKORCH_FAILS and isinstance(estimator, (CGCNNRegressor,
                                                               CGCNNClassifier)):
                marks = [pytest.mark.xfail(reason=SKORCH_FAILS[name], strict=True)]
            if name in ENSEMBLE_FAILS and isinstance(estimator, CGCNNEnsembleRegressor):
                marks = [pytest.mark.xfail(reason=ENSEMBLE_FAILS[name], strict=True)]
            yield pytest.param(estimator, name, marks=marks,
                               id=f"{type(estimator).__name__}-{name}")


@pytest.mark.parametrize("estimator, check_name", list(_api_cases()))
def test_api_checks(estimator, check_name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(estimator_checks, check_name)(type(estimator).__name__, estimator)


# -- 3. the checks that cannot apply ----------------------------------------------------
_ARRAYS = "feeds 2-D numeric arrays to fit"
NOT_APPLICABLE = {
    # inputs of other kinds: structures are neither numbers nor sparse nor complex
    "check_array_api_input": "array-API namespaces of numeric arrays",
    "check_complex_data": "complex-valued arrays",
    "check_dtype_object": "object arrays of numbers and strings as features",
    "check_estimator_sparse_array": "sparse arrays",
    "check_estimator_sparse_matrix": "sparse matrices",
    "check_estimator_sparse_tag": "sparse arrays",
    "check_estimators_dtypes": "float32 / int arrays",
    "check_estimators_nan_inf": "NaN / inf features (structures have no such values; "
                                "NaN targets: test_bad_targets_are_refused)",
    "check_f_contiguous_array_estimator": "memory layouts of arrays",
    "check_readonly_memmap_input": "read-only memory-mapped arrays",
    "check_fit1d": "1-D numeric X (a 1-D sequence of structures is our input)",
    "check_fit2d_1feature": _ARRAYS,
    "check_fit2d_1sample": _ARRAYS,
    "check_fit2d_predict1d": _ARRAYS,
    "check_positive_only_tag_during_fit": _ARRAYS,
    "check_n_features_in": "n_features_in_: structures have no feature columns",
    "check_n_features_in_after_fitting": "n_features_in_: structures have no feature "
                                         "columns",
    "check_estimators_partial_fit_n_features": "n_features_in_ across partial_fit calls",
    "check_classifier_data_not_an_array": "list / array forms of numeric X",
    "check_regressor_data_not_an_array": "list / array forms of numeric X",
    "check_transformer_data_not_an_array": "list / array forms of numeric X",
    "check_regressors_int": "integer feature arrays",
    # what these stand for is tested on structures in section 4
    "check_estimators_fit_returns_self": "test_fit_returns_self_and_keeps_its_params",
    "check_estimators_overwrite_params": "test_fit_returns_self_and_keeps_its_params",
    "check_dont_overwrite_parameters": "test_fit_returns_self_and_keeps_its_params",
    "check_dict_unchanged": "test_predicting_changes_nothing",
    "check_fit_check_is_fitted": "test_fit_returns_self_and_keeps_its_params",
    "check_fit_score_takes_y": "test_fit_returns_self_and_keeps_its_params",
    "check_estimators_pickle": "test_pickle_and_idempotent_fit",
    "check_fit_idempotent": "test_pickle_and_idempotent_fit",
    "check_methods_sample_order_invariance": "test_subset_and_order_invariance",
    "check_methods_subset_invariance": "test_subset_and_order_invariance",
    "check_estimators_empty_data_messages": "test_empty_input_is_refused",
    "check_supervised_y_no_nan": "test_bad_targets_are_refused",
    "check_requires_y_none": "test_bad_targets_are_refused",
    "check_supervised_y_2d": "test_regressor_multioutput",
    "check_regressor_multioutput": "test_regressor_multioutput",
    "check_classifiers_regression_target": "test_bad_targets_are_refused",
    "check_classifiers_one_label": "test_bad_targets_are_refused",
    "check_classifiers_one_label_sample_weights": "test_bad_targets_are_refused",
    # sample weights on numeric arrays; on crystals in tests/test_recipes.py
    "check_all_zero_sample_weights_error": "test_recipes.py::test_bad_sample_weights",
    "check_sample_weight_equivalence_on_dense_data":
        "test_recipes.py::test_zero_weights_equal_dropping_the_rows",
    "check_sample_weights_list": "test_recipes.py::test_bad_sample_weights",
    "check_sample_weights_not_an_array": "test_recipes.py::test_bad_sample_weights",
    "check_sample_weights_not_overwritten":
        "test_recipes.py::test_zero_weights_equal_dropping_the_rows",
    "check_sample_weights_pandas_series": "test_recipes.py::test_bad_sample_weights",
    "check_sample_weights_shape": "test_recipes.py::test_bad_sample_weights",
    "check_classifiers_classes": "test_classifier_labels",
    "check_classifiers_train": "learning on blobs; tests/test_estimators.py trains on "
                               "real crystals with exact loss / score assertions",
    "check_regressors_train": "learning on random arrays; tests/test_estimators.py "
                              "trains on real crystals",
    "check_decision_proba_consistency": "no decision_function",
    "check_regressors_no_decision_function": "test_regressor_multioutput",
    "check_pipeline_consistency": "test_pipeline_consistency",
    "check_non_transformer_estimators_n_iter": "max_epochs, not n_iter_: skorch's history",
    "check_transformer_n_iter": "the transformer does not iterate",
    "check_transformer_general": "test_subset_and_order_invariance (fit_transform and "
                                 "fit().transform agree: test_transformers.py)",
}


def _as_2d_array_estimator(estimator):
    """The same estimator, tagged as if it took 2-D arrays: to list what scikit-learn
    would run on it."""
    cls = type(estimator)

    def tags(self):
        out = cls.__sklearn_tags__(self)
        out.input_tags.two_d_array = True
        return out

    return type(cls.__name__, (cls,), {"__sklearn_tags__": tags})()


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_every_check_is_run_or_explained(estimator):
    assert get_tags(estimator).input_tags.two_d_array is False
    names = {getattr(check, "func", check).__name__ for _, check
             in estimator_checks_generator(_as_2d_array_estimator(estimator))}
    unexplained = names - set(API_CHECKS) - set(NOT_APPLICABLE)
    assert not unexplained, f"classify these new scikit-learn checks: {sorted(unexplained)}"


# -- 4. what the data checks stand for, on structures ------------------------------------
def _structures() -> list[Structure]:
    out = [rock_salt(), bcc_iron(), perovskite(), rock_salt(5.5), bcc_iron(2.95),
           perovskite(4.0), Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]),
           Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    return out


@pytest.fixture(scope="module")
def data():
    structures = _structures()
    graphs = StructureGraphTransformer().fit_transform(structures)
    y = np.array([-2.0, 0.0, -3.0, -1.9, 0.1, -2.9, 0.0, -2.2])
    labels = np.where(y < -1, "stable", "unstable")
    return structures, graphs, y, labels


def _fit(estimator, data):
    structures, graphs, y, labels = data
    if isinstance(estimator, StructureGraphTransformer):
        return estimator.fit(structures), structures
    return estimator.fit(graphs, labels if isinstance(estimator, CGCNNClassifier) else y), \
        graphs


def _output(estimator, X):
    if isinstance(estimator, StructureGraphTransformer):
        graphs = estimator.transform(X)
        return np.concatenate([graphs.nbr_idx.ravel(), graphs.nbr_dist.ravel()])
    if isinstance(estimator, CGCNNClassifier):
        return estimator.predict_proba(X)
    if getattr(estimator, "loss", None) == "gaussian_nll":
        return np.column_stack(estimator.predict(X, return_std=True))  # (n, 2)
    return estimator.predict(X)


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_fit_returns_self_and_keeps_its_params(estimator, data):
    estimator = clone(estimator)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    before = _params_hash(estimator)
    public_before = {k for k in vars(estimator) if not k.startswith("_")}
    fitted, _ = _fit(estimator, data)
    assert fitted is estimator
    check_is_fitted(estimator)
    assert _params_hash(estimator) == before
    added = {k for k in vars(estimator) if not k.startswith("_")} - public_before
    assert all(k.endswith("_") for k in added), added
    fresh = clone(estimator)
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)
    assert _params_hash(fresh) == before


def _params_hash(estimator) -> dict:
    return {k: joblib.hash(v) for k, v in estimator.get_params(deep=False).items()}


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_predicting_changes_nothing(estimator, data):
    """Predicting rebinds no public attribute.  The transformer's errors_ and
    kept_indices_ are the exception, by design: they report the last transform."""
    estimator, X = _fit(clone(estimator), data)
    reports = ("errors_", "kept_indices_")
    state = {k: v for k, v in vars(estimator).items()
             if not k.startswith("_") and k not in reports}
    _output(estimator, X)
    after = {k: v for k, v in vars(estimator).items()
             if not k.startswith("_") and k not in reports}
    assert after.keys() == state.keys()
    assert all(after[k] is state[k] for k in state)


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_pickle_and_idempotent_fit(estimator, data):
    estimator, X = _fit(clone(estimator), data)
    first = _output(estimator, X)
    np.testing.assert_array_equal(_output(pickle.loads(pickle.dumps(estimator)), X), first)
    _fit(estimator, data)  # fit again, same random_state: the same model
    np.testing.assert_array_equal(_output(estimator, X), first)


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_subset_and_order_invariance(estimator, data):
    estimator, X = _fit(clone(estimator), data)
    whole = _output(estimator, X)
    order = np.array([5, 2, 7, 0, 1, 6, 3, 4])
    subset = np.array([1, 4, 6])
    pick = (lambda rows: [X[i] for i in rows]) if isinstance(X, list) else (lambda rows: X[rows])
    if isinstance(estimator, StructureGraphTransformer):
        graphs = estimator.transform(X)
        for rows in (order, subset):
            part = estimator.transform(pick(rows))
            for j, i in enumerate(rows):
                for a, b in zip(part.graph(j), graphs.graph(i)):
                    np.testing.assert_array_equal(a, b)
        return
    # eval-mode batch norm: a crystal's answer does not depend on its batch mates
    np.testing.assert_allclose(_output(estimator, pick(order)), whole[order], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(_output(estimator, pick(subset)), whole[subset], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_empty_input_is_refused(estimator, data):
    _, graphs, _, _ = data
    estimator = clone(estimator)
    if isinstance(estimator, StructureGraphTransformer):
        with pytest.raises(ValueError, match=r"0 sample\(s\)"):
            estimator.fit([])
        return
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        estimator.fit(graphs[np.array([], dtype=int)], [])


def test_bad_targets_are_refused(data):
    _, graphs, y, labels = data
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        CGCNNRegressor(**TINY).fit(graphs, bad)
    for est in (CGCNNRegressor(**TINY), CGCNNClassifier(**TINY)):
        with pytest.raises(ValueError, match="needs targets y"):
            est.fit(graphs, None)
    with pytest.raises(ValueError, match="y is continuous"):
        CGCNNClassifier(**TINY).fit(graphs, y + 0.5)
    with pytest.raises(ValueError, match="at least two classes"):
        CGCNNClassifier(**TINY).fit(graphs, np.full(len(y), "stable"))


def test_regressor_multioutput(data):
    _, graphs, y, _ = data
    reg = CGCNNRegressor(**TINY).fit(graphs, np.column_stack([y, 2 * y]))
    assert reg.predict(graphs).shape == (len(y), 2)
    assert reg.predict(graphs[np.array([0])]).shape == (1, 2)
    assert CGCNNRegressor(**TINY).fit(graphs, y).predict(graphs).shape == (len(y),)
    assert not hasattr(reg, "decision_function")
    assert -np.inf < reg.score(graphs, np.column_stack([y, 2 * y])) <= 1.0


def test_classifier_labels(data):
    _, graphs, _, labels = data
    clf = CGCNNClassifier(**TINY).fit(graphs, labels)
    assert clf.classes_.tolist() == ["stable", "unstable"]
    assert set(clf.predict(graphs)) <= {"stable", "unstable"}
    proba = clf.predict_proba(graphs)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(graphs), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(graphs, labels) == np.mean(clf.predict(graphs) == labels)


def test_pipeline_consistency(data):
    structures, _, y, _ = data
    pipe = make_cgcnn_pipeline(**TINY).fit(structures, y)
    by_hand = CGCNNRegressor(**TINY).fit(StructureGraphTransformer().fit_transform(structures),
                                         y)
    np.testing.assert_array_equal(pipe.predict(structures),
                                  by_hand.predict(pipe[0].transform(structures)))
