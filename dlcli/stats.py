"""Statistics for comparisons over seeds: mean with a t-based 95% confidence interval,
and Welch's unequal-variance t-test. Distribution functions come from scipy.special."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from scipy import special


@dataclasses.dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (n - 1)
    half_width: float  # of the 95% confidence interval of the mean; nan for one sample
    n: int


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(mean, 0.0, math.nan, n)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    quantile = special.stdtrit(n - 1, 0.5 + confidence / 2)
    return Summary(mean, std, quantile * std / math.sqrt(n), n)


@dataclasses.dataclass(frozen=True)
class WelchTest:
    t: float
    df: float
    p: float  # two-sided


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Two-sided Welch's t-test of equal means for samples `a` and `b` (each n >= 2)."""
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    if va + vb == 0.0:
        same = sa.mean == sb.mean
        return WelchTest(0.0 if same else math.copysign(math.inf, sa.mean - sb.mean), math.nan, 1.0 if same else 0.0)
    t = (sa.mean - sb.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    return WelchTest(t, df, 2.0 * special.stdtr(df, -abs(t)))
