"""The comparison statistics against scipy.stats."""

import numpy as np
import pytest
from scipy import stats

from dlcli.stats import summarize, welch_t_test


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, rng.integers(2, 9)).tolist()
    b = rng.normal(0.7, 2.5, rng.integers(2, 9)).tolist()
    ours = welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(reference.statistic, rel=1e-9)
    assert ours.p == pytest.approx(reference.pvalue, rel=1e-7)


def test_confidence_interval_matches_scipy():
    values = [0.91, 0.93, 0.90, 0.95, 0.92]
    summary = summarize(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert summary.mean == pytest.approx(np.mean(values))
    assert summary.mean - summary.half_width == pytest.approx(low)
    assert summary.mean + summary.half_width == pytest.approx(high)
    assert summary.std == pytest.approx(np.std(values, ddof=1))


def test_identical_samples():
    assert welch_t_test([1.0, 1.0], [1.0, 1.0]).p == 1.0
    assert welch_t_test([1.0, 1.0], [2.0, 2.0]).p == 0.0
