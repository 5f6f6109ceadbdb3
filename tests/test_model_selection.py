"""Tests for skcgcnn.model_selection: the one split resolver of every runner."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import (GroupKFold, KFold, ShuffleSplit, StratifiedKFold,
                                     train_test_split)

from skcgcnn.model_selection import (TEST_RATIO, VAL_RATIO, holdout_split, resolve_cv,
                                     split_sizes, take_rows, train_val_test_split)


def _same(a, b):
    assert len(a) == len(b)
    for (tr_a, te_a), (tr_b, te_b) in zip(a, b):
        np.testing.assert_array_equal(tr_a, tr_b)
        np.testing.assert_array_equal(te_a, te_b)


# -- resolve_cv ----------------------------------------------------------------------
def test_int_is_shuffled_seeded_kfold():
    y = np.linspace(0, 1, 23)
    splits, desc = resolve_cv(4, y, random_state=7)
    _same(splits, list(KFold(4, shuffle=True, random_state=7).split(y)))
    assert desc == "4-fold KFold(shuffle=True, random_state=7)"
    # shuffled: the first test fold is not the first rows
    assert not np.array_equal(splits[0][1], np.arange(len(splits[0][1])))
    assert all(tr.dtype == np.int64 and te.dtype == np.int64 for tr, te in splits)
    _same(resolve_cv(4, n_samples=23, random_state=7)[0], splits)


def test_int_with_classifier_is_stratified():
    y = np.array([0] * 12 + [1] * 6)
    splits, desc = resolve_cv(3, y, random_state=0, classifier=True)
    _same(splits, list(StratifiedKFold(3, shuffle=True, random_state=0).split(y, y)))
    assert desc.startswith("3-fold StratifiedKFold(shuffle=True")
    for _, test in splits:
        assert np.sum(y[test] == 1) == 2
    # continuous targets are not stratified even when asked (check_cv's rule)
    assert "KFold(" in resolve_cv(3, np.linspace(0, 1, 9), classifier=True)[1]


def test_splitters_pairs_and_lists():
    y = np.arange(20.0)
    splitter = ShuffleSplit(n_splits=3, test_size=5, random_state=0)
    splits, desc = resolve_cv(splitter, y)
    _same(splits, list(splitter.split(np.zeros((20, 1)))))
    assert desc == repr(splitter)
    groups = np.repeat(np.arange(5), 4)
    splits, _ = resolve_cv(GroupKFold(5), y, groups=groups)
    for train, test in splits:
        assert len(np.unique(groups[test])) == 1
        assert not set(groups[train]) & set(groups[test])

    splits, desc = resolve_cv((np.arange(15), np.arange(15, 20)), y)
    assert desc == "one fixed train/test split" and len(splits) == 1
    mask = np.zeros(20, bool)
    mask[:3] = True
    splits, _ = resolve_cv((~mask, [-1, -2]), y)
    np.testing.assert_array_equal(splits[0][0], np.arange(3, 20))
    np.testing.assert_array_equal(splits[0][1], [19, 18])

    pairs = list(KFold(4).split(y))
    splits, desc = resolve_cv(iter(pairs), y)  # a generator is read once
    _same(splits, pairs)
    assert desc == "4 given train/test splits"


@pytest.mark.parametrize("cv, error, message", [
    (1, ValueError, "at least 2 folds"),
    (11, ValueError, "11 folds but only 10 structures"),
    ((np.arange(5), np.arange(5, 11)), ValueError, r"outside 0\.\.9"),
    ((np.ones(9, bool), np.arange(2)), ValueError, "boolean mask of length 9"),
    ((np.arange(10), np.array([], dtype=int)), ValueError, "empty train or test set"),
    ([], ValueError, "no train/test splits"),
    ([(np.arange(5),)], TypeError, "split 0 of cv is not a"),
    ("5", TypeError, "cv must be an int"),
    (2.5, TypeError, "cv must be an int"),
])
def test_bad_cv_is_reported(cv, error, message):
    with pytest.raises(error, match=message):
        resolve_cv(cv, np.arange(10.0))


def test_needs_y_or_n_samples():
    with pytest.raises(TypeError, match="y or n_samples"):
        resolve_cv(3)


# -- holdout_split ------------------------------------------------------------------
def test_holdout_is_sorted_train_test_split():
    splits, desc = holdout_split(validation_fraction=0.25, n_samples=40, random_state=3)
    train, valid = train_test_split(np.arange(40), test_size=0.25, random_state=3)
    np.testing.assert_array_equal(splits[0][0], np.sort(train))
    np.testing.assert_array_equal(splits[0][1], np.sort(valid))
    assert desc == "holdout validation_fraction=0.25 seed=3"
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            holdout_split(validation_fraction=bad, n_samples=40)


def test_holdout_stratifies_or_warns(caplog):
    y = np.array([0] * 30 + [1] * 10)
    (train, valid), = holdout_split(y, validation_fraction=0.2, random_state=0,
                                    stratify=True)[0]
    assert np.sum(y[valid] == 1) == 2 and len(valid) == 8
    y_single = np.array([0] * 39 + [1])  # a class with one member cannot be stratified
    with caplog.at_level(logging.WARNING, logger="skcgcnn.model_selection"):
        (train, valid), = holdout_split(y_single, validation_fraction=0.2, random_state=0,
                                        stratify=True)[0]
    assert "cannot stratify the split by class" in caplog.text
    assert len(train) + len(valid) == 40


# -- split_sizes / train_val_test_split ---------------------------------------------
def test_split_sizes_follow_main_py():
    assert (VAL_RATIO, TEST_RATIO) == (0.1, 0.1)
    assert split_sizes(60) == (48, 6, 6)
    assert split_sizes(60, train_ratio=0.6, val_ratio=0.2, test_ratio=0.2) == (36, 12, 12)
    assert split_sizes(101, train_ratio=0.5) == (50, 10, 10)
    assert split_sizes(60, train_size=10, val_size=5, test_ratio=0.5) == (10, 5, 30)
    with pytest.raises(ValueError, match="54 \\+ 6 \\+ 6 crystals do not fit in the 60"):
        split_sizes(60, train_ratio=0.9)
    with pytest.raises(ValueError, match="the val set would hold 0 of 5 crystals; it needs "
                                         "at least 1: raise val_ratio or give val_size"):
        split_sizes(5)
    with pytest.raises(ValueError, match="raise --train-ratio or give --train-size"):
        split_sizes(5, train_size=1, option="--{part}-{kind}")


def test_train_val_test_split_is_two_seeded_train_test_splits():
    y = np.arange(50.0)
    train, val, test = train_val_test_split(y, (30, 10, 10), random_state=4)
    rest, test_ref = train_test_split(np.arange(50), train_size=40, test_size=10,
                                      random_state=4)
    train_ref, val_ref = train_test_split(rest, train_size=30, test_size=10, random_state=4)
    np.testing.assert_array_equal(train, train_ref)
    np.testing.assert_array_equal(val, val_ref)
    np.testing.assert_array_equal(test, test_ref)


def test_train_val_test_split_stratifies_or_warns(caplog):
    y = np.array([0] * 40 + [1] * 20)
    train, val, test = train_val_test_split(y, (36, 12, 12), random_state=0, stratify=True)
    assert [int(np.sum(y[part] == 1)) for part in (train, val, test)] == [12, 4, 4]
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(60))
    y_single = np.array([0] * 59 + [1])
    with caplog.at_level(logging.WARNING, logger="skcgcnn.model_selection"):
        parts = train_val_test_split(y_single, (36, 12, 12), random_state=0, stratify=True)
    assert "cannot stratify the split by class" in caplog.text
    assert [len(p) for p in parts] == [36, 12, 12]


# -- take_rows ----------------------------------------------------------------------
def test_take_rows_keeps_the_type():
    idx = np.array([2, 0])
    s = pd.Series(["a", "b", "c"], index=["x", "y", "z"])
    assert list(take_rows(s, idx).index) == ["z", "x"]
    assert take_rows(["a", "b", "c"], idx) == ["c", "a"]
    assert take_rows(("a", "b", "c"), idx) == ["c", "a"]
    np.testing.assert_array_equal(take_rows(np.array([1, 2, 3]), idx), [3, 1])
    assert take_rows(range(3), idx) == [2, 0]  # no fancy indexing: one by one
