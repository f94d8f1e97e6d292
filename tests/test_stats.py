"""The leaderboard's statistics against values worked out by hand or tabulated in the literature."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.results import stats


def test_a_t_interval_over_three_seeds_uses_two_degrees_of_freedom():
    interval = stats.t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    # t(0.975, 2) * sd / sqrt n, with sd = 1; t printed to 6 decimals (5e-7), so 5e-7 / sqrt 3 on the half-width
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=5e-7 / math.sqrt(3))


def test_one_seed_has_no_interval():
    interval = stats.t_interval([0.5])
    assert interval.mean == 0.5 and math.isnan(interval.low) and math.isnan(interval.half_width)


def test_the_paired_test_sees_a_small_consistent_gap_that_an_unpaired_view_would_miss():
    a = {0: 0.80, 1: 0.90, 2: 0.70, 3: 0.85}
    b = {s: v - 0.01 + 0.001 * s for s, v in a.items()}  # seeds vary by 20 points, the gap by 0.3
    assert stats.paired_test(a, b).p_value < 0.01
    # float64 differences of O(1) scores: rounding ~1e-16, far inside approx's default rel 1e-6 (8.5e-9)
    assert stats.paired_test(a, b).mean_difference == pytest.approx(0.0085)


def test_the_paired_test_uses_only_matched_seeds_and_handles_degenerate_gaps():
    assert stats.paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).p_value == 1.0  # identical
    assert stats.paired_test({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}).p_value == 0.0  # a constant gap
    single = stats.paired_test({0: 0.6, 1: 0.7}, {1: 0.5, 2: 0.9})
    assert single.n == 1 and math.isnan(single.p_value)


def test_holm_adjusts_step_down_and_leaves_untestable_comparisons_out():
    # sorted 0.01, 0.03, 0.04 -> 0.01 * 3, max(0.03 * 2, 0.03), max(0.04 * 1, 0.06); one float64 product
    # each, an ulp or so, far inside approx's default rel 1e-6
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


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


def test_the_nemenyi_q_values_are_demsars_table():
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    # Printed to 3 decimals, but not all rounded: k = 3's 2.343 is the true 2.34370 cut short. The entries are
    # good to a unit of the last digit, 1e-3, not half of one.
    for k, q in table.items():
        assert stats.studentized_range_quantile(0.95, k) / math.sqrt(2) == pytest.approx(q, abs=1e-3)
