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
  saturation, computed by the same kernel with only the rounding step
  replaced, **per-tensor only** (a scalar scale and zero point).

Randomness always comes from a ``numpy.random.Generator`` passed by the
caller (``rng = np.random.default_rng(seed)``), so results are reproducible;
there is no hidden global state. One uniform number in :math:`[0, 1)` is drawn
per element, in float64, so the probability of rounding up equals the
fractional part to within :math:`2^{-53}`.
"""

from __future__ import annotations

import functools

import numpy as np

from qlib.core.fake_quant import fake_quantize_into, prepare
from qlib.core.grid import Default, grid_arguments, smallest_int_dtype
from qlib.core.validation import as_float_array, check_rng

__all__ = ["stochastic_round", "quantize_stochastic", "fake_quantize_stochastic"]


def _sr_inplace(v: np.ndarray, rng: np.random.Generator) -> None:
    """Stochastic rounding of the float array ``v`` in place (no checks).

    Draws ``v.size`` uniform float64 numbers; drawing block by block in order
    gives the same numbers as one draw for the whole array.
    """
    lo = np.floor(v)
    frac = v.astype(np.float64) - lo.astype(np.float64)  # exact for float32; float64 within 1 ulp
    up = rng.random(v.shape) < frac
    np.add(lo, up, out=v, casting="unsafe")


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
    out = xa.copy()
    _sr_inplace(out, rng)
    return out[()] if out.ndim == 0 else out


def _stochastic(func, x, scale, zero_point, bits, signed, rng, *, dequantize: bool):
    """qlib's fake-quantization kernel with stochastic rounding (per tensor)."""
    check_rng(rng)
    g = grid_arguments(func, scale, zero_point=zero_point, bits=bits, signed=signed)
    if np.ndim(g["scale"]) != 0 or np.ndim(g["zero_point"]) != 0:
        raise ValueError(
            "scale and zero_point must be scalars: stochastic rounding is per-tensor only "
            f"(got shapes {np.shape(g['scale'])} and {np.shape(g['zero_point'])})"
        )
    job = prepare(x, g["scale"], g["zero_point"], g["bits"], g["signed"], g.get("narrow_range", False), None, None)
    if not job.checked:  # check everything before drawing any random number
        as_float_array(job.x, "x", allow_int=False)
    dtype = job.float_dtype if dequantize else smallest_int_dtype(job.qmin, job.qmax)
    out = np.empty(job.x.shape, dtype=dtype)
    with np.errstate(invalid="ignore"):  # a tiny scale overflows to inf: saturates
        return fake_quantize_into(job, out, rounding=functools.partial(_sr_inplace, rng=rng),
                                  dequantize=dequantize)


def quantize_stochastic(x, scale, zero_point=Default(0), *, bits=Default(8), signed=Default(True), rng):
    r"""Quantize with stochastic rounding, :math:`\operatorname{clip}(\operatorname{sr}(x/s) + z, q_{min}, q_{max})`.

    :func:`qlib.quantize` with :func:`~qlib.stochastic_round` in place of round
    half to even. Inside the grid's range the dequantized codes are
    unbiased, :math:`\mathbb{E}[(q - z)s] = x`; outside it they saturate as
    with :func:`qlib.quantize`. Per-tensor only.

    Parameters
    ----------
    x : array_like of float
        Finite, non-empty floating-point array (integer input is refused, as
        in :func:`qlib.quantize`). The division :math:`x/s` is done in the
        precision of ``x`` (float16 in float16, as :func:`qlib.quantize`).
    scale : float or Quantizer
        The step :math:`s > 0`, a scalar; or a per-tensor
        :class:`~qlib.Quantizer` (alone: it carries the zero point and grid,
        ``narrow_range`` included).
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

    A :class:`~qlib.Quantizer` brings its grid, here the narrow [-127, 127]:

    >>> from qlib import Quantizer
    >>> quantize_stochastic(np.array([500.0, -500.0]), Quantizer(1.0, narrow_range=True), rng=rng)
    array([ 127, -127], dtype=int8)
    """
    return _stochastic("quantize_stochastic", x, scale, zero_point, bits, signed, rng, dequantize=False)


def fake_quantize_stochastic(x, scale, zero_point=Default(0), *, bits=Default(8), signed=Default(True), rng):
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
        The reconstruction, of ``x``'s shape and floating dtype, as
        :func:`qlib.fake_quantize` returns it.

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
    return _stochastic("fake_quantize_stochastic", x, scale, zero_point, bits, signed, rng, dequantize=True)
