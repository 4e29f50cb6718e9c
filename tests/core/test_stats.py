"""Tests of qlib.core.stats: Student-t quantiles and paired differences."""

import math

import numpy as np
import pytest

from qlib.core.stats import paired_difference, t_quantile

scipy_stats = pytest.importorskip("scipy.stats")  # installed with scikit-learn; a reference only


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 30, 200])
@pytest.mark.parametrize("p", [0.001, 0.025, 0.1, 0.5, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12)


def test_t_quantile_closed_forms():
    # df = 1 is the Cauchy distribution: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    for p in (0.6, 0.9, 0.975):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


def test_t_quantile_errors():
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 4)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.9, 0)
    with pytest.raises(TypeError, match="df must be an integer"):
        t_quantile(0.9, 4.0)


def test_paired_difference_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=7)
    b = a - 0.3 + 0.1 * rng.normal(size=7)
    d = paired_difference(a, b, confidence=0.9)
    diff = a - b
    half = scipy_stats.t.ppf(0.95, 6) * diff.std(ddof=1) / math.sqrt(7)
    assert d.mean == pytest.approx(diff.mean())
    assert (d.low, d.high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert d.n == 7 and d.excludes_zero


def test_paired_difference_that_is_noise_contains_zero():
    d = paired_difference([0.95, 0.96, 0.97], [0.96, 0.95, 0.97])
    assert d.low < 0 < d.high and not d.excludes_zero
    assert d.format(scale=100, unit=" points") == "+0.0 points (95 % CI -2.5 to +2.5 points, n = 3)"


@pytest.mark.parametrize("a, b, match", [
    ([1.0], [2.0], "n >= 2"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], "same length"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ([1.0, np.nan], [1.0, 2.0], "finite"),
])
def test_paired_difference_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b)
