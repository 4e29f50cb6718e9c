r"""Rounding modes beyond round-to-nearest: stochastic rounding.

Every quantizer of qlib rounds to the nearest grid point (ties to even), the
rule of ONNX, PyTorch and TensorFlow, which minimizes the error of each value.
*Stochastic rounding* instead rounds :math:`x` down or up at random,

.. math::

    \operatorname{sr}(x) =
    \begin{cases}
      \lfloor x \rfloor + 1 & \text{with probability } x - \lfloor x \rfloor, \\
      \lfloor x \rfloor     & \text{otherwise,}
    \end{cases}

so that it is **unbiased**: :math:`\mathbb{E}[\operatorname{sr}(x)] = x`.
Each single value has a larger error than with rounding to nearest (a mean
squared error of :math:`f(1-f)` for the fractional part :math:`f`, against
:math:`\min(f, 1-f)^2`), but the errors average out over many values or many
steps instead of adding up. That is why it is used to accumulate small
updates on a coarse grid, as in low-precision training (Gupta et al., ICML
2015), where round-to-nearest would round every update smaller than half a
step to zero.

- :func:`~qlib.stochastic_round` rounds an array of reals to integers (returned as
  floats of the input's precision);
- :func:`~qlib.quantize_stochastic` and :func:`~qlib.fake_quantize_stochastic` are
  :func:`qlib.quantize` and :func:`qlib.fake_quantize` with stochastic
  instead of nearest rounding: the same grid, scale, zero point and
  saturation, **per-tensor only** (a scalar scale and zero point).

Randomness always comes from a ``numpy.random.Generator`` passed by the
caller (``rng = np.random.default_rng(seed)``), so results are reproducible;
there is no hidden global state. One uniform number in :math:`[0, 1)` is drawn
per element, in float64, so the probability of rounding up equals the
fractional part to within :math:`2^{-53}`.
"""

from __future__ import annotations

import numpy as np

from qlib.core.grid import smallest_int_dtype
from qlib.core.validation import as_float_array, check_rng
from qlib.core.uniform import _prepare

__all__ = ["stochastic_round", "quantize_stochastic", "fake_quantize_stochastic"]




def _sr(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding of the float array ``v``, in ``v``'s dtype (no checks)."""
    lo = np.floor(v)
    frac = v.astype(np.float64) - lo.astype(np.float64)  # exact for float32; float64 within 1 ulp
    up = rng.random(v.shape) < frac
    return lo + up.astype(v.dtype)


def stochastic_round(x, rng):
    r"""Round each element down or up at random, unbiased: :math:`\mathbb{E}[\operatorname{sr}(x)] = x`.

    :math:`\operatorname{sr}(x) = \lfloor x \rfloor + B` with :math:`B` a
    Bernoulli variable of parameter :math:`x - \lfloor x \rfloor`, drawn
    independently for each element. Integers are returned unchanged; every
    other value becomes one of its two integer neighbours.

    Parameters
    ----------
    x : array_like of real numbers
        Finite, non-empty. Integer input is converted to float64 (and returned
        unchanged).
    rng : numpy.random.Generator
        The source of randomness, e.g. ``np.random.default_rng(0)``. One
        float64 uniform number is drawn per element, so the same generator
        state always gives the same result.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Integer values in ``x``'s floating dtype (float32 stays float32,
        float16 stays float16, integer input gives float64), of ``x``'s shape;
        a numpy scalar when ``x`` is a scalar.

    Raises
    ------
    TypeError
        If ``x`` is not an array of real numbers, or ``rng`` is not a
        ``numpy.random.Generator`` (a seed, ``None`` or a legacy
        ``RandomState`` is refused, so that no result depends on hidden state).
    ValueError
        If ``x`` is empty or holds NaN or infinity.

    Examples
    --------
    Each value goes to its floor or its ceiling; 2.0 stays 2.0:

    >>> rng = np.random.default_rng(1)
    >>> stochastic_round(np.array([0.3, 0.3, 0.3, -1.5, 2.0]), rng)
    array([ 0.,  0.,  1., -2.,  2.])

    The average over many draws converges to ``x`` (rounding to nearest
    would give 0 every time):

    >>> r = stochastic_round(np.full(100_000, 0.3), np.random.default_rng(1))
    >>> round(float(r.mean()), 2)
    0.3
    """
    xa = as_float_array(x, "x")
    check_rng(rng)
    out = _sr(xa, rng)
    return out[()] if out.ndim == 0 else out


def _quantize_sr(x, scale, zero_point, bits, signed, rng):
    """Codes (as floats of the computation dtype), scale, zero point, grid."""
    check_rng(rng)
    if np.ndim(scale) != 0 or np.ndim(zero_point) != 0:
        raise ValueError(
            "scale and zero_point must be scalars: stochastic rounding is per-tensor only "
            f"(got shapes {np.shape(scale)} and {np.shape(zero_point)})"
        )
    xa, checked, _layout, qmin, qmax, dtype, s, z = _prepare(
        x, scale, zero_point, bits, signed, None, None
    )
    if not checked:  # large arrays: _prepare leaves the finiteness check to a kernel
        as_float_array(xa, "x", allow_int=False)
    with np.errstate(over="ignore", invalid="ignore"):  # a tiny scale overflows to inf: saturates below
        v = xa.astype(dtype, copy=False) / s
        q = _sr(v, rng)
    if z is not None:
        q += z
    np.clip(q, dtype.type(qmin), dtype.type(qmax), out=q)
    return q, s, z, qmin, qmax


def quantize_stochastic(x, scale, zero_point=0, *, bits=8, signed=True, rng):
    r"""Quantize with stochastic rounding: :math:`q = \operatorname{clip}(\operatorname{sr}(x/s) + z, q_{min}, q_{max})`.

    :func:`qlib.quantize` with :func:`~qlib.stochastic_round` in place of round
    half to even. Inside the grid's range the dequantized codes are
    unbiased, :math:`\mathbb{E}[(q - z)s] = x`; outside it they saturate as
    with :func:`qlib.quantize`. Per-tensor only.

    Parameters
    ----------
    x : array_like of float
        Finite, non-empty floating-point array (integer input is refused, as
        in :func:`qlib.quantize`). The division :math:`x/s` is done in the
        precision of ``x`` (float16 in float32).
    scale : float
        The step :math:`s > 0`, a scalar.
    zero_point : int, default 0
        The code of the real 0, a scalar on the grid.
    bits : int, default 8
        Width of the integer grid, 2 to 16.
    signed : bool, default True
        Grid :math:`[-2^{b-1}, 2^{b-1}-1]` if true, :math:`[0, 2^b-1]` if false.
    rng : numpy.random.Generator
        Source of randomness (keyword-only, required).

    Returns
    -------
    numpy.ndarray
        The codes, of ``x``'s shape, in the dtype :func:`qlib.quantize` uses
        for the grid (``int8`` for the default).

    Raises
    ------
    TypeError
        If ``rng`` is not a ``numpy.random.Generator``, or as
        :func:`qlib.quantize` (integer ``x``, non-integer ``zero_point``, ...).
    ValueError
        If ``scale`` or ``zero_point`` is not a scalar, or as
        :func:`qlib.quantize` (non-finite ``x``, non-positive ``scale``,
        ``zero_point`` off the grid, ``bits`` outside [2, 16]).

    Examples
    --------
    With scale 1, 0.25 becomes 1 about a quarter of the time; 500 saturates at 127:

    >>> rng = np.random.default_rng(0)
    >>> q = quantize_stochastic(np.full(10_000, 0.25), 1.0, rng=rng)
    >>> np.unique(q), round(float(q.mean()), 2)
    (array([0, 1], dtype=int8), 0.25)
    >>> quantize_stochastic(np.array([500.0, -500.0]), 1.0, rng=rng)
    array([ 127, -128], dtype=int8)
    """
    q, _s, _z, qmin, qmax = _quantize_sr(x, scale, zero_point, bits, signed, rng)
    return q.astype(smallest_int_dtype(qmin, qmax))


def fake_quantize_stochastic(x, scale, zero_point=0, *, bits=8, signed=True, rng):
    r"""Quantize with stochastic rounding, then dequantize: :math:`\hat x = (q - z)\,s`.

    The stochastic counterpart of :func:`qlib.fake_quantize`, with
    :math:`q` from :func:`~qlib.quantize_stochastic`. Each element of :math:`\hat x`
    is one of the two grid points around :math:`x` (or the end of the grid
    where :math:`x` saturates), and :math:`\mathbb{E}[\hat x] = x` for every
    :math:`x` in :math:`[(q_{min} - z)s, (q_{max} - z)s]`. Per-tensor only.

    Parameters
    ----------
    x, scale, zero_point, bits, signed, rng
        As in :func:`~qlib.quantize_stochastic`.

    Returns
    -------
    numpy.ndarray
        The reconstruction, of ``x``'s shape, in the precision of the
        arithmetic: float32 for float16 or float32 ``x``, float64 for float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`~qlib.quantize_stochastic`.

    Examples
    --------
    Step 0.25 on a 4-bit grid: 0.1 becomes 0 or 0.25, 5.0 saturates at 7 steps:

    >>> rng = np.random.default_rng(1)
    >>> x = np.array([0.1, 0.1, 0.1, 0.1, 5.0], dtype=np.float32)
    >>> fake_quantize_stochastic(x, 0.25, bits=4, rng=rng)
    array([0.  , 0.  , 0.25, 0.  , 1.75], dtype=float32)
    """
    q, s, z, _qmin, _qmax = _quantize_sr(x, scale, zero_point, bits, signed, rng)
    if z is not None:
        q -= z
    q *= s
    return q
