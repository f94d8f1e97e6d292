"""The reference linear probe: scikit-learn's lbfgs, as the harness scored with
before `harness.running.probe` replaced it.

Same protocol as `harness.running.probe` (standardized features, L2 logistic regression,
C chosen on validation accuracy, test scored once). Kept only so that a test and
a benchmark can compare the fast solver with it on the same features; the
harness itself never calls it.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from harness.running.probe import C_GRID, QUICK_ROWS, Features, ProbeScores


def _scores(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    predicted = model.predict(x)
    return float(accuracy_score(y, predicted)), float(f1_score(y, predicted, average="macro"))


def _fit(x: np.ndarray, y: np.ndarray, C: float, warm: LogisticRegression | None = None):
    """Fit at strength C; `warm` continues from a previous fit on the same data (its weights are a good start)."""
    if len(np.unique(y)) < 2:  # a tiny split can hold one class; predict it rather than crash
        return DummyClassifier(strategy="most_frequent").fit(x, y)
    model = warm if warm is not None else LogisticRegression(max_iter=500, warm_start=True)
    model.set_params(C=C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    scaler = StandardScaler().fit(train)
    # Constant features (std 0) would otherwise become NaN.
    return [np.nan_to_num(scaler.transform(a)) for a in (train, *others)]


def reference_linear_probe(train: Features, val: Features, test: Features | None = None, grid=C_GRID) -> ProbeScores:
    """Choose C on validation accuracy; score the test split once with the chosen model."""
    x_train, x_val, *x_test = _standardize(train[0], val[0], *([test[0]] if test else []))
    best, model = None, None
    # Strong to weak regularization, each fit starting from the last: about half the time of cold fits.
    for C in sorted(grid):
        model = _fit(x_train, train[1], C, warm=model)
        acc, f1 = _scores(model, x_val, val[1])
        if best is None or acc > best[0]:
            best = (acc, f1, C, copy.deepcopy(model))
    val_acc, val_f1, C, model = best
    test_acc = test_f1 = None
    if test is not None:
        test_acc, test_f1 = _scores(model, x_test[0], test[1])
    return ProbeScores(val_acc, val_f1, test_acc, test_f1, C)


def reference_quick_probe_accuracy(train: Features, val: Features, seed: int = 0) -> float:
    """A cheap per-epoch validation signal for pruning: one C, a subsample of rows."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(train[1]))[:QUICK_ROWS]
    x_train, x_val = _standardize(train[0][rows], val[0][:QUICK_ROWS])
    model = _fit(x_train, train[1][rows], 0.1)  # strong regularization: converges fast on few rows
    return _scores(model, x_val, val[1][:QUICK_ROWS])[0]
