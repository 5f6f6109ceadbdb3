"""The one split resolver of every experiment runner: ``cv`` or ratios -> index arrays.

:func:`resolve_cv` turns what a caller passes as ``cv`` (a number of folds, a
scikit-learn splitter, one ``(train, test)`` pair or a list of them) into a list of
``(train, test)`` position arrays and a line that describes them, on top of
:func:`sklearn.model_selection.check_cv`.  :func:`holdout_split` is the single
train/validation split of a search, and :func:`split_sizes` with
:func:`train_val_test_split` are the train/validation/test split of ``skcgcnn train``
(the original ``main.py``'s ratios).

Every runner (``skcgcnn.benchmark``, ``skcgcnn.tuning``, ``skcgcnn train``) resolves its
splits here, so the same arguments give the same folds everywhere.
"""
from __future__ import annotations

import logging
import math
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import check_cv, train_test_split

# main.py's default validation and test shares, written once (the CLI's help shows them)
from ._defaults import TEST_RATIO, VAL_RATIO

logger = logging.getLogger(__name__)

__all__ = [
    "TEST_RATIO",
    "VAL_RATIO",
    "holdout_split",
    "resolve_cv",
    "split_sizes",
    "take_rows",
    "train_val_test_split",
]

Splits = list[tuple[np.ndarray, np.ndarray]]


def _is_index_array(a: Any) -> bool:
    if isinstance(a, (str, bytes, tuple)):
        return False
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError):
        return False
    return arr.ndim == 1 and (arr.dtype.kind in "iub" or arr.size == 0)


def _is_pair(cv: Any) -> bool:
    return (isinstance(cv, (tuple, list)) and len(cv) == 2 and _is_index_array(cv[0])
            and _is_index_array(cv[1]))


def _as_indices(a: Any, n: int, what: str) -> np.ndarray:
    """Positions in ``0..n-1`` from an index array (negative ones count from the end) or
    a boolean mask of length ``n``."""
    arr = np.asarray(a)
    if arr.dtype.kind == "b":
        if arr.size != n:
            raise ValueError(f"{what} is a boolean mask of length {arr.size}, X has {n} rows")
        arr = np.flatnonzero(arr)
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise ValueError(f"{what} has indices outside 0..{n - 1} (X has {n} rows)")
    return np.where(arr < 0, arr + n, arr)


def _n_samples(y: Any, n_samples: int | None) -> int:
    if y is not None:
        return len(y)
    if n_samples is None:
        raise TypeError("give y or n_samples")
    return int(n_samples)


def resolve_cv(
    cv: Any = 5,
    y: Any = None,
    *,
    n_samples: int | None = None,
    random_state: int | None = None,
    classifier: bool = False,
    groups: Any = None,
) -> tuple[Splits, str]:
    """The ``(train, test)`` position arrays of ``cv``, and a line that describes them.

    Parameters
    ----------
    cv : int, splitter, (train, test) pair or iterable of pairs, default=5
        - an int ``k``: ``KFold(k, shuffle=True, random_state=random_state)``, or
          ``StratifiedKFold`` with the same arguments when ``classifier`` is true and
          ``y`` holds classes (:func:`~sklearn.model_selection.check_cv` chooses which).
        - a scikit-learn splitter (anything with ``split(X, y, groups)``): asked for its
          splits once, so that every model of a run sees the same ones.
        - one pair ``(train_indices, test_indices)``: one fixed split.
        - an iterable of such pairs.

        Indices may be positions (negative ones count from the end) or boolean masks.
    y : array-like of shape (n_samples,), default=None
        Targets, for splitters that stratify; gives the number of samples.
    n_samples : int, default=None
        Number of samples when ``y`` is not given.
    random_state : int or None, default=None
        Seed of the shuffled folds of an int ``cv``. Ignored otherwise.
    classifier : bool, default=False
        Stratify the folds of an int ``cv`` by the classes of ``y``.
    groups : array-like, default=None
        Passed to the splitter's ``split``.

    Returns
    -------
    splits : list of (ndarray, ndarray)
        Train and test positions (int64) of every split.
    description : str
        For tables and run records, e.g. ``"5-fold KFold(shuffle=True, random_state=0)"``.

    Raises
    ------
    TypeError
        For a ``cv`` of another kind, or a split that is not a pair.
    ValueError
        For fewer than 2 or more folds than samples, indices out of range, or an empty
        train or test set.

    Notes
    -----
    An int differs from scikit-learn's own reading (``check_cv(k)`` gives
    ``KFold(k)`` without shuffling; its ``shuffle`` argument is new in the development
    version and we support scikit-learn >= 1.3): the folds are shuffled, with a seed,
    because crystal data sets come sorted (CGCNN folders by id, which follows the
    composition; Materials Project by material id; matbench by its own order), and
    unshuffled folds would test on chemistry the model never saw.

    Examples
    --------
    >>> splits, desc = resolve_cv(3, n_samples=6, random_state=0)
    >>> desc
    '3-fold KFold(shuffle=True, random_state=0)'
    >>> [test.tolist() for _, test in splits]
    [[2, 5], [1, 3], [0, 4]]
    >>> resolve_cv(([0, 1, 2], [3]), n_samples=4)[1]
    'one fixed train/test split'
    """
    n = _n_samples(y, n_samples)
    if _is_pair(cv):
        cv, desc = [cv], "one fixed train/test split"
    elif isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(
                f"cv={cv}: cross-validation needs at least 2 folds; for one split pass "
                "cv=(train_indices, test_indices)"
            )
        if cv > n:
            raise ValueError(f"cv={cv} folds but only {n} structures; use fewer folds")
        kind = type(check_cv(int(cv), y, classifier=classifier))  # KFold or StratifiedKFold
        cv = kind(int(cv), shuffle=True, random_state=random_state)
        desc = f"{cv.n_splits}-fold {kind.__name__}(shuffle=True, random_state={random_state})"
    elif hasattr(cv, "split") and not isinstance(cv, (str, bytes)):
        desc = repr(cv)
    elif hasattr(cv, "__iter__") and not isinstance(cv, (str, bytes)):
        cv = list(cv)
        desc = f"{len(cv)} given train/test splits"
    else:
        raise TypeError(
            "cv must be an int (number of KFold folds), a scikit-learn splitter, a "
            f"(train_indices, test_indices) pair or a list of such pairs; got {cv!r}"
        )
    if isinstance(cv, list):
        for k, fold in enumerate(cv):
            if not (hasattr(fold, "__len__") and len(fold) == 2):
                raise TypeError(f"split {k} of cv is not a (train_indices, test_indices) pair")
    splitter = check_cv(cv, y, classifier=classifier)
    folds = list(splitter.split(np.zeros((n, 1)), y, groups))
    if not folds:
        raise ValueError("cv gave no train/test splits")
    out = []
    for k, (train, test) in enumerate(folds):
        train = _as_indices(train, n, f"split {k}: train indices")
        test = _as_indices(test, n, f"split {k}: test indices")
        if train.size == 0 or test.size == 0:
            raise ValueError(f"split {k} has an empty train or test set")
        out.append((train, test))
    return out, desc


def _warn_unstratified(exc: ValueError) -> None:
    line = (str(exc).strip() or type(exc).__name__).splitlines()[0].strip()
    logger.warning("cannot stratify the split by class (%s); splitting at random", line)


def take_rows(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of X, keeping its type: a Series or DataFrame (by position), an
    array, a GraphCollection; a list (or tuple, or other sequence) gives a list."""
    if isinstance(X, (pd.Series, pd.DataFrame)):
        return X.iloc[idx]
    if isinstance(X, np.ndarray):
        return X[idx]
    if isinstance(X, (list, tuple)):
        return [X[i] for i in idx]
    try:
        return X[idx]
    except (TypeError, IndexError, KeyError):
        return [X[int(i)] for i in idx]


def _split_once(idx: np.ndarray, y: Any, train_size: Any, test_size: Any,
                random_state: int | None, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~sklearn.model_selection.train_test_split` of positions ``idx``; stratified
    by ``y[idx]`` when asked and possible (a warning, then at random, when not)."""
    if stratify:
        try:
            return train_test_split(idx, train_size=train_size, test_size=test_size,
                                    random_state=random_state, stratify=np.asarray(y)[idx])
        except ValueError as exc:
            _warn_unstratified(exc)
    return train_test_split(idx, train_size=train_size, test_size=test_size,
                            random_state=random_state)


def holdout_split(
    y: Any = None,
    *,
    validation_fraction: float,
    n_samples: int | None = None,
    random_state: int | None = None,
    stratify: bool = False,
) -> tuple[Splits, str]:
    """One seeded train/validation split, in the form of :func:`resolve_cv`.

    Parameters
    ----------
    y : array-like of shape (n_samples,), default=None
        Targets (classes when ``stratify``); gives the number of samples.
    validation_fraction : float
        Share of the samples in the validation set, in (0, 1).
    n_samples : int, default=None
        Number of samples when ``y`` is not given.
    random_state : int or None, default=None
        Seed of :func:`~sklearn.model_selection.train_test_split`.
    stratify : bool, default=False
        Keep the class shares of ``y`` in both sets.

    Returns
    -------
    splits : list of one (train, valid) pair
        Sorted positions.
    description : str
        ``"holdout validation_fraction=<f> seed=<random_state>"`` (the text that
        ``skcgcnn.tuning`` stores in a study; keep it unchanged).
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction!r}: use a fraction "
                         "between 0 and 1")
    idx = np.arange(_n_samples(y, n_samples))
    train, valid = _split_once(idx, y, None, validation_fraction, random_state, stratify)
    return [(np.sort(train), np.sort(valid))], (
        f"holdout validation_fraction={validation_fraction} seed={random_state}")


def split_sizes(
    n: int,
    *,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    train_ratio: float | None = None,
    val_ratio: float | None = None,
    test_ratio: float | None = None,
    option: str = "{part}_{kind}",
) -> tuple[int, int, int]:
    """Sizes of the train, validation and test sets of ``n`` samples.

    A size wins over a ratio; a ratio gives ``floor(ratio * n)`` samples, as the original
    ``main.py``; the validation and test ratios default to :data:`VAL_RATIO` and
    :data:`TEST_RATIO`; without a train size or ratio, the training set is every sample
    left.

    Parameters
    ----------
    n : int
    train_size, val_size, test_size : int, default=None
    train_ratio, val_ratio, test_ratio : float, default=None
    option : str, default="{part}_{kind}"
        How the error messages name the options, e.g. ``"--{part}-{kind}"`` for a
        command line (``part``: train, val or test; ``kind``: ratio or size).

    Returns
    -------
    (n_train, n_val, n_test) : tuple of int

    Raises
    ------
    ValueError
        When the sets do not fit in ``n`` samples, or one would be too small (the
        training set needs 2, the others 1).
    """
    def size(count: int | None, ratio: float | None, default: float | None) -> int | None:
        if count is not None:
            return int(count)
        ratio = default if ratio is None else ratio
        return None if ratio is None else int(math.floor(ratio * n + 1e-9))

    n_val = size(val_size, val_ratio, VAL_RATIO)
    n_test = size(test_size, test_ratio, TEST_RATIO)
    n_train = size(train_size, train_ratio, None)
    if n_train is None:
        n_train = n - n_val - n_test
    if n_train + n_val + n_test > n:
        raise ValueError(f"train/val/test sets of {n_train} + {n_val} + {n_test} crystals do "
                         f"not fit in the {n} crystals of the data; lower the ratios or sizes")
    for part, count, need in (("train", n_train, 2), ("val", n_val, 1), ("test", n_test, 1)):
        if count < need:
            raise ValueError(
                f"the {part} set would hold {count} of {n} crystals; it needs at least "
                f"{need}: raise {option.format(part=part, kind='ratio')} or give "
                f"{option.format(part=part, kind='size')}")
    return n_train, n_val, n_test


def train_val_test_split(
    y: Any,
    sizes: tuple[int, int, int],
    *,
    random_state: int | None = None,
    stratify: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test positions of the samples of ``y``.

    Two seeded :func:`~sklearn.model_selection.train_test_split` calls: the test set
    first, then the validation set from the rest.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Targets (classes when ``stratify``).
    sizes : (n_train, n_val, n_test)
        From :func:`split_sizes`.
    random_state : int or None, default=None
    stratify : bool, default=False
        Keep the class shares of ``y`` in the three sets when possible (a warning and a
        random split when not, e.g. a class with one member).

    Returns
    -------
    train, val, test : ndarray of int
    """
    idx = np.arange(len(y))
    if stratify:
        try:
            return _three_way(idx, np.asarray(y), sizes, random_state)
        except ValueError as exc:
            _warn_unstratified(exc)
    return _three_way(idx, None, sizes, random_state)


def _three_way(idx: np.ndarray, classes: np.ndarray | None, sizes: tuple[int, int, int],
               random_state: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_train, n_val, n_test = sizes
    rest, test = train_test_split(idx, train_size=n_train + n_val, test_size=n_test,
                                  random_state=random_state, stratify=classes)
    train, val = train_test_split(rest, train_size=n_train, test_size=n_val,
                                  random_state=random_state,
                                  stratify=None if classes is None else classes[rest])
    return train, val, test
