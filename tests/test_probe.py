import numpy as np
import pytest

from harness.probe import linear_probe, quick_probe_accuracy


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
    assert scores.test_acc > 0.95 and scores.test_f1 > 0.95


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(1)
    split = lambda: (rng.normal(size=(800, 8)), rng.integers(0, 2, 800))  # noqa: E731
    scores = linear_probe(split(), split(), split())
    assert 0.4 < scores.test_acc < 0.6


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
    assert easy > 0.95 and hard < 0.65
