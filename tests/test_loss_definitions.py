"""Every contrastive loss the methods use, against its paper's formula written row by row in plain Python.

The references below use math.exp / math.log on lists of floats and never call the code under test, so a
mistake in the implementation cannot cancel out of both sides. Each loss gets hand-checkable cases (a batch
of 2 whose value is worked out in the comment, ties, a masked row) and a random batch in float64.

Tolerance: the inputs are float64 and each value is a log-sum-exp over at most 2B = 12 terms of size <= 1 / tau
= 10, so both sides round by a few dozen eps64 (2.2e-16) times 10: rel 1e-9 leaves a wide margin and is still
far below any change a wrong mask or a missing direction makes (those move the loss by O(0.1) here).
Guide similarities are float32 in the implementation (guide_similarity casts), so they only pick masks,
never enter a value; float32 rounds a cosine of 8-dimensional unit vectors by about 8 eps32 = 1e-6, and the
random guides below have no two similarities within 1e-5 of each other in a row, so no rank can swap.
"""

from __future__ import annotations

import math

import pytest
import torch

from methods.clip_guided_simclr import guided_nt_xent
from methods.common.losses import nt_xent, supcon, symmetric_info_nce
from methods.common.mi import (
    CLUBBound,
    NCEBound,
    conditional_info_nce,
    conditional_nce_club,
    info_nce,
    nce_club,
    same_condition_weights,
)

REL = 1e-9
E = math.e


# -- the references -----------------------------------------------------------------------------------------

def rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(x) for x in row] for row in t.detach()]


def cosine(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def log_sum_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def partner(i: int, b: int) -> int:
    """Views 0..B-1 are the first views of samples 0..B-1, views B..2B-1 their second views."""
    return (i + b) % (2 * b)


def view_term(views: list[list[float]], i: int, positive: int, tau: float, left_out=frozenset()) -> float:
    """Chen et al.'s l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), s the cosine similarity;
    `left_out` are further columns out of the denominator (the drop variants' negatives)."""
    logits = {k: cosine(views[i], views[k]) / tau for k in range(len(views)) if k != i and k not in left_out}
    return log_sum_exp(list(logits.values())) - logits[positive]


def nt_xent_by_definition(z1, z2, tau: float) -> float:
    views, b = rows(z1) + rows(z2), len(z1)
    return sum(view_term(views, i, partner(i, b), tau) for i in range(2 * b)) / (2 * b)


def clip_by_definition(a, b, scale: float) -> float:
    """Radford et al.: cross-entropy over each image's row of logits and over each text's column, averaged."""
    a, b = rows(a), rows(b)
    logits = [[scale * cosine(u, v) for v in b] for u in a]
    n = len(a)
    image_to_text = sum(log_sum_exp(logits[i]) - logits[i][i] for i in range(n)) / n
    text_to_image = sum(log_sum_exp([logits[i][j] for i in range(n)]) - logits[j][j] for j in range(n)) / n
    return (image_to_text + text_to_image) / 2


def guide_neighbour(guides: list[list[float]], i: int) -> int:
    """The view the guide finds most similar to view i among the other samples' views (not i, not its partner)."""
    b = len(guides) // 2
    others = [j for j in range(2 * b) if j not in (i, partner(i, b))]
    return max(others, key=lambda j: cosine(guides[i], guides[j]))


def add_new_positive_by_definition(z1, z2, g1, g2, tau: float) -> float:
    """Zhang et al.'s AddNewPositive: the mean of the usual NT-Xent term and the guide neighbour's term."""
    views, guides, b = rows(z1) + rows(z2), rows(g1) + rows(g2), len(z1)
    usual = sum(view_term(views, i, partner(i, b), tau) for i in range(2 * b)) / (2 * b)
    added = sum(view_term(views, i, guide_neighbour(guides, i), tau) for i in range(2 * b)) / (2 * b)
    return (usual + added) / 2


def drop_negatives_by_definition(z1, z2, g1, g2, fraction: float, most_similar: bool, tau: float) -> float:
    """Each view's row of 2B guide similarities is ranked whole (itself and its partner in it, as the public
    code counts); the negatives among its k = int(fraction 2B) highest (lowest) leave the denominator."""
    views, guides, b = rows(z1) + rows(z2), rows(g1) + rows(g2), len(z1)
    k = max(1, int(fraction * 2 * b))
    total = 0.0
    for i in range(2 * b):
        ranked = sorted(range(2 * b), key=lambda j: cosine(guides[i], guides[j]), reverse=most_similar)
        dropped = set(ranked[:k]) - {i, partner(i, b)}
        total += view_term(views, i, partner(i, b), tau, left_out=dropped)
    return total / (2 * b)


def drop_false_positive_by_definition(z1, z2, g1, g2, fraction: float, tau: float) -> float:
    """The m = round(fraction B) pairs whose two views the guide finds least alike (one pair always kept) lose
    both their anchor terms; their views stay in every other row's denominator."""
    views, b = rows(z1) + rows(z2), len(z1)
    pair_sim = [cosine(u, v) for u, v in zip(rows(g1), rows(g2))]
    m = min(int(round(fraction * b)), b - 1)
    dropped = set(sorted(range(b), key=lambda k: pair_sim[k])[:m])
    kept = [i for i in range(2 * b) if i % b not in dropped]
    return sum(view_term(views, i, partner(i, b), tau) for i in kept) / len(kept)


def supcon_by_definition(features, labels, tau: float) -> float:
    """Khosla et al.'s L_out; an anchor with no positive has no term (the mean runs over the others)."""
    views, labels = rows(features), [int(y) for y in labels]
    terms = []
    for i in range(len(views)):
        positives = [p for p in range(len(views)) if p != i and labels[p] == labels[i]]
        if positives:
            terms.append(sum(view_term(views, i, p, tau) for p in positives) / len(positives))
    return sum(terms) / len(terms)


def info_nce_by_definition(scores, weights=None) -> float:
    """Oord et al.'s bound, mean_i [f_ii - log sum_j w_ij exp f_ij], w_ij = 1 / B without a condition
    (so the bound reads log B - InfoNCE loss); a zero weight takes its column out of row i."""
    f = rows(scores)
    n = len(f)
    w = rows(weights) if weights is not None else [[1 / n] * n for _ in range(n)]
    return sum(f[i][i] - log_sum_exp([f[i][j] + math.log(w[i][j]) for j in range(n) if w[i][j] > 0])
               for i in range(n)) / n


def club_by_definition(scores, weights=None) -> float:
    """Cheng et al.'s CLUB with a critic for the log-density: mean_i [f_ii - sum_j w_ij f_ij], w_ij = 1 / B
    without a condition (the mean over all B x B pairs)."""
    f = rows(scores)
    n = len(f)
    w = rows(weights) if weights is not None else [[1 / n] * n for _ in range(n)]
    return sum(f[i][i] - sum(w[i][j] * f[i][j] for j in range(n)) for i in range(n)) / n


def random_batch(seed: int, b: int = 6, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=torch.float64) for d in (dim, dim, 8, 8)]


# The guide of the hand cases: two samples, each sample's second view a little off its first, so each view's
# partner is the most guide-similar view of all (cos 0.995) and the other sample's views are far (cos 0.1-0.2).
HAND_G1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
HAND_G2 = torch.tensor([[1.0, 0.1], [0.1, 1.0]], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


# -- NT-Xent -------------------------------------------------------------------------------------------------

def test_nt_xent_on_a_batch_of_two_by_hand():
    """z1 = z2 = I, tau = 1: every view has its partner at cosine 1 and the other sample's two views at 0, so
    l = -log e / (e + 1 + 1) = log(e + 2) - 1. Its own cosine-1 self-pair must stay out of the denominator."""
    assert nt_xent(EYE, EYE, 1.0).item() == pytest.approx(math.log(E + 2) - 1, rel=REL)
    assert nt_xent_by_definition(EYE, EYE, 1.0) == pytest.approx(math.log(E + 2) - 1, rel=REL)


def test_nt_xent_with_every_view_tied_is_log_of_the_other_views():
    """All 2B views equal: each of the 2B - 1 others is as likely as the partner, l = log(2B - 1)."""
    z = torch.ones(3, 4, dtype=torch.float64)
    assert nt_xent(z, z, 0.1).item() == pytest.approx(math.log(5), rel=REL)


@pytest.mark.parametrize("seed", [0, 1])
def test_nt_xent_matches_its_definition_on_a_random_batch(seed):
    z1, z2, _, _ = random_batch(seed)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(nt_xent_by_definition(z1, z2, 0.1), rel=REL)


# -- CLIP --------------------------------------------------------------------------------------------------

def test_clip_on_a_batch_of_two_by_hand_averages_both_directions():
    """a = I, b = both texts along a_0, scale 2. Images to texts: image 0 ties its texts (2, 2), image 1 ties
    them at (0, 0): log 2 each. Texts to images: each text sees logits (2, 0); text 0's image is the first,
    text 1's the second: log(1 + e^-2) and log(1 + e^2). The loss is the mean of the two directions."""
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    texts = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    expected = (math.log(2) + texts) / 2
    assert symmetric_info_nce(EYE, b, 2.0).item() == pytest.approx(expected, rel=REL)
    assert clip_by_definition(EYE, b, 2.0) == pytest.approx(expected, rel=REL)


def test_clip_with_tied_logits_is_log_batch_size():
    a = torch.ones(4, 3, dtype=torch.float64)
    assert symmetric_info_nce(a, a, torch.tensor(10.0, dtype=torch.float64)).item() == pytest.approx(math.log(4))


@pytest.mark.parametrize("seed", [0, 1])
def test_clip_matches_its_definition_on_a_random_batch(seed):
    a, b, _, _ = random_batch(seed)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    assert symmetric_info_nce(a, b, scale).item() == pytest.approx(clip_by_definition(a, b, 1 / 0.07), rel=REL)


# -- CLIP-guided SimCLR's variants ---------------------------------------------------------------------------

def guided(variant: str, z1, z2, g1, g2, fraction: float, tau: float) -> float:
    labels = torch.arange(len(z1))  # diagnostics only: the loss never reads them
    return guided_nt_xent(z1, z2, g1, g2, labels, variant, fraction, tau)["loss"].item()


def test_add_new_positive_on_a_batch_of_two_by_hand():
    """z1 = z2 = I, tau = 1, and the hand guide: the partner is each view's most guide-similar view but never a
    candidate, so the new positive is one of the other sample's views (cosine 0 to the anchor). Its term is
    -log 1 / (e + 2) = log(e + 2); the usual term log(e + 2) - 1 as in NT-Xent: the mean is log(e + 2) - 1/2.
    Were the partner a candidate, both terms would be the usual one, log(e + 2) - 1."""
    expected = math.log(E + 2) - 0.5
    assert guided("add-new-positive", EYE, EYE, HAND_G1, HAND_G2, 0.0, 1.0) == pytest.approx(expected, rel=REL)
    assert add_new_positive_by_definition(EYE, EYE, HAND_G1, HAND_G2, 1.0) == pytest.approx(expected, rel=REL)


def test_drop_false_negative_on_a_batch_of_two_by_hand():
    """Fraction 0.75 of 2B = 4: k = 3, each row's top three are itself, its partner and the nearer of the other
    sample's views, the one negative dropped. z1 = z2 = I, tau = 1: l = -log e / (e + 1) = log(e + 1) - 1 in
    every row. Were the partner a candidate it would be dropped and its own term infinite."""
    value = guided("drop-false-negative", EYE, EYE, HAND_G1, HAND_G2, 0.75, 1.0)
    assert value == pytest.approx(math.log(E + 1) - 1, rel=REL)
    assert drop_negatives_by_definition(EYE, EYE, HAND_G1, HAND_G2, 0.75, True, 1.0) == pytest.approx(value, rel=REL)


def test_drop_easy_negative_on_a_batch_of_two_by_hand():
    """Fraction 0.25 of 4: k = 1, each row's least guide-similar view, always one of the other sample's views:
    one negative dropped, l = log(e + 1) - 1 in every row (z1 = z2 = I, tau = 1)."""
    value = guided("drop-easy-negative", EYE, EYE, HAND_G1, HAND_G2, 0.25, 1.0)
    assert value == pytest.approx(math.log(E + 1) - 1, rel=REL)
    assert drop_negatives_by_definition(EYE, EYE, HAND_G1, HAND_G2, 0.25, False, 1.0) == pytest.approx(value, rel=REL)


def test_drop_false_positive_leaves_out_the_masked_rows_by_hand():
    """Pair 1's guide views disagree more (cos 0.95 against pair 0's 0.995): fraction 0.5 of 2 pairs drops it, so
    rows 1 and 3 have no term, while its views stay among rows 0 and 2's negatives. z1 = I, z2 = [[1, 0], [1, 1]],
    tau = 1: row 0 sees the partner at 1, view 1 at 0, view 3 at 1/sqrt 2; row 2 sees view 0 at 1, view 1 at 0,
    view 3 at 1/sqrt 2: both l = log(e + 1 + e^(1/sqrt 2)) - 1. Row 3 would see its partner at 1/sqrt 2."""
    g2 = torch.tensor([[1.0, 0.1], [0.33, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    expected = math.log(E + 1 + math.exp(1 / math.sqrt(2))) - 1
    assert guided("drop-false-positive", EYE, z2, HAND_G1, g2, 0.5, 1.0) == pytest.approx(expected, rel=REL)
    assert drop_false_positive_by_definition(EYE, z2, HAND_G1, g2, 0.5, 1.0) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_guided_variant_matches_its_definition_on_a_random_batch(seed):
    z1, z2, g1, g2 = random_batch(seed)
    g2 = g1 + 0.3 * g2  # views of one sample look alike to the guide, as an encoder guide's do
    tau = 0.1
    assert guided("add-new-positive", z1, z2, g1, g2, 0.0, tau) == pytest.approx(
        add_new_positive_by_definition(z1, z2, g1, g2, tau), rel=REL)
    for fraction in (0.1, 0.25, 0.5):  # k = 1, 3, 6 of 12: partner and self among the top, or not
        assert guided("drop-false-negative", z1, z2, g1, g2, fraction, tau) == pytest.approx(
            drop_negatives_by_definition(z1, z2, g1, g2, fraction, True, tau), rel=REL)
        assert guided("drop-easy-negative", z1, z2, g1, g2, fraction, tau) == pytest.approx(
            drop_negatives_by_definition(z1, z2, g1, g2, fraction, False, tau), rel=REL)
    for fraction in (1 / 6, 0.5, 0.99):  # 1, 3, and at most B - 1 = 5 pairs dropped
        assert guided("drop-false-positive", z1, z2, g1, g2, fraction, tau) == pytest.approx(
            drop_false_positive_by_definition(z1, z2, g1, g2, fraction, tau), rel=REL)


def test_the_random_guides_have_no_near_ties():
    """What the module docstring assumes of them: float32 similarities cannot swap two guide ranks."""
    for seed in (0, 1, 2):
        _, _, g1, g2 = random_batch(seed)
        guides = rows(g1) + rows(g1 + 0.3 * g2)
        for i in range(len(guides)):
            sims = sorted(cosine(guides[i], g) for g in guides)
            assert min(b - a for a, b in zip(sims, sims[1:])) > 1e-5


# -- SupCon ------------------------------------------------------------------------------------------------

def test_supcon_leaves_an_anchor_without_positives_out_by_hand():
    """Views (1, 0), (1, 0), (0, 1) of classes 0, 0, 1, tau = 1: anchors 0 and 1 each see their one positive at
    cosine 1 and the third view at 0, l = log(e + 1) - 1; anchor 2 has no positive and no term (counted as 0
    it would scale the mean by 2/3)."""
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    assert supcon(features, labels, 1.0).item() == pytest.approx(math.log(E + 1) - 1, rel=REL)
    assert supcon_by_definition(features, labels, 1.0) == pytest.approx(math.log(E + 1) - 1, rel=REL)


@pytest.mark.parametrize("seed", [0, 1])
def test_supcon_matches_its_definition_on_a_random_batch(seed):
    """Classes of one to four views (class 3 seen once: no term) and tau = 0.2, so a mean over several
    positives and the temperature both count."""
    features = random_batch(seed, b=10)[0]
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 0, 1, 2, 3])
    assert supcon(features, labels, 0.2).item() == pytest.approx(supcon_by_definition(features, labels, 0.2), rel=REL)


# -- on the inputs' device -----------------------------------------------------------------------------------

def test_each_loss_builds_its_masks_and_targets_on_its_inputs_device():
    """Training on a GPU needs the self-pair masks and target indices there too. The meta device stands in
    for one on a CPU-only machine: it computes shapes only, and a CPU tensor mixed into its arithmetic fails
    as one mixed into a GPU's does."""
    z = torch.randn(4, 3, device="meta")
    labels = torch.tensor([0, 0, 1, 1], device="meta")
    for loss in (nt_xent(z, z, 0.1), symmetric_info_nce(z, z, 2.0), supcon(z, labels, 0.1)):
        assert loss.device.type == "meta" and loss.shape == ()


# -- FactorCL's bounds ---------------------------------------------------------------------------------------

def test_info_nce_and_club_on_two_by_two_scores_by_hand():
    """f = [[2, 0], [1, 3]]: InfoNCE = ((2 - log((e^2 + 1) / 2)) + (3 - log((e + e^3) / 2))) / 2 and
    CLUB = (2 + 3) / 2 - (2 + 0 + 1 + 3) / 4 = 1."""
    scores = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    nce = ((2 - math.log((math.exp(2) + 1) / 2)) + (3 - math.log((E + math.exp(3)) / 2))) / 2
    assert info_nce(scores).item() == pytest.approx(nce, rel=REL)
    assert info_nce_by_definition(scores) == pytest.approx(nce, rel=REL)
    assert nce_club(scores).item() == pytest.approx(1.0, rel=REL)


def test_tied_scores_give_zero_and_a_certain_critic_gives_log_batch_size():
    tied = torch.full((5, 5), 0.7, dtype=torch.float64)
    assert info_nce(tied).item() == pytest.approx(0.0, abs=1e-12)
    assert nce_club(tied).item() == pytest.approx(0.0, abs=1e-12)
    certain = 200.0 * torch.eye(5, dtype=torch.float64)  # e^-200 of each negative: log 5 to within 1e-86
    assert info_nce(certain).item() == pytest.approx(math.log(5), rel=REL)


def test_a_row_alone_in_its_condition_has_nothing_to_measure():
    """Condition labels 0, 0, 1: row 2's only same-condition sample is itself (w_22 = 1), so its InfoNCE term is
    f_22 - log exp f_22 = 0 and its CLUB term f_22 - f_22 = 0, whatever its other scores."""
    scores = torch.tensor([[1.0, -2.0, 9.0], [0.5, 2.0, -9.0], [4.0, 5.0, 0.0]], dtype=torch.float64)
    weights = same_condition_weights(torch.tensor([0, 0, 1])).double()
    rows_01 = ((1 - math.log((E + math.exp(-2)) / 2)) + (2 - math.log((math.exp(0.5) + math.exp(2)) / 2))) / 3
    assert conditional_info_nce(scores, weights).item() == pytest.approx(rows_01, rel=REL)
    assert info_nce_by_definition(scores, weights) == pytest.approx(rows_01, rel=REL)
    club_01 = ((1 - (1 - 2) / 2) + (2 - (0.5 + 2) / 2)) / 3
    assert conditional_nce_club(scores, weights).item() == pytest.approx(club_01, rel=REL)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bounds_match_their_definitions_on_random_scores_and_weights(seed):
    g = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(7, 7, generator=g, dtype=torch.float64)
    condition = torch.randint(0, 3, (7,), generator=g)
    kernel = torch.softmax(torch.randn(7, 7, generator=g, dtype=torch.float64), dim=1)
    assert info_nce(scores).item() == pytest.approx(info_nce_by_definition(scores), rel=REL)
    assert nce_club(scores).item() == pytest.approx(club_by_definition(scores), rel=REL)
    for weights in (same_condition_weights(condition).double(), kernel):
        assert conditional_info_nce(scores, weights).item() == pytest.approx(
            info_nce_by_definition(scores, weights), rel=REL)
        assert conditional_nce_club(scores, weights).item() == pytest.approx(
            club_by_definition(scores, weights), rel=REL)


def test_the_bound_modules_apply_the_definitions_to_their_critics_pair_scores():
    """NCEBound and CLUBBound read their critic's f(a_i, b_j), each pair scored on its own (critic.paired)."""
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    nce, club = NCEBound(3, 3, hidden=8).double(), CLUBBound(3, 3, hidden=8).double()
    for bound, definition in ((nce, info_nce_by_definition), (club, club_by_definition)):
        with torch.no_grad():
            pairs = torch.stack([bound.critic.paired(a[i].expand(5, 3), b) for i in range(5)])
            assert bound(a, b).item() == pytest.approx(definition(pairs), rel=1e-7)
