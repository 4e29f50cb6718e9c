r"""Fixed-point requantization: integer-only multiplication by a real multiplier, as in TFLite.

With the affine scheme :math:`r = S (q - Z)` of Jacob et al. (2018), "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (arXiv:1712.05877), the product of two quantized matrices
:math:`r_3 = r_1 r_2` needs only integers except for one real number:

.. math::

    q_3 = Z_3 + M \sum_k (q_{1,ik} - Z_1)(q_{2,kj} - Z_2),
    \qquad M = \frac{S_1 S_2}{S_3}.

An integer-only engine (TensorFlow Lite's reference kernels, built on
gemmlowp) evaluates it in three steps, one function each here:

1. :func:`~qlib.int_matmul` (in :mod:`qlib.core.intops`): accumulate the
   products of the 8-bit codes exactly in 32-bit integers.
2. :func:`~qlib.quantize_multiplier`: turn the real multiplier :math:`M` (found
   empirically in :math:`(0, 1)`) into integers, once, ahead of time:
   :math:`M = 2^{-n} M_0` with :math:`M_0 \in [0.5, 1)`, and :math:`M_0` stored
   as the int32 nearest :math:`2^{31} M_0` (so at least :math:`2^{30}`). That
   int32 is a **Q0.31 fixed-point number**, the article's *sub-integer*
   representation (:func:`qlib.subinteger_quantize`: a real stored as an
   integer code times :math:`2^{-b}`) with :math:`b = 31` fractional bits;
   the shift :math:`n` is a shared exponent.
3. :func:`~qlib.requantize`: multiply each int32 accumulator by the Q0.31 number
   with a rounding 64-bit "high half" product
   (:func:`~qlib.saturating_rounding_doubling_high_mul`, the ARM NEON ``VQRDMULH``
   instruction), divide by :math:`2^n` with a rounding right shift
   (:func:`~qlib.rounding_divide_by_pot`), add the output zero point and saturate
   to the output grid. No floating-point operation is involved, and every
   step is bit-exact with TensorFlow Lite's ``MultiplyByQuantizedMultiplier``
   (its default, "double rounding" build).

All functions are vectorized over numpy arrays (per-channel multipliers and
shifts broadcast against the accumulators). Shifts lie in ``[-31, 30]``: a
real multiplier of ``2**30 - 0.25`` or more (whose shift would be a left
shift of 31 or more, an int32 overflow in TFLite) is refused with a
``ValueError``.
"""

from __future__ import annotations

import numpy as np

from qlib.core.grid import integer_range, smallest_int_dtype
from qlib.core.validation import as_float_array, as_int_array, check_bool, check_int

__all__ = [
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "requantize",
]

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
#: The shifts multiply_by_quantized_multiplier supports: a left shift of at
#: most 30 (TFLite computes ``acc * (1 << shift)`` in int32), a right shift
#: of at most 31 (smaller multipliers are flushed to zero).
_SHIFT_MIN, _SHIFT_MAX = -31, 30
#: The real multipliers below this get a shift of at most 30 (larger ones round up to 2**30 * 1.0).
_M_LIMIT = 2.0**30 - 0.25


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------


def _int_in_range(x, name: str, lo: int, hi: int, what: str) -> np.ndarray:
    """``x`` as an int64 array whose values lie in ``[lo, hi]``."""
    arr = as_int_array(x, name)
    if arr.size:
        mn, mx = int(arr.min()), int(arr.max())
        if mn < lo or mx > hi:
            bad = mn if mn < lo else mx
            raise ValueError(f"{name} must hold {what} in [{lo}, {hi}], got {bad}")
    return arr.astype(np.int64)


def _broadcast(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return list(np.broadcast_arrays(*arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        raise ValueError(f"{' and '.join(arrays)} must broadcast together, got shapes {shapes}") from None


# ----------------------------------------------------------------------------
# the real multiplier as a Q0.31 fixed-point number
# ----------------------------------------------------------------------------


def _quantize_multiplier(M, name: str):
    arr = as_float_array(M, name).astype(np.float64)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {float(arr[arr <= 0].flat[0])!r}")
    frac, exp = np.frexp(arr)  # arr = frac * 2**exp, frac in [0.5, 1)
    x = frac * float(1 << 31)  # exact: scaling by a power of two
    fl = np.floor(x)
    q = np.asarray(fl + (x - fl >= 0.5)).astype(np.int64)  # std::round: ties away from 0
    exp = np.asarray(exp).astype(np.int64)
    fix = q == (1 << 31)  # the fraction rounded up to 1.0: renormalize
    q = np.where(fix, q // 2, q)
    exp = np.where(fix, exp + 1, exp)
    huge = exp > _SHIFT_MAX
    if np.any(huge):
        # The shift is a left shift of the int32 accumulator: TFLite's
        # acc * (1 << shift) overflows int32 (undefined behaviour) from shift 31
        # on, and acc << shift overflows even int64 from shift 33 on.
        raise ValueError(
            f"{name} must be < 2**30 - 0.25 = {_M_LIMIT}, so that its shift is at most "
            f"{_SHIFT_MAX} (the int32 left shift of TFLite's MultiplyByQuantizedMultiplier), "
            f"got {float(arr[huge].flat[0])!r} (shift {int(exp[huge].flat[0])})"
        )
    tiny = exp < _SHIFT_MIN  # TFLite flushes multipliers below ~2**-32 to zero
    q = np.where(tiny, 0, q)
    exp = np.where(tiny, 0, exp)
    return q, exp


def quantize_multiplier(M):
    r"""Represent a real multiplier ``M > 0`` as ``(M0, shift)`` with ``M ≈ M0 * 2**(shift - 31)``.

    This is TensorFlow Lite's reference ``QuantizeMultiplier``, computed
    identically. In Jacob et al. (2018)'s terms, :math:`M = 2^{-n} M_0` with
    :math:`M_0 \in [0.5, 1)`; :math:`M_0` is stored as the int32 nearest
    :math:`2^{31} M_0`, a Q0.31 fixed-point number (31 fractional bits) of at
    least :math:`2^{30}`, and ``shift`` is :math:`-n`:

    1. ``fraction, exponent = frexp(M)`` so that ``M = fraction * 2**exponent``
       with ``fraction`` in ``[0.5, 1)``;
    2. ``M0 = round(fraction * 2**31)``, halves away from zero (C++
       ``std::round``);
    3. if rounding reached ``2**31`` (which does not fit int32), halve it and
       add one to the exponent: ``M0 = 2**30``;
    4. ``shift = exponent``: negative (a right shift) for ``M < 0.5``,
       positive (a left shift) for ``M >= 1``;
    5. if ``shift < -31`` (``M`` below about ``2**-32``), TFLite flushes the
       multiplier to zero: ``M0 = 0, shift = 0``;
    6. if ``shift > 30`` (``M >= 2**30 - 0.25``), it is an error here.
       :func:`~qlib.multiply_by_quantized_multiplier` shifts the int32
       accumulator left by ``shift``, which TFLite computes in int32 (undefined
       behaviour from 31 on; its single-rounding build clamps such
       multipliers to ``shift = 30``). The supported shifts are thus
       ``[-31, 30]``, the range ``shift`` is checked against when given
       explicitly.

    The relative error of the representation is at most :math:`2^{-31}`.

    Parameters
    ----------
    M : float or array_like of float
        The real multiplier(s), e.g. ``S1 * S2 / S3``, one per output channel
        for per-channel quantization. Must be finite and positive; computed in
        float64 (as TFLite's ``double``).

    Returns
    -------
    M0 : int or numpy.ndarray of int32
        The Q0.31 significand(s), in ``[2**30, 2**31 - 1]`` (or 0 when flushed).
    shift : int or numpy.ndarray of int32
        The power-of-two exponent(s). Python ints for scalar input, int32
        arrays of ``M``'s shape otherwise.

    Raises
    ------
    TypeError
        If ``M`` is not real-valued.
    ValueError
        If ``M`` is empty, not finite, zero or negative, or at least
        ``2**30 - 0.25`` (its shift would exceed 30).

    See Also
    --------
    requantize : applies ``(M0, shift)`` to int32 accumulators.

    Examples
    --------
    >>> quantize_multiplier(0.1)            # 0.1 = 0.8 * 2**-3
    (1717986918, -3)
    >>> 1717986918 * 2.0**(-3 - 31)
    0.09999999997671694
    >>> quantize_multiplier(1.5)            # 0.75 * 2**1: a left shift
    (1610612736, 1)
    >>> quantize_multiplier(1 - 2.0**-40)   # rounds to 2**31: becomes 2**30, shift + 1
    (1073741824, 1)
    >>> m0, shift = quantize_multiplier([0.25, 0.0123])   # per-channel
    >>> m0, shift
    (array([1073741824, 1690499128], dtype=int32), array([-1, -6], dtype=int32))
    """
    is_scalar = np.ndim(M) == 0
    q, exp = _quantize_multiplier(M, "M")
    if is_scalar:
        return int(q), int(exp)
    return q.astype(np.int32), exp.astype(np.int32)


# ----------------------------------------------------------------------------
# the two fixed-point primitives of gemmlowp
# ----------------------------------------------------------------------------


def _srdhm64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    ab = a * b  # |ab| <= 2**62: exact in int64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C's int64 division truncates toward zero; numpy's >> (and //) floor.
    # Floor, then add 1 where s is negative and not a multiple of 2**31.
    high = (s >> 31) + ((s < 0) & ((s & ((1 << 31) - 1)) != 0))
    overflow = (a == _INT32_MIN) & (b == _INT32_MIN)
    return np.where(overflow, np.int64(_INT32_MAX), high)


def _rdbpot64(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """RoundingDivideByPOT on int64 arrays (x in int32 range, exponent in [0, 31])."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    r"""gemmlowp's ``SaturatingRoundingDoublingHighMul``: the rounded high half of ``2*a*b``.

    For int32 ``a`` and ``b`` it returns :math:`\mathrm{round}(a b / 2^{31})`:
    with ``b`` a Q0.31 fixed-point number (``b / 2**31`` in ``[-1, 1)``) this
    multiplies ``a`` by that real number. It is the ARM NEON ``VQRDMULH``
    instruction. Exactly as in gemmlowp:

    - the product ``ab = a * b`` is formed in 64 bits;
    - ``nudge = 2**30`` if ``ab >= 0`` else ``1 - 2**30``;
    - the result is ``(ab + nudge) / 2**31`` with C's integer division, which
      **truncates toward zero** (numpy's ``//`` floors; this function
      corrects for it). Net effect: round to nearest, ties toward
      :math:`+\infty` (``-0.5 -> 0``, ``0.5 -> 1``, ``-1.5 -> -1``);
    - the one product that does not fit, ``a == b == -2**31`` (:math:`(-1)
      \times (-1) = 1` in Q0.31), saturates to ``2**31 - 1``.

    Parameters
    ----------
    a, b : int or array_like of int
        Values in the int32 range, broadcast together.

    Returns
    -------
    numpy.ndarray of int32
        The broadcast result (0-d for scalar inputs).

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not integer.
    ValueError
        If a value is outside the int32 range or the shapes do not broadcast.

    Examples
    --------
    Multiply by 0.5 (``2**30`` in Q0.31) and by 0.75:

    >>> saturating_rounding_doubling_high_mul([100, -100, 3, -3], 2**30)
    array([ 50, -50,   2,  -1], dtype=int32)
    >>> saturating_rounding_doubling_high_mul(1000, 1610612736)
    array(750, dtype=int32)
    >>> saturating_rounding_doubling_high_mul(-2**31, -2**31)   # saturates
    array(2147483647, dtype=int32)
    """
    a64 = _int_in_range(a, "a", _INT32_MIN, _INT32_MAX, "int32 values")
    b64 = _int_in_range(b, "b", _INT32_MIN, _INT32_MAX, "int32 values")
    a64, b64 = _broadcast({"a": a64, "b": b64})
    return np.asarray(_srdhm64(a64, b64).astype(np.int32))


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    r"""gemmlowp's ``RoundingDivideByPOT``: :math:`x / 2^{e}` rounded to nearest, ties away from zero.

    A rounding arithmetic right shift, exactly as in gemmlowp::

        mask      = 2**e - 1
        remainder = x & mask
        threshold = (mask >> 1) + (1 if x < 0 else 0)
        result    = (x >> e) + (1 if remainder > threshold else 0)

    ``x >> e`` alone would floor; the correction rounds to nearest, and the
    extra 1 in the threshold of negative numbers sends ties away from zero
    (``-2.5 -> -3``, ``2.5 -> 3``).

    Parameters
    ----------
    x : int or array_like of int
        Values in the int32 range.
    exponent : int or array_like of int
        Shift amounts in ``[0, 31]``, broadcast against ``x`` (one per
        channel, say).

    Returns
    -------
    numpy.ndarray of int32
        The broadcast result (0-d for scalar inputs).

    Raises
    ------
    TypeError
        If ``x`` or ``exponent`` is not integer.
    ValueError
        If ``x`` is outside the int32 range, ``exponent`` outside ``[0, 31]``,
        or the shapes do not broadcast.

    Examples
    --------
    >>> rounding_divide_by_pot([5, -5, 6, -6, 7, -7], 1)   # 2.5, -2.5, 3, -3, 3.5, -3.5
    array([ 3, -3,  3, -3,  4, -4], dtype=int32)
    >>> rounding_divide_by_pot(1000, [0, 2, 4])
    array([1000,  250,   63], dtype=int32)
    """
    x64 = _int_in_range(x, "x", _INT32_MIN, _INT32_MAX, "int32 values")
    e64 = _int_in_range(exponent, "exponent", 0, 31, "shift amounts")
    x64, e64 = _broadcast({"x": x64, "exponent": e64})
    return np.asarray(_rdbpot64(x64, e64).astype(np.int32))


# ----------------------------------------------------------------------------
# requantization
# ----------------------------------------------------------------------------


def _m0_shift(multiplier, shift):
    """Validated int64 (M0, shift) from either an integer pair or a real multiplier."""
    if shift is None:
        m_arr = np.asarray(multiplier)
        if m_arr.dtype != np.bool_ and np.issubdtype(m_arr.dtype, np.integer):
            m_arr = m_arr.astype(np.float64)  # an integer real multiplier, e.g. 2
        return _quantize_multiplier(m_arr, "multiplier")
    m_arr = np.asarray(multiplier)
    if np.issubdtype(m_arr.dtype, np.floating):
        raise TypeError(
            "multiplier must be the integer M0 of quantize_multiplier when shift is given, "
            f"got dtype {m_arr.dtype}; to pass the real multiplier, leave shift=None"
        )
    m0 = _int_in_range(multiplier, "multiplier", 0, _INT32_MAX, "Q0.31 multipliers")
    sh = _int_in_range(shift, "shift", _SHIFT_MIN, _SHIFT_MAX, "shifts")
    return m0, sh


def multiply_by_quantized_multiplier(acc, multiplier, shift=None) -> np.ndarray:
    r"""TFLite's ``MultiplyByQuantizedMultiplier``: ``acc * M0 * 2**(shift - 31)`` in integers.

    With ``left_shift = max(shift, 0)`` and ``right_shift = max(-shift, 0)``::

        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(acc * 2**left_shift, M0),
            right_shift)

    This is TensorFlow Lite's default ("double rounding") reference kernel.
    One difference, where C is undefined: if ``acc * 2**left_shift``
    overflows int32 (only possible when ``shift > 0``, i.e. ``M`` about 1 or
    more), it saturates to the int32 range here, so the result is the
    largest value of the right sign instead of garbage. The result is within
    1 of :math:`\mathrm{round}(acc \cdot M)` whenever :math:`|acc \cdot M| < 2^{30}` (no saturation involved).

    Parameters
    ----------
    acc : int or array_like of int
        Accumulators, values in the int32 range.
    multiplier : int or array_like of int, or float or array_like of float
        ``M0`` from :func:`~qlib.quantize_multiplier` (in ``[0, 2**31 - 1]``), or,
        if ``shift`` is None, the real multiplier ``0 < M < 2**30 - 0.25``
        itself, converted with :func:`~qlib.quantize_multiplier`.
    shift : int or array_like of int, optional
        The exponent from :func:`~qlib.quantize_multiplier`, in ``[-31, 30]``.
        ``multiplier`` and ``shift`` broadcast against ``acc``.

    Returns
    -------
    numpy.ndarray of int32
        The scaled accumulators, broadcast shape, not yet offset or clamped.

    Raises
    ------
    TypeError
        If ``acc`` or ``shift`` is not integer, or ``multiplier`` is a float
        while ``shift`` is given.
    ValueError
        If a value is out of its range or the shapes do not broadcast.

    Examples
    --------
    >>> m0, shift = quantize_multiplier(0.1)
    >>> multiply_by_quantized_multiplier([1000, -1000, 15, -15], m0, shift)
    array([ 100, -100,    2,   -2], dtype=int32)
    """
    acc64 = _int_in_range(acc, "acc", _INT32_MIN, _INT32_MAX, "int32 accumulators")
    m0, sh = _m0_shift(multiplier, shift)
    acc64, m0, sh = _broadcast({"acc": acc64, "multiplier": m0, "shift": sh})
    return np.asarray(_mbqm64(acc64, m0, sh).astype(np.int32))


def _mbqm64(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # acc * 2**left in 64 bits (|acc| <= 2**31, left <= 30: exact), then
    # saturated to int32 where C's int32 multiplication would overflow.
    x = np.clip(acc << left, _INT32_MIN, _INT32_MAX)
    return _rdbpot64(_srdhm64(x, m0), right)


def requantize(acc, multiplier, shift=None, zero_point=0, *, bits: int = 8, signed: bool = True) -> np.ndarray:
    r"""Requantize int32 accumulators to ``bits``-bit codes with integer arithmetic only.

    Computes, exactly as TensorFlow Lite's reference kernels do,

    .. math::

        q = \mathrm{clamp}\big(Z + \mathrm{MultiplyByQuantizedMultiplier}(acc, M_0, shift),\;
            q_{min}, q_{max}\big)

    where :func:`~qlib.multiply_by_quantized_multiplier` approximates
    :math:`acc \cdot M` by an int32 x Q0.31 rounding high-half product
    (:func:`~qlib.saturating_rounding_doubling_high_mul`) followed by a rounding
    right shift (:func:`~qlib.rounding_divide_by_pot`). The double rounding can
    differ from :math:`\mathrm{round}(acc \cdot M)` by 1, never more (before
    the clamp).

    Parameters
    ----------
    acc : int or array_like of int
        Accumulators, e.g. from :func:`~qlib.int_matmul`, values in the int32 range.
    multiplier : int or array_like of int, or float or array_like of float
        ``M0`` from :func:`~qlib.quantize_multiplier`, or, with ``shift=None``, the
        real multiplier ``M = S_in * S_w / S_out`` itself, ``0 < M < 2**30 - 0.25``
        (then passed through :func:`~qlib.quantize_multiplier`, so the result is
        identical).
    shift : int or array_like of int, optional
        The exponent from :func:`~qlib.quantize_multiplier`, in ``[-31, 30]``.
        Per-channel ``multiplier``/``shift`` broadcast against ``acc`` (for
        accumulators of shape ``(M, N)``, shape ``(N,)`` is per output column).
    zero_point : int or array_like of int, default 0
        Output zero point :math:`Z`, on the output grid.
    bits : int, default 8
        Output width, 1 to 16.
    signed : bool, default True
        Output grid ``qlib.integer_range(bits, signed)``.

    Returns
    -------
    numpy.ndarray
        The codes, of the smallest integer dtype holding the grid (int8 for
        the default), broadcast shape.

    Raises
    ------
    TypeError
        If ``acc``, ``shift``, ``zero_point`` or ``bits`` is not integer,
        ``multiplier`` is a float while ``shift`` is given, or ``signed`` is
        not a bool.
    ValueError
        If ``acc`` is outside the int32 range, ``multiplier`` outside
        ``[0, 2**31 - 1]`` (or a real multiplier is not finite and in
        ``(0, 2**30 - 0.25)``),
        ``shift`` outside ``[-31, 30]``, ``zero_point`` off the output grid,
        ``bits`` outside ``[1, 16]``, or shapes do not broadcast.

    Examples
    --------
    A layer with input scale 0.02, weight scale 0.005 and output scale 0.1:
    :math:`M = 0.001`.

    >>> m0, shift = quantize_multiplier(0.02 * 0.005 / 0.1)
    >>> m0, shift
    (1099511628, -9)
    >>> acc = np.array([12345, -12345, 500, 499, 200000], dtype=np.int32)
    >>> requantize(acc, m0, shift, zero_point=3)
    array([ 15,  -9,   4,   3, 127], dtype=int8)

    The same, giving the real multiplier directly:

    >>> requantize(acc, 0.001, zero_point=3)
    array([ 15,  -9,   4,   3, 127], dtype=int8)

    Per-channel (one multiplier per column), to unsigned 4-bit codes:

    >>> m0, shift = quantize_multiplier([0.01, 0.02])
    >>> requantize([[100, 100], [700, 700]], m0, shift, zero_point=8, bits=4, signed=False)
    array([[ 9, 10],
           [15, 15]], dtype=uint8)
    """
    b = check_int(bits, "bits", 1, 16)
    signed = check_bool(signed, "signed")
    qmin, qmax = integer_range(b, signed)
    acc64 = _int_in_range(acc, "acc", _INT32_MIN, _INT32_MAX, "int32 accumulators")
    m0, sh = _m0_shift(multiplier, shift)
    zp = _int_in_range(zero_point, "zero_point", qmin, qmax,
                       f"values of the {'signed' if signed else 'unsigned'} {b}-bit grid")
    acc64, m0, sh, zp = _broadcast({"acc": acc64, "multiplier": m0, "shift": sh, "zero_point": zp})
    out = _mbqm64(acc64, m0, sh) + zp
    return np.asarray(np.clip(out, qmin, qmax).astype(smallest_int_dtype(qmin, qmax)))
