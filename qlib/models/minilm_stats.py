r"""Statistics for the study of :class:`qlib.MiniLM`: weights, activations and embeddings.

- :func:`~qlib.outlier_channels`: the channels (columns) of a weight or of
  activations whose largest magnitude stands far above the median channel's;
- :func:`~qlib.weight_statistics`: range, standard deviation, kurtosis and
  outlier input columns of every linear weight of a MiniLM (:class:`~qlib.WeightStats`);
- :func:`~qlib.cosine_similarities` and :func:`~qlib.spearman_correlation`: how
  far embeddings move, and whether a ranking of similarity scores survives.

:mod:`qlib.models.minilm_quant` quantizes the model; these functions measure it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qlib.core.validation import as_float_array, check_real
from qlib.models.minilm import MiniLM

__all__ = ["WeightStats", "cosine_similarities", "outlier_channels", "spearman_correlation", "weight_statistics"]


def check_minilm(model, name: str = "model") -> MiniLM:
    """``model`` if it is a :class:`~qlib.MiniLM`; ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(model, MiniLM):
        raise TypeError(f"{name} must be a qlib.MiniLM (qlib.load_minilm()), got {type(model).__name__}")
    return model


# --- statistics ----------------------------------------------------------------------------


def outlier_channels(x, *, ratio=6.0) -> np.ndarray:
    r"""The channels (last axis) of ``x`` whose largest magnitude exceeds ``ratio`` times the median channel's.

    A channel is a column: an input channel of a weight of shape ``(out, in)``,
    or a feature of activations of shape ``(tokens, features)``. Its largest
    magnitude :math:`m_k = \max |x_{:, k}|` is taken over all other axes, and
    channel :math:`k` is an outlier if :math:`m_k > \text{ratio}\cdot
    \operatorname{median}_j m_j`. The threshold is a convention (LLM.int8()'s
    is an absolute 6 on the activations); it is relative here so that weights
    and activations of any scale can be compared.

    Parameters
    ----------
    x : array_like of float, at least 1-D
        Finite.
    ratio : float, default 6.0
        Greater than 1.

    Returns
    -------
    numpy.ndarray of int64
        The outlier channels, by decreasing :math:`m_k`.

    Raises
    ------
    TypeError
        If ``x`` is not an array of real numbers or ``ratio`` not a real number.
    ValueError
        If ``x`` is empty, 0-D or not finite, or ``ratio <= 1``.

    Examples
    --------
    >>> x = np.array([[1.0, -9.0, 0.5, 1.0], [0.8, 2.0, -1.0, 40.0]])
    >>> outlier_channels(x)  # column maxima 1, 9, 1, 40; median 5
    array([3])
    >>> outlier_channels(x, ratio=1.5)
    array([3, 1])
    """
    arr = as_float_array(x, "x")
    if arr.ndim < 1:
        raise ValueError("x must be at least 1-D, channels along its last axis, got a scalar")
    r = check_real(ratio, "ratio", lo=1.0, lo_open=True)
    m = np.abs(arr).reshape(-1, arr.shape[-1]).max(axis=0).astype(np.float64)
    out = np.flatnonzero(m > r * float(np.median(m)))
    return out[np.argsort(-m[out], kind="stable")].astype(np.int64)


@dataclass(frozen=True, eq=False)
class WeightStats:
    """The statistics of one weight matrix that :func:`weight_statistics` reports.

    Attributes
    ----------
    shape : tuple of int
        ``(out_features, in_features)``.
    min, max, absmax, std : float
        Of all entries (``absmax = max(|min|, |max|)``).
    kurtosis : float
        :math:`E[(w - \\mu)^4] / \\sigma^4` of all entries (3 for a Gaussian;
        the heavier the tails, the larger).
    outliers : numpy.ndarray of int64
        The outlier input channels, :func:`outlier_channels` of the weight.
    column_absmax : numpy.ndarray of float64
        The largest magnitude of each input channel (column), shape ``(in_features,)``.
    """

    shape: tuple
    min: float
    max: float
    absmax: float
    std: float
    kurtosis: float
    outliers: np.ndarray
    column_absmax: np.ndarray = field(repr=False)


def weight_statistics(model, *, ratio=6.0) -> dict[str, WeightStats]:
    """Range, standard deviation, kurtosis and outlier input channels of every linear weight of ``model``.

    Parameters
    ----------
    model : MiniLM
    ratio : float, default 6.0
        The threshold of :func:`outlier_channels`.

    Returns
    -------
    dict of str to WeightStats
        By linear layer name (:attr:`MiniLM.linear_names`), in order of use.
        Computed in float64.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`MiniLM`, or ``ratio`` not a real number.
    ValueError
        If ``ratio <= 1``.

    Examples
    --------
    >>> stats = weight_statistics(qlib.load_minilm())  # doctest: +SKIP
    >>> s = stats["encoder.layer.0.output.dense"]  # doctest: +SKIP
    >>> s.shape, round(s.kurtosis), s.outliers.size  # doctest: +SKIP
    """
    model = check_minilm(model)
    r = check_real(ratio, "ratio", lo=1.0, lo_open=True)
    out = {}
    for name in model.linear_names:
        w = np.asarray(model.params[name + ".weight"], dtype=np.float64)
        mu, sd = float(w.mean()), float(w.std())
        kurt = float(np.mean(((w - mu) / sd) ** 4)) if sd > 0 else math.nan
        lo, hi = float(w.min()), float(w.max())
        out[name] = WeightStats(shape=w.shape, min=lo, max=hi, absmax=max(-lo, hi), std=sd, kurtosis=kurt,
                                outliers=outlier_channels(w, ratio=r), column_absmax=np.abs(w).max(axis=0))
    return out


# --- comparing embeddings ------------------------------------------------------------------


def cosine_similarities(a, b) -> np.ndarray:
    r"""The cosine similarity of each row of ``a`` with the same row of ``b``, in float64.

    Parameters
    ----------
    a, b : array_like of float, shape (n, d)
        Rows of nonzero norm.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)

    Raises
    ------
    TypeError
        If an argument is not an array of real numbers.
    ValueError
        If the shapes differ or are not 2-D, an array is not finite, or a row is zero.

    Examples
    --------
    >>> cosine_similarities([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, -1.0]])
    array([1., 0.])
    """
    x = as_float_array(a, "a").astype(np.float64)
    y = as_float_array(b, "b").astype(np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"a and b must be 2-D arrays of the same shape (n, d), got {x.shape} and {y.shape}")
    na, nb = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("a and b must not have zero rows: their cosine similarity is undefined")
    return np.einsum("ij,ij->i", x, y) / (na * nb)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties getting the mean of the ranks they share."""
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    ranks = np.empty(v.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2
    return ranks


def spearman_correlation(a, b) -> float:
    r"""Spearman's rank correlation of two samples: Pearson's correlation of their ranks.

    Ties get the mean of the ranks they share (as ``scipy.stats.spearmanr``).
    1 means that ``b`` orders the items exactly as ``a`` does.

    Parameters
    ----------
    a, b : array_like of float, shape (n,)
        n >= 2, finite, neither constant.

    Returns
    -------
    float
        In [-1, 1].

    Raises
    ------
    TypeError
        If an argument is not an array of real numbers.
    ValueError
        If they are not 1-D of the same length n >= 2, not finite, or one is constant.

    Examples
    --------
    >>> spearman_correlation([0.1, 0.5, 0.3, 0.9], [1.0, 7.0, 2.0, 8.0])  # same order
    1.0
    >>> spearman_correlation([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])
    -0.5
    """
    x = as_float_array(a, "a").astype(np.float64)
    y = as_float_array(b, "b").astype(np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"a and b must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}")
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if den == 0:
        raise ValueError("a and b must not be constant: the rank correlation is undefined")
    return float(np.clip(float(rx @ ry) / den, -1.0, 1.0))
