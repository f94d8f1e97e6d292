"""The held-out-group scores (harness.running.grouped): they tell linking a class's members from separating them."""

import numpy as np
import pytest

from harness.api.errors import HarnessError
from harness.running.grouped import GroupedFeatures, heldout_folds, heldout_group_scores, knn_accuracy

CLASSES, MEMBERS = 4, 3


def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    groups = np.random.default_rng(seed).integers(CLASSES * MEMBERS, size=n)
    return groups // MEMBERS, groups


def split(features_of, n: int, seed: int) -> GroupedFeatures:
    labels, groups = rows(n, seed)
    rng = np.random.default_rng(seed + 100)
    return GroupedFeatures(features_of(labels, groups) + 0.05 * rng.standard_normal((n, 12)), labels, groups)


def member_one_hot(labels, groups):
    """Tells the 12 members apart and nothing more: a member never seen has a direction of its own."""
    return np.eye(CLASSES * MEMBERS)[groups]


def superclass_one_hot(labels, groups):
    """Maps every member of a class to one place: linking."""
    return np.eye(CLASSES * MEMBERS)[labels]


def scores(features_of):
    return heldout_group_scores(split(features_of, 1200, 0), split(features_of, 300, 1), split(features_of, 600, 2))


def test_separated_members_score_chance_on_held_out_members():
    found = scores(member_one_hot)
    # The ordinary probe would score ~100% on these features (members are separable); held out, it is chance.
    # Each fold holds out one member of each class; their directions were never trained on (the probe's weight
    # there stays 0, and every training row lies at the same distance sqrt 2 from them, noise aside), so what is
    # predicted for a held-out row does not depend on its class: in expectation the share of one class among
    # the scored rows, 1/4. A fold scores about 600 / 3 = 200 test rows, a binomial sd of sqrt(3/16 / 200) =
    # 0.031; 0.40 is more than 4 of those above chance even for one fold, and the mean of three spreads less.
    assert found["heldout_group_acc"] < 0.40
    assert found["heldout_group_knn"] < 0.40


def test_linked_members_score_high_on_held_out_members():
    found = scores(superclass_one_hot)
    # Every member of a class sits on one corner of the simplex, sqrt 2 from the others', noise sd 0.05 per axis:
    # a held-out row lands nearer another class only past 0.7 / 0.05 = 14 sd, so both scores are 1 but for
    # a broken scorer; 0.95 fails any that misplaces 5% of the rows.
    assert found["heldout_group_acc"] > 0.95
    assert found["heldout_group_knn"] > 0.95


def test_every_member_is_held_out_once_in_a_fixed_order():
    labels, groups = rows(600, 3)
    folds = heldout_folds(labels, groups)
    assert [f.tolist() for f in folds] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


def test_classes_of_unequal_size_rotate_their_members():
    labels = np.array([0, 0, 1, 1, 1])
    groups = np.array([10, 11, 20, 21, 22])
    assert [f.tolist() for f in heldout_folds(labels, groups)] == [[10, 20], [11, 21], [10, 22]]


def test_a_class_with_one_member_is_refused_in_one_line():
    with pytest.raises(HarnessError, match="single member group") as caught:
        heldout_folds(np.array([0, 0, 1]), np.array([1, 2, 3]))
    assert "\n" not in str(caught.value)


def test_a_group_under_two_classes_is_refused():
    with pytest.raises(HarnessError, match="more than one class"):
        heldout_folds(np.array([0, 1, 1]), np.array([1, 1, 2]))


def test_knn_votes_the_majority_of_the_nearest_rows():
    train = (np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), np.array([5, 5, 7]))
    assert knn_accuracy(train, (np.array([[1.0, 0.05], [0.1, 1.0]]), np.array([5, 7])), k=1) == 1.0
    assert knn_accuracy(train, (np.array([[0.1, 1.0]]), np.array([7])), k=3) == 0.0  # two of three say 5
