"""Statistics of a study's table: bootstrap intervals of means, curves on a common grid, paired tests.

Plain numpy / scipy on plain arrays (the cohort layer gathers the numbers): nothing here reads a folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
TEST_LEVEL = 0.05


def bootstrap_mean_interval(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                            confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (n,) and its percentile bootstrap interval.

    ``resamples`` resamples of n cases drawn with replacement by ``numpy.random.default_rng(seed)``; the bounds
    are the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of their means. One value gives
    (v, v, v): an interval of zero width that says nothing about the spread."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to average")
    picks = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(values.mean()), float(low), float(high)


def on_grid(fractions, curve, grid: np.ndarray) -> np.ndarray:
    """A curve sampled at ``fractions`` (ascending, 0 .. 1) linearly interpolated onto ``grid`` (G,)."""
    return np.interp(grid, np.asarray(fractions, dtype=float), np.asarray(curve, dtype=float))


def median_and_quartiles(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, 25th, 75th percentile) over cases of curves (n cases, G grid points), each (G,)."""
    q25, median, q75 = np.percentile(np.asarray(curves, dtype=float), [25, 50, 75], axis=0)
    return median, q25, q75


def smallest_exact_p(pairs: int) -> float:
    """The smallest two-sided p-value the exact signed-rank test can give with this many non-zero pairs."""
    return min(1.0, 2.0 / 2.0 ** pairs)


@dataclass
class PairedTest:
    """A two-sided Wilcoxon signed-rank test of paired values a - b (p None when no test was run; note says
    why)."""

    pairs: int
    mean_difference: float | None
    statistic: float | None
    p_value: float | None
    note: str


def paired_wilcoxon(a, b, level: float = TEST_LEVEL) -> PairedTest:
    """``scipy.stats.wilcoxon(a, b)`` (two-sided, exact for small n) on the pairs (a_i, b_i), or no test when
    there are too few non-zero differences for any p-value below ``level`` to be possible."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pairs = a.size
    if pairs == 0:
        return PairedTest(0, None, None, None, "no case has both")
    difference = float(np.mean(a - b))
    nonzero = int(np.count_nonzero(a - b))
    if nonzero == 0:
        return PairedTest(pairs, difference, None, None, "every difference is 0: no test")
    if smallest_exact_p(nonzero) >= level:
        return PairedTest(pairs, difference, None, None,
                          f"too few pairs for a test: with {nonzero} non-zero difference(s) the smallest possible "
                          f"two-sided p is {smallest_exact_p(nonzero):.3g} >= {level}; no test run")
    result = stats.wilcoxon(a, b, alternative="two-sided")
    return PairedTest(pairs, difference, float(result.statistic), float(result.pvalue),
                      "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon)")
