"""Tests for skcgcnn.baselines (matminer descriptor pipelines)."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matminer")

from pymatgen.core import Lattice, Structure  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import KFold, cross_val_score  # noqa: E402

from skcgcnn.baselines import (  # noqa: E402
    BASELINES,
    ElementPropertyPreset,
    MatminerFeaturizer,
    SineCoulombEigenvalues,
    make_baseline,
)

from ._shared import sample_series  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),  # matminer's np.matrix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:spglib"),
]

ANGSTROM_IN_BOHR = 1.8897261246257702


@pytest.fixture(scope="module")
def sample40() -> tuple[pd.Series, np.ndarray]:
    return sample_series(40)


@pytest.fixture
def nacl() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def duplicate_site() -> Structure:
    # Two atoms on the same spot: the sine Coulomb matrix is undefined.
    return Structure(Lattice.cubic(4.0), ["Mg", "O", "O"], [[0, 0, 0], [0.5] * 3, [0.5] * 3])


def magpie() -> object:
    from matminer.featurizers.composition import ElementProperty

    return ElementProperty.from_preset("magpie")


def test_magpie_features_of_rock_salt(nacl):
    feat = MatminerFeaturizer([magpie()], input="composition")
    X = feat.fit_transform([nacl])
    names = feat.get_feature_names_out()
    assert X.shape == (1, 132)
    row = dict(zip(names, X[0]))
    assert row["MagpieData minimum Number"] == 11.0
    assert row["MagpieData maximum Number"] == 17.0
    assert row["MagpieData mean Number"] == 14.0
    assert row["MagpieData range Number"] == 6.0
    assert feat.errors_ == []


def test_sine_coulomb_eigenvalues_exact_for_rock_salt(nacl):
    feat = SineCoulombEigenvalues(n_eigs=4)
    matrix = feat.sine_matrix(nacl)
    off = 11 * 17 / (5.64 * np.sqrt(3) * ANGSTROM_IN_BOHR)
    expected = np.array([[0.5 * 11**2.4, off], [off, 0.5 * 17**2.4]])
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)
    eigs = feat.featurize(nacl)
    want = np.sort(np.linalg.eigvalsh(expected))[::-1]
    np.testing.assert_allclose(eigs, [want[0], want[1], 0.0, 0.0], rtol=1e-12)
    assert feat.feature_labels()[3] == "sine coulomb eigenvalue 3"


def test_sine_coulomb_matrix_matches_matminer(sample40):
    from matminer.featurizers.structure import SineCoulombMatrix

    reference = SineCoulombMatrix(flatten=False)
    ours = SineCoulombEigenvalues()
    for structure in sample40[0][:10]:
        # matminer converts with the "Angstrom star" (1.00001495 A), hence rtol 2e-5.
        np.testing.assert_allclose(
            ours.sine_matrix(structure), reference.featurize(structure)[0], rtol=2e-5
        )


def test_failing_structures_do_not_lose_the_rest(nacl, duplicate_site):
    feat = MatminerFeaturizer(
        [SineCoulombEigenvalues(n_eigs=3), ElementPropertyPreset("magpie")], on_error="nan"
    )
    X = feat.fit_transform([nacl, duplicate_site, "/no/such/file.cif", nacl])
    assert X.shape == (4, 3 + 132)
    assert np.isfinite(X[0]).all() and np.isfinite(X[3]).all()
    np.testing.assert_array_equal(X[0], X[3])
    # duplicate sites: the eigenvalues fail, the magpie features do not
    assert np.isnan(X[1, :3]).all()
    assert np.isfinite(X[1, 3:]).all()
    # an unreadable entry: every feature is NaN
    assert np.isnan(X[2]).all()
    # no ids on the structures: the positions stand for them (skcgcnn.structures' rule)
    assert [e[:2] for e in feat.errors_] == [(1, 1), (2, 2)]
    assert feat.errors_[0][2].startswith("SineCoulombEigenvalues: ValueError: sites 1 and 2")
    assert "cannot read the entry: StructureError: structure 2: no such file" \
        in feat.errors_[1][2]
    np.testing.assert_array_equal(feat.failed_indices_, [1, 2])


def test_on_error_raise_names_the_structure(nacl, duplicate_site):
    feat = MatminerFeaturizer([SineCoulombEigenvalues()], on_error="raise").fit([nacl])
    with pytest.raises(ValueError, match=r"structure 1 could not be featurized.*same position"):
        feat.transform([nacl, duplicate_site])


def test_errors_carry_series_ids(nacl, duplicate_site):
    X = pd.Series([nacl, duplicate_site], index=["mp-22862", "bad-1"])
    feat = MatminerFeaturizer([SineCoulombEigenvalues()]).fit(X)
    feat.transform(X)
    assert [(e[0], e[1]) for e in feat.errors_] == [(1, "bad-1")]


def test_bad_parameters_are_reported(nacl):
    with pytest.raises(ValueError, match="input='formula' is not one of"):
        MatminerFeaturizer([magpie()], input="formula").fit([nacl])
    with pytest.raises(TypeError, match=r"featurizers\[0\] is a str"):
        MatminerFeaturizer(["magpie"]).fit([nacl])
    with pytest.raises(TypeError, match="single structure"):
        MatminerFeaturizer([magpie()]).fit(nacl)


def test_non_numeric_features_are_rejected(nacl):
    from matminer.featurizers.structure import GlobalSymmetryFeatures

    feat = MatminerFeaturizer([GlobalSymmetryFeatures()]).fit([nacl])
    with pytest.raises(TypeError, match="non-numeric feature 'crystal_system' = 'cubic'"):
        feat.transform([nacl])


def test_parallel_featurization_equals_serial(sample40):
    X = list(sample40[0][:12])
    serial = MatminerFeaturizer([SineCoulombEigenvalues(n_eigs=8)], n_jobs=1).fit_transform(X)
    parallel = MatminerFeaturizer([SineCoulombEigenvalues(n_eigs=8)], n_jobs=2).fit_transform(X)
    np.testing.assert_array_equal(serial, parallel)


def test_progress_bar_when_verbose(nacl, capsys):
    MatminerFeaturizer([magpie()], input="composition", verbose=1).fit_transform([nacl])
    assert "featurizing (ElementProperty)" in capsys.readouterr().err
    MatminerFeaturizer([magpie()], input="composition", verbose=0).fit_transform([nacl])
    assert "featurizing" not in capsys.readouterr().err


def test_make_baseline_names_and_errors():
    assert set(BASELINES) == {"magpie-rf", "structure-gb", "dummy"}
    with pytest.raises(ValueError, match=r"unknown baseline 'magpie'; choose one of"):
        make_baseline("magpie")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_trees'\]"):
        make_baseline("magpie-rf", n_trees=3)
    model = make_baseline("magpie-rf", n_estimators=7, n_jobs=2, random_state=3)
    assert [name for name, _ in model.steps] == ["featurize", "impute", "model"]
    assert model.get_params()["model__n_estimators"] == 7
    assert model.get_params()["model__random_state"] == 3
    assert model.get_params()["featurize__n_jobs"] == 2


def test_magpie_rf_cross_validates_and_pickles(sample40):
    X, y = sample40
    model = make_baseline("magpie-rf", n_estimators=20)
    scores = cross_val_score(
        clone(model), X, y, cv=KFold(3, shuffle=True, random_state=0),
        scoring="neg_mean_absolute_error",
    )
    dummy = cross_val_score(
        make_baseline("dummy"), X, y, cv=KFold(3, shuffle=True, random_state=0),
        scoring="neg_mean_absolute_error",
    )
    assert -scores.mean() < -dummy.mean()
    model.fit(X[:30], y[:30])
    names = model[:-1].get_feature_names_out()
    assert len(names) == 132 and names[0] == "MagpieData minimum Number"
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X[30:]), model.predict(X[30:]))


def test_magpie_rf_imputes_a_failed_structure(sample40):
    X, y = sample40
    model = make_baseline("magpie-rf", n_estimators=10).fit(X, y)
    pred = model.predict(list(X[:3]) + ["/no/such/file.cif"])
    assert pred.shape == (4,) and np.isfinite(pred).all()
    assert [e[0] for e in model.named_steps["featurize"].errors_] == [3]


def test_structure_gb_features_and_fit(sample40):
    X, y = sample40
    model = make_baseline("structure-gb", max_iter=20).fit(X, y)
    names = model.named_steps["featurize"].get_feature_names_out()
    assert len(names) == 132 + 3 + 4 + 2 + 32
    assert list(names[132:141]) == [
        "density", "vpa", "packing fraction", "spacegroup_num", "crystal_system_int",
        "is_centrosymmetric", "n_symmetry_ops", "structural complexity per atom",
        "structural complexity per cell",
    ]
    pred = model.predict(X)
    assert pred.shape == (40,) and np.isfinite(pred).all()


def test_dummy_predicts_the_training_mean(sample40):
    X, y = sample40
    model = make_baseline("dummy").fit(X[:30], y[:30])
    np.testing.assert_allclose(model.predict(X[30:]), np.full(10, y[:30].mean()))


def test_element_property_preset_matches_matminer_and_clones_quietly(nacl):
    preset = ElementPropertyPreset("magpie")
    np.testing.assert_array_equal(
        preset.featurize(nacl), magpie().featurize(nacl.composition)
    )
    assert preset.featurize(nacl.composition) == preset.featurize(nacl)
    assert preset.feature_labels() == magpie().feature_labels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone(make_baseline("magpie-rf")).fit([nacl, nacl], [0.0, 1.0])
