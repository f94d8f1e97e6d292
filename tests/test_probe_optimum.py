"""The linear probe against its definition on small problems: scikit-learn's optimum of the same objective at every
C of the grid, the C chosen on validation, and the scores as scikit-learn defines them.

Fast (about 25 s on a shared CPU): these are the tests the probe's mutants run against
(tests/mutation/harness.running.probe.toml).
The slow checks on trained features are in tests/test_probe.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from harness.running import probe as probe_module
from harness.running.probe import C_GRID, ProbeScores, _Probe, accuracy_and_macro_f1, linear_probe, quick_probe_accuracy
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


@pytest.mark.parametrize("classes, shift", [(2, 1.0), (4, 1.0), (4, 3.0)])
def test_every_C_of_the_grid_reaches_scikit_learns_optimum(classes, shift):
    """shift 3: classes further apart, so weak regularization needs more iterations (above 20 at C = 1)."""
    assert_path_reaches_the_optimum(correlated_classes(300, classes, 6, 0, shift), C_GRID)


@pytest.mark.parametrize("classes", [2, 3])
def test_row_blocks_change_nothing(monkeypatch, classes):
    """X is read in row blocks; with blocks of a few rows (the last one short) the optimum is the same."""
    monkeypatch.setattr(probe_module, "BLOCK_ELEMENTS", 7 * 6 + 1)
    assert_path_reaches_the_optimum(correlated_classes(300, classes, 6, 1), C_GRID)


def test_more_features_than_rows_reach_the_optimum():
    """The covariance then comes from the rows' Gram matrix (rank n): the optimum is still scikit-learn's."""
    train = correlated_classes(30, 3, 8, 2)
    wide = (np.c_[train[0], np.random.default_rng(3).normal(size=(30, 40))].astype(np.float32), train[1])
    _, models = _fast_models(wide, (1e-3, 1e-2))
    assert models[1e-3][0].shape == (48, 3)
    assert_path_reaches_the_optimum(wide, (1e-3, 1e-2))


def test_accuracy_and_macro_f1_are_scikit_learns():
    """Macro-F1 over every label true or predicted; a label never predicted (or never true) scores 0."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        y, predicted = rng.integers(0, 5, 30), rng.integers(1, 7, 30)  # 0 never predicted; 5, 6 never true
        acc, f1 = accuracy_and_macro_f1(y, predicted)
        assert acc == accuracy_score(y, predicted)
        assert f1 == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0), abs=1e-12)
    assert accuracy_and_macro_f1(np.array([2, 2]), np.array([2, 2])) == (1.0, 1.0)


def test_a_constant_training_feature_is_ignored_whatever_value_other_splits_give_it():
    """Standardized with training statistics, a feature constant in training is 0 there and carries nothing: the
    same training split scores validation and test rows alike whatever they hold in it."""
    train, val, test = (correlated_classes(200, 2, 4, s) for s in (10, 11, 12))
    widen = lambda split, value: (np.c_[split[0], np.full(len(split[1]), value)], split[1])  # noqa: E731
    same = linear_probe(widen(train, 3.0), widen(val, 3.0), widen(test, 3.0))
    other = linear_probe(widen(train, 3.0), widen(val, 1e6), widen(test, -7.0))
    assert same == other and same.test_acc > 0.6  # not a probe that predicts one class everywhere


def test_a_zero_logit_predicts_the_first_class_as_scikit_learn_does():
    """scikit-learn predicts the second class only where the decision function is > 0 (argmax: the first of tied
    classes); a model of all zeros ties every row."""
    for classes in (2, 3):
        train = correlated_classes(60, classes, 3, 5)
        probe = _Probe(train, torch.device("cpu"))
        x = probe.basis.standardize(torch.as_tensor(train[0]))
        assert (probe.problem.predict(torch.zeros_like(probe.raw), x) == 0).all()


def test_the_probe_runs_on_the_device_it_is_given():
    assert probe_module._device(None) == torch.device("cpu")
    assert probe_module._device("cuda:1") == torch.device("cuda:1")  # naming a device needs no such device here


def test_the_whitened_solver_converges_in_tens_of_iterations_on_ill_conditioned_features(monkeypatch):
    """The module's claim: in the whitened, curvature-scaled coordinates L-BFGS needs tens of iterations per C,
    even on features whose covariance has a condition number of about 1e8 (scales over four decades). Read as
    fewer than 30 objective evaluations per C on average (line searches included): the probe needed about 16 here,
    and without the per-coordinate curvature scale (whitening alone) the 4-class problem took 35."""
    calls = []
    original = probe_module._Problem.loss_and_grad
    monkeypatch.setattr(probe_module._Problem, "loss_and_grad", lambda self, p: calls.append(1) or original(self, p))
    rng = np.random.default_rng(6)
    for classes in (2, 4):
        y = rng.integers(0, classes, 400)
        mixing = np.random.default_rng(9).normal(size=(8, 8)) * np.logspace(0, 4, 8)
        x = ((np.random.default_rng(10).normal(0, 1, (classes, 8))[y] + rng.normal(size=(400, 8))) @ mixing)
        calls.clear()
        linear_probe((x.astype(np.float32), y), (x.astype(np.float32), y))
        assert len(calls) < 30 * len(C_GRID), (classes, len(calls))


def blobs(n: int, classes: int, dims: int, separation: float, seed: int):
    """Gaussian classes around centers shared by every split; `seed` draws the rows."""
    centers = np.random.default_rng(99).normal(0, separation, (classes, dims))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return centers[y] + rng.normal(0, 1, (n, dims)), y


@pytest.mark.parametrize("classes", [2, 5])
def test_separable_classes_are_found(classes):
    train, val, test = (blobs(600, classes, 16, 6.0, s) for s in (0, 1, 2))
    scores = linear_probe(train, val, test)
    # Centers N(0, 36) in 16 dims lie ~34 apart: the Bayes error Phi(-17) is nil, so 5% of errors (30 rows)
    # is a wide margin for any solver that separates at all, and far above what a broken one reaches.
    assert scores.test_acc > 0.95 and scores.test_f1 > 0.95


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(1)
    split = lambda: (rng.normal(size=(800, 8)), rng.integers(0, 2, 800))  # noqa: E731
    scores = linear_probe(split(), split(), split())
    # Labels independent of the features: test accuracy is binomial(800, 1/2) / 800 whatever C validation
    # chose (the test split plays no part in the choice): within 4 sd, sqrt(1/4 / 800) = 0.018, of 1/2.
    assert abs(scores.test_acc - 0.5) < 4 * (0.25 / 800) ** 0.5


def test_regularization_is_chosen_on_validation():
    # Few rows, many noise dimensions: the strongest regularization should win on validation.
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    x = np.c_[y + rng.normal(0, 0.5, 60), rng.normal(size=(60, 300))]
    yv = rng.integers(0, 2, 400)
    xv = np.c_[yv + rng.normal(0, 0.5, 400), rng.normal(size=(400, 300))]
    scores = linear_probe((x, y), (xv, yv), grid=(1e-3, 1e3))
    assert scores.C == 1e-3


def test_constant_features_do_not_produce_nan():
    x, y = blobs(200, 2, 4, 5.0, 3)
    x = np.c_[x, np.ones(200)]
    scores = linear_probe((x, y), (x, y), (x, y))
    assert np.isfinite(scores.test_acc) and scores.test_acc > 0.9


def test_a_split_with_one_class_predicts_it():
    x = np.random.default_rng(4).normal(size=(20, 3))
    scores = linear_probe((x, np.zeros(20, int)), (x, np.r_[np.zeros(15, int), np.ones(5, int)]))
    assert scores.val_acc == 0.75


def test_quick_probe_tracks_separability():
    easy = quick_probe_accuracy(blobs(3000, 2, 8, 6.0, 5), blobs(500, 2, 8, 6.0, 5))
    hard = quick_probe_accuracy(blobs(3000, 2, 8, 0.01, 6), blobs(500, 2, 8, 0.01, 7))
    # Two unit-variance Gaussians whose centers lie D apart: no classifier beats Phi(D / 2) in expectation;
    # on 500 rows its accuracy is within 4 binomial sd of that. (easy: D ~ 34, Bayes error nil, as above.)
    centers = np.random.default_rng(99).normal(0, 0.01, (2, 8))  # as blobs draws them
    bayes = 0.5 * (1 + math.erf(np.linalg.norm(centers[0] - centers[1]) / 2 / math.sqrt(2)))
    assert hard < bayes + 4 * (bayes * (1 - bayes) / 500) ** 0.5, (hard, bayes)
    assert easy > 0.95


def test_scores_become_the_records_metrics():
    """val_acc, val_f1 and the chosen C as probe_C; test_acc and test_f1 where a test split was scored; then the
    extra scores (harness.running.grouped's)."""
    assert ProbeScores(0.5, 0.25, None, None, 0.1).as_metrics() == {"val_acc": 0.5, "val_f1": 0.25, "probe_C": 0.1}
    scored = ProbeScores(0.5, 0.25, 0.75, 0.125, 10.0, {"heldout_group_acc": 0.625})
    assert scored.as_metrics() == {"val_acc": 0.5, "val_f1": 0.25, "probe_C": 10.0, "test_acc": 0.75,
                                   "test_f1": 0.125, "heldout_group_acc": 0.625}
