"""The linear probe against its definition on small problems: scikit-learn's optimum of the same objective at every
C of the grid, the C chosen on validation, and the scores as scikit-learn defines them.

Fast (about a second): these are the tests the probe's mutants run against (tests/mutation/harness.running.probe.toml).
The slow checks on trained features are in tests/test_probe.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from harness.running import probe as probe_module
from harness.running.probe import C_GRID, QUICK_C, QUICK_ROWS, _Probe, accuracy_and_macro_f1, linear_probe
from harness.running.probe import quick_probe_accuracy
from tests.test_probe import _fast_models, _objective


def correlated_classes(n: int, classes: int, dims: int, seed: int, shift: float = 1.0):
    """Overlapping Gaussian classes (the optimum is interior at every C) seen through a fixed mixing matrix with
    unequal scales and an offset, so that standardizing and whitening both have work to do."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(7).normal(0, shift, (classes, dims))
    mixing = np.random.default_rng(8).normal(size=(dims, dims)) * np.logspace(0, 2, dims)
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(size=(n, dims))) @ mixing + 5.0
    return x.astype(np.float32), y


def standardized(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train_x.astype(np.float64).mean(0), train_x.astype(np.float64).std(0)
    std[std == 0] = 1
    return [(a.astype(np.float64) - mean) / std for a in (train_x, *others)]


def assert_path_reaches_the_optimum(train, grid):
    """At each C of the probe's path (strong to weak, warm-started, as linear_probe fits), its objective is within
    what its stopping rule promises of scikit-learn's optimum (tests/test_probe.py derives the promise), and by
    strong convexity (the objective is 1 / (C n)-strongly convex in W) its weights within sqrt(2 C n gap) of it.

    The promise is for exact arithmetic. The probe hands its loss to L-BFGS in float32, which also stops when a step
    changes that loss by less than its spacing, eps32 |f|: the objective may stall that close above the optimum on
    these small, well-conditioned problems (where the promise itself is ~1e-9), so 4 spacings are allowed too."""
    _, models = _fast_models(train, grid)
    x, y, n = standardized(train[0])[0], train[1], len(train[1])
    for C in sorted(grid):
        tight = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(x, y)
        best = _objective(x, y, tight.coef_.T, tight.intercept_, C)
        w, b, _, promised = models[C]
        ours = _objective(x, y, w, b, C)
        stall = 4 * np.finfo(np.float32).eps * abs(best)
        assert best - 1e-9 <= ours <= best + promised + stall, (C, ours - best, promised, stall)
        radius = np.sqrt(2 * C * n * max(ours - best, 0.0) + 1e-12)
        # The binary problem has one logit; scikit-learn's multinomial weights are defined up to nothing (the
        # penalty fixes their mean over classes at 0, as the probe's do).
        assert np.linalg.norm(w - tight.coef_.T) <= radius + 1e-4 * (1 + np.linalg.norm(w)), (C, radius)


@pytest.mark.parametrize("classes", [2, 4])
def test_every_C_of_the_grid_reaches_scikit_learns_optimum(classes):
    assert_path_reaches_the_optimum(correlated_classes(300, classes, 6, 0), C_GRID)


def test_row_blocks_change_nothing(monkeypatch):
    """X is read in row blocks; with blocks of a few rows (the last one short) the optimum is the same."""
    monkeypatch.setattr(probe_module, "BLOCK_ELEMENTS", 7 * 6 + 1)
    assert_path_reaches_the_optimum(correlated_classes(300, 3, 6, 1), C_GRID)


def test_more_features_than_rows_reach_the_optimum():
    """The covariance then comes from the rows' Gram matrix (rank n): the optimum is still scikit-learn's."""
    train = correlated_classes(30, 3, 8, 2)
    wide = (np.c_[train[0], np.random.default_rng(3).normal(size=(30, 40))].astype(np.float32), train[1])
    _, models = _fast_models(wide, (1e-3, 1e-2))
    assert models[1e-3][0].shape == (48, 3)
    assert_path_reaches_the_optimum(wide, (1e-3, 1e-2))
