"""skcgcnn.active.suggest: exact picks on a model of known means and stds, the errors,
and one real ensemble on shared sample crystals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skcgcnn.active import suggest
from tests._shared import needs_shared, sample_series

MEAN = np.array([0.0, 5.0, 1.0, 3.0, 2.0])
STD = np.array([0.5, 0.1, 2.0, 0.3, 1.0])


class KnownModel:
    """predict(X) of candidates given as their row numbers: MEAN and STD there."""

    def __init__(self, mean=MEAN, std=STD):
        self.mean, self.std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)

    def predict(self, X, return_std=False):
        rows = np.asarray(X, dtype=int)
        return (self.mean[rows], self.std[rows]) if return_std else self.mean[rows]


class MeanOnly:
    def predict(self, X):
        return np.zeros(len(X))


POOL = np.arange(5)


# -- exact picks ---------------------------------------------------------------------
def test_std_picks_the_largest_std_first():
    assert suggest(KnownModel(), POOL, 3, "std").tolist() == [2, 4, 0]
    assert suggest(KnownModel(), POOL, 5).tolist() == [2, 4, 0, 3, 1]  # the default


def test_ucb_maximize_ranks_by_the_upper_bound():
    # mean + std = [0.5, 5.1, 3.0, 3.3, 3.0]: the tie of 2 and 4 goes to the earlier
    assert suggest(KnownModel(), POOL, 5, "ucb", kappa=1.0).tolist() == [1, 3, 2, 4, 0]
    # kappa=2: [1.0, 5.2, 5.0, 3.6, 4.0]
    assert suggest(KnownModel(), POOL, 3, "ucb", kappa=2.0).tolist() == [1, 2, 4]


def test_ucb_minimize_ranks_by_the_lowest_lower_bound():
    # mean - std = [-0.5, 4.9, -1.0, 2.7, 1.0], smallest first
    assert suggest(KnownModel(), POOL, 5, "ucb", kappa=1.0,
                   maximize=False).tolist() == [2, 0, 4, 3, 1]
    # kappa=0 is greedy on the mean alone: [0, 1, 2, 3, 5] -> 0, 2, 4
    assert suggest(KnownModel(), POOL, 3, "ucb", kappa=0.0,
                   maximize=False).tolist() == [0, 2, 4]


def test_ties_go_to_the_earlier_position():
    std = np.repeat([1.0, 3.0, 2.0], 100)  # three blocks of equal stds
    model = KnownModel(np.zeros(300), std)
    assert suggest(model, np.arange(300), 150, "std").tolist() == \
        list(range(100, 200)) + list(range(200, 250))


def test_a_series_pool_answers_its_index_labels():
    pool = pd.Series(POOL, index=["a", "b", "c", "d", "e"])
    assert suggest(KnownModel(), pool, 2, "std").tolist() == ["c", "e"]
    assert suggest(None, pool, 5, "random", random_state=0).tolist() == \
        pool.index[suggest(None, POOL, 5, "random", random_state=0)].tolist()


def test_candidates_without_a_prediction_are_never_picked():
    std = STD.copy()
    std[2] = np.nan  # the largest std, but a structure the transformer left out
    assert suggest(KnownModel(std=std), POOL, 4, "std").tolist() == [4, 0, 3, 1]
    with pytest.raises(ValueError, match="only 4 of the 5 candidates have a prediction"):
        suggest(KnownModel(std=std), POOL, 5, "std")


def test_random_is_reproducible_with_a_seed_and_differs_with_another():
    pool = np.arange(200)
    first = suggest(None, pool, 20, "random", random_state=0)
    assert first.tolist() == suggest(KnownModel(), pool, 20, "random",
                                     random_state=0).tolist()
    assert first.tolist() != suggest(None, pool, 20, "random", random_state=1).tolist()
    assert len(set(first.tolist())) == 20 and first.min() >= 0 and first.max() < 200
    rng = np.random.RandomState(3)
    assert suggest(None, pool, 20, "random", random_state=rng).tolist() == \
        np.random.RandomState(3).choice(200, 20, replace=False).tolist()


# -- errors --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 6, -1, 2.0, True])
def test_n_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match=r"n must be an integer from 1 to the pool's size 5"):
        suggest(KnownModel(), POOL, n)


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match=r"strategy must be one of 'std', 'ucb', 'random', "
                                         r"got 'entropy'"):
        suggest(KnownModel(), POOL, 2, "entropy")


def test_a_negative_kappa_is_refused():
    with pytest.raises(ValueError, match="kappa must be a finite number >= 0, got -1"):
        suggest(KnownModel(), POOL, 2, "ucb", kappa=-1)


@pytest.mark.parametrize("strategy", ["std", "ucb"])
def test_a_model_without_return_std_names_the_fix(strategy):
    with pytest.raises(ValueError, match="MeanOnly.predict takes no return_std.*"
                                         "CGCNNEnsembleRegressor"):
        suggest(MeanOnly(), POOL, 2, strategy)
    with pytest.raises(ValueError, match="need a fitted model"):
        suggest(None, POOL, 2, strategy)
    assert len(suggest(MeanOnly(), POOL, 2, "random", random_state=0)) == 2


def test_a_pool_without_a_length_and_several_targets_are_refused():
    with pytest.raises(TypeError, match="pool must be a sequence.*list\\(pool\\)"):
        suggest(KnownModel(), (i for i in range(5)), 2)
    two = KnownModel(np.zeros((5, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"one target.*shape \(5, 2\)"):
        suggest(two, POOL, 2)


def test_chunk_size_needs_a_pipeline():
    with pytest.raises(ValueError, match="chunk_size needs a Pipeline"):
        suggest(KnownModel(), POOL, 2, chunk_size=2)


# -- a real ensemble ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    from sklearn.pipeline import make_pipeline

    from skcgcnn import CGCNNEnsembleRegressor, StructureGraphTransformer

    structures, y = sample_series(60)
    pipe = make_pipeline(StructureGraphTransformer(),
                         CGCNNEnsembleRegressor(n_estimators=3, max_epochs=3,
                                                batch_size=16, random_state=0))
    pipe.fit(structures.iloc[:36], y[:36])
    return pipe, structures.iloc[36:]


@needs_shared
def test_an_ensemble_picks_its_largest_std_crystals(fitted):
    pipe, pool = fitted
    picks = suggest(pipe, pool, 5, "std")
    mean, std = pipe.predict(pool, return_std=True)
    assert np.ptp(std) > 0  # the members disagree, so the ranking means something
    expected = pool.index[np.argsort(-std, kind="stable")[:5]]
    assert picks.tolist() == expected.tolist()
    assert std[pool.index.get_indexer(picks)].min() >= np.delete(
        std, pool.index.get_indexer(picks)).max()
    # through predict_iter, 7 structures at a time: the same picks
    assert suggest(pipe, pool, 5, "std", chunk_size=7).tolist() == picks.tolist()
    low = pool.index[np.argsort(mean - 1.96 * std, kind="stable")[:3]]
    assert suggest(pipe, pool, 3, "ucb", maximize=False).tolist() == low.tolist()


@needs_shared
def test_a_regressor_without_a_variance_head_names_the_fix(fitted):
    from sklearn.pipeline import make_pipeline

    from skcgcnn import CGCNNRegressor

    pipe, pool = fitted
    single = make_pipeline(pipe.steps[0][1], CGCNNRegressor(max_epochs=1, random_state=0))
    single.steps[-1][1].fit(pipe.steps[0][1].transform(pool.iloc[:8]), np.zeros(8))
    with pytest.raises(ValueError, match="loss='absolute_error'.*predicts a mean only.*"
                                         "CGCNNEnsembleRegressor"):
        suggest(single, pool, 2)
