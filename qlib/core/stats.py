r"""Comparing two methods honestly: paired differences with a Student-t confidence interval.

The book compares methods over several seeds (and data splits): method A and
method B are run on the same seeds, and what matters is the *paired*
difference :math:`d_i = a_i - b_i`, whose spread is usually far smaller than
the spread of either method alone (both share the luck of the seed). With
:math:`n` pairs, mean :math:`\bar d` and sample standard deviation :math:`s_d`,
the two-sided confidence interval of level :math:`1 - \alpha` is

.. math::

    \bar d \pm t_{1-\alpha/2,\, n-1}\, \frac{s_d}{\sqrt n},

with :math:`t_{p,\nu}` the quantile of Student's t distribution with
:math:`\nu` degrees of freedom. An interval that contains 0 means the data do
not tell the two methods apart: the difference is noise at that level.

:func:`~qlib.t_quantile` computes the quantile exactly for integer degrees of
freedom (the closed forms of the t distribution function for integer
:math:`\nu`, inverted by bisection), with numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qlib.core.validation import as_float_array, check_int, check_real

__all__ = ["t_quantile", "PairedDifference", "paired_difference"]


def _t_cdf_two_sided(t: float, df: int) -> float:
    """:math:`A(t) = P(|T| \\le t) = 2F(t) - 1` for ``t >= 0`` (closed form for integer ``df``)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):  # terms cos^k * (2*4*...*(k-1)) / (3*5*...*k)
                term *= c * c * (k - 1) / k
                total += term
        return (2.0 / math.pi) * (theta + s * total)
    total, term = 1.0, 1.0
    for k in range(2, df - 1, 2):  # terms cos^k * (1*3*...*(k-1)) / (2*4*...*k)
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def t_quantile(p, df) -> float:
    r"""The quantile :math:`t_{p,\nu}` of Student's t distribution with ``df`` degrees of freedom.

    Exact to about :math:`10^{-12}` (closed-form distribution function for
    integer :math:`\nu`, inverted by bisection).

    Parameters
    ----------
    p : float
        Probability in (0, 1).
    df : int
        Degrees of freedom, at least 1.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``p`` is not a real number or ``df`` not an integer.
    ValueError
        If ``p`` is outside (0, 1) or ``df < 1``.

    Examples
    --------
    The two-sided 95 % quantiles used with 5 and 10 pairs, and the normal limit:

    >>> round(t_quantile(0.975, 4), 4), round(t_quantile(0.975, 9), 4)
    (2.7764, 2.2622)
    >>> round(t_quantile(0.975, 100000), 3)
    1.96
    """
    p = check_real(p, "p", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    df = check_int(df, "df", 1)
    if p == 0.5:
        return 0.0
    target = abs(2.0 * p - 1.0)
    lo, hi = 0.0, 1.0
    while _t_cdf_two_sided(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf_two_sided(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    q = 0.5 * (lo + hi)
    return q if p > 0.5 else -q


@dataclass(frozen=True)
class PairedDifference:
    """The mean of paired differences ``a - b`` and its Student-t confidence interval.

    Attributes
    ----------
    mean, low, high : float
        The mean difference and the ends of its confidence interval.
    std : float
        Sample standard deviation of the differences (``ddof=1``).
    n : int
        Number of pairs.
    confidence : float
        Level of the interval, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below 0: the data tell the methods apart."""
        return self.low > 0.0 or self.high < 0.0

    def format(self, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
        """``'+1.2 (95 % CI +0.4 to +2.0, n = 5)'``, values multiplied by ``scale`` (100 for points)."""
        f = f"{{:+.{digits}f}}"
        level = f"{100 * self.confidence:g} %"
        return (f"{f.format(scale * self.mean)}{unit} ({level} CI {f.format(scale * self.low)} to "
                f"{f.format(scale * self.high)}{unit}, n = {self.n})")

    def __str__(self) -> str:
        return self.format(digits=3)


def paired_difference(a, b, *, confidence=0.95) -> PairedDifference:
    r"""Mean of the paired differences ``a[i] - b[i]`` with a Student-t confidence interval.

    Parameters
    ----------
    a, b : array_like of float, shape (n,)
        The two methods' results on the same ``n >= 2`` seeds or splits, in
        the same order.
    confidence : float, default 0.95
        Level of the two-sided interval, in (0, 1).

    Returns
    -------
    PairedDifference

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not numeric.
    ValueError
        If they are not 1-D of the same length ``n >= 2``, are not finite, or
        ``confidence`` is outside (0, 1).

    Examples
    --------
    Accuracies of two methods on five seeds: B is better on every seed, by
    0.5 to 1.5 points, although the spread across seeds (about 1 point) is as large:

    >>> a = np.array([0.962, 0.948, 0.971, 0.955, 0.966])
    >>> b = a + np.array([0.010, 0.005, 0.015, 0.010, 0.010])
    >>> d = paired_difference(b, a)
    >>> d.format(scale=100, unit=" points")
    '+1.0 points (95 % CI +0.6 to +1.4 points, n = 5)'
    >>> d.excludes_zero
    True
    """
    a = as_float_array(a, "a")
    b = as_float_array(b, "b")
    if a.ndim != 1 or b.shape != a.shape or a.size < 2:
        raise ValueError(
            f"a and b must be 1-D arrays of the same length n >= 2 (one result per seed), "
            f"got shapes {a.shape} and {b.shape}"
        )
    confidence = check_real(confidence, "confidence", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    d = a.astype(np.float64) - b.astype(np.float64)
    n = d.size
    mean = float(d.mean())
    std = float(d.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, std, n, confidence)
