"""The leaderboard's statistics against values worked out by hand or tabulated in the literature."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from harness.results import stats


def test_a_t_interval_over_three_seeds_uses_two_degrees_of_freedom():
    interval = stats.t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    # t(0.975, 2) * sd / sqrt n, with sd = 1; t printed to 6 decimals (5e-7), so 5e-7 / sqrt 3 on the half-width
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=5e-7 / math.sqrt(3))


def test_a_t_interval_over_two_seeds_scales_the_spread_by_t_with_one_degree_of_freedom():
    interval = stats.t_interval([0.5, 0.7])
    # sd = 0.2 / sqrt 2, so half-width = t(0.975, 1) * sd / sqrt 2 = 12.706205 * 0.1; t printed to 6 decimals
    assert interval.n == 2 and interval.mean == pytest.approx(0.6)
    assert interval.half_width == pytest.approx(12.706205 * 0.1, abs=5e-7 * 0.1)
    assert interval.low == pytest.approx(0.6 - 12.706205 * 0.1, abs=5e-7 * 0.1)


def test_one_seed_has_no_interval_and_no_seed_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nan bounds by design, not numpy's warning about a zero-divisor spread
        interval = stats.t_interval([0.5])
    assert interval.mean == 0.5 and interval.n == 1
    assert math.isnan(interval.low) and math.isnan(interval.high) and math.isnan(interval.half_width)
    with pytest.raises(ValueError, match="^an interval needs at least one score$"):
        stats.t_interval([])


def test_the_paired_test_sees_a_small_consistent_gap_that_an_unpaired_view_would_miss():
    a = {0: 0.80, 1: 0.90, 2: 0.70, 3: 0.85}
    b = {s: v - 0.01 + 0.001 * s for s, v in a.items()}  # seeds vary by 20 points, the gap by 0.3
    assert stats.paired_test(a, b).p_value < 0.01 and stats.paired_test(a, b).n == 4
    # float64 differences of O(1) scores: rounding ~1e-16, far inside approx's default rel 1e-6 (8.5e-9)
    assert stats.paired_test(a, b).mean_difference == pytest.approx(0.0085)


def test_the_paired_test_uses_only_matched_seeds_and_handles_degenerate_gaps():
    assert stats.paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}) == stats.PairedTest(2, 0.0, 1.0)  # identical
    gap = stats.paired_test({0: 0.6, 1: 0.7, 2: 0.9}, {0: 0.5, 1: 0.6, 2: 0.8})  # a constant gap
    assert gap.n == 3 and gap.mean_difference == pytest.approx(0.1) and gap.p_value == 0.0
    single = stats.paired_test({0: 0.6, 1: 0.7}, {1: 0.5, 2: 0.9})
    assert single.n == 1 and single.mean_difference == pytest.approx(0.2) and math.isnan(single.p_value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no seed in common: nothing to average, and no numpy warning about it
        none = stats.paired_test({0: 0.6}, {1: 0.5})
    assert none.n == 0 and math.isnan(none.mean_difference) and math.isnan(none.p_value)


def test_float32_scores_give_the_float64_statistics_of_the_same_numbers():
    """A score may arrive as a float32 (a metric kept in a float32 array, say): a cell must not move with the
    storage of its scores. Each pair is within a factor of two, so its float32 difference is exact (Sterbenz)
    and both sides run the same float64 arithmetic on the same values: equal to the last bit."""
    a = np.array([0.81, 0.93, 0.77, 0.86, 0.90], dtype=np.float32)
    b = np.array([0.79, 0.90, 0.78, 0.83, 0.88], dtype=np.float32)
    assert stats.t_interval(a) == stats.t_interval(a.astype(float))
    assert stats.paired_test(dict(enumerate(a)), dict(enumerate(b))) == stats.paired_test(
        dict(enumerate(a.astype(float))), dict(enumerate(b.astype(float))))


def test_holm_adjusts_step_down_and_leaves_untestable_comparisons_out():
    # sorted 0.01, 0.03, 0.04 -> 0.01 * 3, max(0.03 * 2, 0.03), max(0.04 * 1, 0.06); one float64 product
    # each, an ulp or so, far inside approx's default rel 1e-6
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


def test_holm_keeps_adjusted_p_values_probabilities_and_tied_ones_equal():
    # 0.6 * 2 and max(1.2, 0.7 * 1): both above 1, so both are 1
    assert stats.holm([0.7, 0.6]) == [1.0, 1.0]
    # sorted 0.01, 0.02, 0.02 -> 0.03, 0.04, max(0.04, 0.02): the two tied p values end equal
    assert stats.holm([0.02, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])


def test_a_p_value_of_exactly_alpha_is_a_tie():
    comparison = stats.BestComparison("best", {"at": 0.05, "below": 0.0499, "untestable": math.nan})
    assert comparison.ties() == {"at"} and comparison.ties(alpha=0.0499) == {"at", "below"}


def test_ties_with_the_best_are_the_rows_the_corrected_test_cannot_separate():
    scores = {"best": {0: 0.90, 1: 0.92, 2: 0.91}, "close": {0: 0.895, 1: 0.905, 2: 0.912},
              "far": {0: 0.60, 1: 0.63, 2: 0.61}, "one-seed": {0: 0.95}}
    comparison = stats.compare_with_best(scores)
    assert comparison.best == "one-seed"  # the highest mean leads, even on one seed
    scores.pop("one-seed")
    comparison = stats.compare_with_best(scores)
    assert comparison.best == "best" and comparison.ties() == {"close"}


def test_the_critical_difference_matches_demsars_table():
    means = pd.DataFrame({t: {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6} for t in "vwxyz"})
    cd = stats.critical_difference(means)
    # q_0.05 = 2.569 for k = 4, good to a unit of its last printed digit, 1e-3 (see the table test below),
    # times sqrt(k (k + 1) / 6N) = sqrt(4 x 5 / 30)
    assert cd.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / 30), abs=1e-3 * math.sqrt(4 * 5 / 30))
    assert cd.average_ranks == {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0} and cd.friedman_p < 0.01
    assert stats.critical_difference(means[["v", "w"]]) is None  # two tasks: too few to say


def test_three_tasks_and_three_methods_are_enough_for_a_critical_difference_at_any_alpha():
    means = pd.DataFrame({t: {"a": 0.9, "b": 0.8, "c": 0.7} for t in "xyz"})
    cd = stats.critical_difference(means, alpha=0.10)
    # Demšar's q_0.10 = 2.052 for k = 3 (good to 1e-3, as above), times sqrt(k (k + 1) / 6N) = sqrt(3 x 4 / 18)
    assert cd.cd == pytest.approx(2.052 * math.sqrt(12 / 18), abs=1e-3 * math.sqrt(12 / 18))
    assert cd.tasks == 3 and cd.alpha == 0.10
    assert stats.critical_difference(means[["x", "y"]]) is None  # two tasks
    assert stats.critical_difference(means.loc[["a", "b"]]) is None  # two methods


# -- the formulas against scipy.stats, which the leaderboard does not import (it starts slower than torch) --

def test_the_paired_test_p_value_is_scipys_ttest_rel():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        a, b = rng.normal(0.8, 0.05, n), rng.normal(0.79, 0.05, n)
        want = scipy_stats.ttest_rel(a, b).pvalue
        got = stats.paired_test(dict(enumerate(a)), dict(enumerate(b))).p_value
        # The same scipy.special function on a t statistic summed in another order: a few eps64 (2.2e-16)
        # relative, times p's sensitivity |d log p / d log t| (< 10 here): ~1e-14; 1e-12 leaves a hundredfold.
        assert got == pytest.approx(want, rel=1e-12)


def test_the_friedman_p_value_is_scipys_with_and_without_ties():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(1)
    tied = pd.DataFrame({t: {"a": 0.9, "b": 0.9, "c": 0.7, "d": 0.6 + 0.01 * i} for i, t in enumerate("vwxyz")})
    untied = pd.DataFrame(rng.normal(size=(5, 4)), index=list("abcde"))
    for means in (tied, untied):
        want = scipy_stats.friedmanchisquare(*[means.loc[row].to_numpy() for row in means.index]).pvalue
        # As for the paired test: the same chdtrc on a statistic rounded differently, a few eps64 times
        # p's sensitivity (chi2 / 2 < 10 here); 1e-12 leaves a hundredfold.
        assert stats.friedman_p(means) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5, 10, 20])
def test_the_studentized_range_quantile_is_scipys(k):
    from scipy import stats as scipy_stats

    want = scipy_stats.studentized_range.ppf(0.95, k, np.inf)
    # scipy integrates the CDF to epsabs 1e-11; over the range's density at its 95% quantile (~0.08) that is
    # ~1.3e-10 on q >= 2.77, rel 5e-11. Ours, a trapezoid sum of an analytic integrand (error exponentially
    # small in 1 / step) bisected 60 times on [0, 20], is exact to rounding. 1e-9 leaves twentyfold.
    assert stats.studentized_range_quantile(0.95, k) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("probability", [0.05, 0.5, 0.95])
def test_the_range_of_two_normals_has_its_closed_form_quantile(probability):
    """X1 - X2 is normal with variance 2, so P(|X1 - X2| <= q) = 2 Phi(q / sqrt 2) - 1: q = sqrt 2 Phi^-1((1 + p) / 2).
    Ours sums 4801 terms, rounding the probability by at most 4801 eps64 ~ 1e-12 of it; q moves by that times
    p / (q density(q)) <= 4.2 for these p: 5e-12 relative. 1e-10 leaves twentyfold."""
    from scipy.special import ndtri

    want = math.sqrt(2) * ndtri((1 + probability) / 2)
    assert stats.studentized_range_quantile(probability, 2) == pytest.approx(want, rel=1e-10)


def test_the_nemenyi_q_values_are_demsars_table():
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    # Printed to 3 decimals, but not all rounded: k = 3's 2.343 is the true 2.34370 cut short. The entries are
    # good to a unit of the last digit, 1e-3, not half of one.
    for k, q in table.items():
        assert stats.studentized_range_quantile(0.95, k) / math.sqrt(2) == pytest.approx(q, abs=1e-3)
