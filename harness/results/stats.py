"""Statistics for the leaderboard: intervals, paired tests, ranks. Imports no torch.

The choices, and why:

- **Interval per cell: Student's t over seeds.** With three
  seeds a bootstrap has only ten distinct resamples and its interval is too
  narrow; the t interval is the standard small-sample choice and widens
  honestly (the 97.5% quantile of t with 2 degrees of freedom is 4.30).
- **Ties with the best: paired t-test over matched seeds** (as `scipy.stats.ttest_rel`).
  Seed k of two methods shares the data and the probe's split, so the pairs
  are matched and pairing removes the shared variation. A Wilcoxon
  signed-rank test cannot reject anything at 3 pairs (its smallest two-sided
  p is 0.25), so it would call every row a tie. When every paired difference
  is the same number the t statistic is undefined: identical scores count as
  a tie (p = 1), a constant non-zero gap as a difference (p = 0).
- **Multiple comparisons: Holm**, over the family "every other row against the
  best row" within one task. It controls the family-wise error rate without
  assuming independent tests.
- **Average rank with a critical difference: Friedman test, then Nemenyi**
  (Demšar, JMLR 2006). Ranks are taken per task on the mean score; the
  critical difference is q_alpha * sqrt(k (k + 1) / (6 N)) with q_alpha the
  studentized range quantile over sqrt 2.
  It needs at least three tasks and three methods, else it is not reported.

The arithmetic is written out here on the distribution functions of
`scipy.special` (t, chi-square, normal): `scipy.stats` alone takes longer to
import than torch, and the leaderboard's commands must start faster than that.
tests/test_stats.py checks every formula against scipy.stats on the same input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
# scipy.special and pandas load inside the functions that need them: a fully resumed run's closing table
# must start faster than torch imports.

LEVEL = 0.95
ALPHA = 0.05
MIN_TASKS_FOR_CD = 3
MIN_METHODS_FOR_CD = 3


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # nan when one seed gives no spread to estimate
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_interval(scores: Sequence[float], level: float = LEVEL) -> Interval:
    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("an interval needs at least one score")
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    from scipy.special import stdtrit  # the t quantile, as scipy.stats.t.ppf computes it

    half = float(stdtrit(n - 1, (1 + level) / 2) * values.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class PairedTest:
    n: int  # matched seeds
    mean_difference: float  # a - b
    p_value: float  # nan with fewer than two matched seeds


def paired_test(a: Mapping[int, float], b: Mapping[int, float]) -> PairedTest:
    """Two-sided paired t-test of a against b over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    differences = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if len(seeds) < 2:
        return PairedTest(len(seeds), float(differences.mean()) if len(seeds) else math.nan, math.nan)
    if np.ptp(differences) == 0:  # zero variance: the t statistic is undefined
        return PairedTest(len(seeds), float(differences[0]), 1.0 if differences[0] == 0 else 0.0)
    from scipy.special import stdtr  # the t distribution's CDF

    n = len(seeds)
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(n))
    return PairedTest(n, float(differences.mean()), float(2 * stdtr(n - 1, -abs(t))))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p values; a nan (an untestable comparison) stays nan and is left out of the family."""
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(values), math.nan)
    family = np.flatnonzero(~np.isnan(values))
    ascending = family[np.argsort(values[family])]
    # Step down: the k-th smallest of m p values times (m - k + 1), never below the one before it. Tied p values
    # end equal in any order (the later ones are raised to the first's product), so the sort need not be stable.
    stepped = np.maximum.accumulate(values[ascending] * np.arange(len(family), 0, -1))
    adjusted[ascending] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


@dataclass(frozen=True)
class BestComparison:
    best: str
    adjusted_p: dict[str, float]  # every other row against the best, Holm-adjusted; nan = untestable

    def ties(self, alpha: float = ALPHA) -> set[str]:
        """Rows whose difference from the best is not significant after correction: p >= alpha (a test at level
        alpha rejects when p < alpha)."""
        return {m for m, p in self.adjusted_p.items() if not math.isnan(p) and p >= alpha}


def compare_with_best(scores: Mapping[str, Mapping[int, float]]) -> BestComparison:
    """scores: row -> seed -> score within one task; higher is better."""
    means = {row: float(np.mean(list(by_seed.values()))) for row, by_seed in scores.items() if by_seed}
    best = max(means, key=lambda row: means[row])
    others = [row for row in means if row != best]
    raw = [paired_test(scores[best], scores[row]).p_value for row in others]
    return BestComparison(best, dict(zip(others, holm(raw))))


@dataclass(frozen=True)
class CriticalDifference:
    average_ranks: dict[str, float]  # row -> mean rank over tasks, 1 = best
    cd: float
    friedman_p: float
    tasks: int
    alpha: float = ALPHA


def average_ranks(means: pd.DataFrame) -> pd.Series:
    """means: rows x tasks with no missing cell; rank 1 is the highest score, ties share the average rank."""
    return means.rank(ascending=False, method="average").mean(axis=1)


def critical_difference(means: pd.DataFrame, alpha: float = ALPHA) -> CriticalDifference | None:
    """Friedman test and Nemenyi critical difference over rows x tasks; None when too few of either."""
    k, n = means.shape
    if n < MIN_TASKS_FOR_CD or k < MIN_METHODS_FOR_CD:
        return None
    q_alpha = studentized_range_quantile(1 - alpha, k) / math.sqrt(2)
    cd = float(q_alpha * math.sqrt(k * (k + 1) / (6 * n)))
    ranks = average_ranks(means)
    return CriticalDifference({str(r): float(v) for r, v in ranks.items()}, cd, friedman_p(means), n, alpha)


def friedman_p(means: pd.DataFrame) -> float:
    """The Friedman test's p value over rows x tasks (rows ranked within each task), with the tie
    correction, as `scipy.stats.friedmanchisquare` computes it."""
    from scipy.special import chdtrc  # the chi-square survival function

    k, n = means.shape
    ranks = means.rank(axis=0, method="average")
    tie_sizes = np.concatenate([column.value_counts().to_numpy() for _, column in ranks.items()])
    correction = 1 - float(np.sum(tie_sizes**3 - tie_sizes)) / (k * (k * k - 1) * n)
    statistic = (12 / (k * n * (k + 1)) * float(np.sum(ranks.sum(axis=1).to_numpy() ** 2)) - 3 * n * (k + 1))
    return float(chdtrc(k - 1, statistic / correction))


def studentized_range_quantile(probability: float, k: int) -> float:
    """q with P(range of k standard normals <= q) = probability (the studentized range at infinite
    degrees of freedom, Nemenyi's case): P(R <= q) = k int phi(z) [Phi(z) - Phi(z - q)]^(k-1) dz,
    integrated on a fine grid and solved by bisection."""
    from scipy.special import ndtr  # the normal CDF

    z, step = np.linspace(-12.0, 12.0, 4801, retstep=True)
    density = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(q: float) -> float:  # the integrand vanishes at both ends, so a plain sum is the trapezoid rule
        return float(np.sum(k * density * (ndtr(z) - ndtr(z - q)) ** (k - 1)) * step)

    low, high = 0.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2
