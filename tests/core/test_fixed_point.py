"""Tests for qlib.core.fixed_point: TFLite-style fixed-point requantization.

The functions are checked against a slow transcription of gemmlowp's /
TensorFlow Lite's reference kernels in plain Python integers (arbitrary
precision, C's truncating division written out explicitly).
"""

import math
from fractions import Fraction

import numpy as np
import pytest

import qlib
from qlib.core.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from qlib.core.intops import int_matmul

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------
# reference transcription (Python ints)
# ---------------------------------------------------------------------------


def c_div(n: int, d: int) -> int:
    """C/C++ integer division: truncates toward zero (Python's // floors)."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    overflow = a == b == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else ab_x2_high32


def ref_rdbpot(x: int, exponent: int) -> int:
    assert 0 <= exponent <= 31
    mask = (1 << exponent) - 1
    remainder = x & mask  # Python's & on negative ints is two's complement
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)  # >> is arithmetic


def ref_mbqm(x: int, m0: int, shift: int) -> int:
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    shifted = x * (1 << left_shift)
    # C overflows here (undefined behaviour); qlib documents saturation instead
    shifted = min(max(shifted, INT32_MIN), INT32_MAX)
    return ref_rdbpot(ref_srdhm(shifted, m0), right_shift)


def ref_requantize(acc, m0, shift, zp, qmin, qmax):
    return min(max(ref_mbqm(acc, m0, shift) + zp, qmin), qmax)


def ref_quantize_multiplier(m: float):
    q, shift = math.frexp(m)
    x = Fraction(q) * 2**31
    q_fixed = math.floor(x + Fraction(1, 2))  # std::round for positive x
    assert q_fixed <= 2**31
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def exact_round(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def test_exported_from_package():
    for name in ("quantize_multiplier", "requantize", "saturating_rounding_doubling_high_mul",
                 "rounding_divide_by_pot", "multiply_by_quantized_multiplier"):
        assert getattr(qlib, name) is globals()[name]


# ---------------------------------------------------------------------------
# quantize_multiplier
# ---------------------------------------------------------------------------


def test_quantize_multiplier_matches_reference_and_accuracy():
    rng = np.random.default_rng(6)
    ms = np.exp2(rng.uniform(-31, 20, size=2000))
    ms = np.concatenate([ms, [0.5, 1.0, 0.25, 2.0**-31, 2.0**-32, 0.999999999999, 1 - 2.0**-33]])
    m0, shift = quantize_multiplier(ms)
    assert m0.dtype == np.int32 and shift.dtype == np.int32 and m0.shape == ms.shape
    for m, q, s in zip(ms.tolist(), m0.tolist(), shift.tolist()):
        assert (q, s) == ref_quantize_multiplier(m)
        assert quantize_multiplier(m) == (q, s)
        assert 2**30 <= q <= INT32_MAX
        rel = abs(Fraction(q) * Fraction(2) ** (s - 31) - Fraction(m)) / Fraction(m)
        assert rel <= Fraction(1, 2**31)


def test_quantize_multiplier_fixup_and_flush():
    # the fraction rounds up to 2**31: halve it, increment the shift
    assert quantize_multiplier(1 - 2.0**-40) == (2**30, 1)
    assert quantize_multiplier(0.5 - 2.0**-45) == (2**30, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(0.75) == (3 * 2**29, 0)
    # ties round away from zero (std::round), not to even
    m = (2**30 + 0.5) / 2**31  # fraction * 2**31 = 2**30 + 0.5 exactly
    assert quantize_multiplier(m) == (2**30 + 1, 0)
    # below ~2**-32 TFLite flushes to zero
    assert quantize_multiplier(2.0**-40) == (0, 0)
    assert quantize_multiplier(2.0**-32) == (2**30, -31)
    # integer input is a real multiplier
    assert quantize_multiplier(3) == (3 * 2**29, 2)


def test_quantize_multiplier_errors():
    for bad in (0.0, -0.5, [0.1, 0.0]):
        with pytest.raises(ValueError, match="M must be > 0"):
            quantize_multiplier(bad)
    for bad in (np.nan, np.inf, [0.1, np.inf]):
        with pytest.raises(ValueError, match="M must be finite"):
            quantize_multiplier(bad)
    with pytest.raises(ValueError, match="M must not be empty"):
        quantize_multiplier([])
    with pytest.raises(TypeError, match="M"):
        quantize_multiplier("0.1")


# ---------------------------------------------------------------------------
# fixed-point primitives
# ---------------------------------------------------------------------------

EXTREMES = [INT32_MIN, INT32_MIN + 1, -(2**30), -3, -2, -1, 0, 1, 2, 3, 2**30, INT32_MAX - 1, INT32_MAX]


def test_srdhm_matches_reference():
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True), EXTREMES * len(EXTREMES)])
    b = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True), np.repeat(EXTREMES, len(EXTREMES))])
    got = saturating_rounding_doubling_high_mul(a.astype(np.int32), b.astype(np.int32))
    assert got.dtype == np.int32
    assert got.tolist() == [ref_srdhm(x, y) for x, y in zip(a.tolist(), b.tolist())]


def test_srdhm_truncating_division_and_ties():
    # ties go toward +inf because of the nudge and C's truncation
    half = 2**30  # 0.5 in Q0.31
    assert saturating_rounding_doubling_high_mul([1, -1, 3, -3, 5, -5], half).tolist() == [1, 0, 2, -1, 3, -2]
    # -0.5: (-2**30 + 1 - 2**30) / 2**31 truncates to 0; a floor would give -1
    assert int(saturating_rounding_doubling_high_mul(-(2**30), 1)) == 0
    # just below -0.5: (-2**30 - 1 + 1 - 2**30) / 2**31 is exactly -1
    assert int(saturating_rounding_doubling_high_mul(-(2**30) - 1, 1)) == -1
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX)) == -INT32_MAX


def test_rdbpot_matches_reference():
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True),
                        rng.integers(-100, 100, 1000), EXTREMES])
    for e in range(32):
        got = rounding_divide_by_pot(x, e)
        assert got.dtype == np.int32
        assert got.tolist() == [ref_rdbpot(v, e) for v in x.tolist()]
    # per-element exponents broadcast
    e = rng.integers(0, 32, size=x.shape)
    assert rounding_divide_by_pot(x, e).tolist() == [ref_rdbpot(v, int(k)) for v, k in zip(x.tolist(), e)]


def test_rdbpot_rounds_half_away_from_zero():
    assert rounding_divide_by_pot([1, -1, 3, -3, 2, -2], 1).tolist() == [1, -1, 2, -2, 1, -1]
    assert rounding_divide_by_pot([6, -6, 5, -5], 2).tolist() == [2, -2, 1, -1]


def test_primitives_errors():
    with pytest.raises(ValueError, match="a must hold int32 values"):
        saturating_rounding_doubling_high_mul(2**31, 1)
    with pytest.raises(ValueError, match="b must hold int32 values"):
        saturating_rounding_doubling_high_mul(1, [-(2**31) - 1])
    with pytest.raises(TypeError, match="a"):
        saturating_rounding_doubling_high_mul(1.5, 1)
    with pytest.raises(ValueError, match="a and b must broadcast"):
        saturating_rounding_doubling_high_mul([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="exponent must hold shift amounts in \\[0, 31\\]"):
        rounding_divide_by_pot(5, 32)
    with pytest.raises(ValueError, match="exponent"):
        rounding_divide_by_pot(5, -1)
    with pytest.raises(ValueError, match="x must hold int32"):
        rounding_divide_by_pot(2**31, 1)
    with pytest.raises(TypeError, match="exponent"):
        rounding_divide_by_pot(5, 1.0)


# ---------------------------------------------------------------------------
# requantize
# ---------------------------------------------------------------------------


def random_cases(rng, n):
    acc = np.concatenate([
        rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
        rng.integers(-(2**20), 2**20, n),
        rng.integers(-300, 300, n),
    ])
    acc[:4] = [INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1]
    # multipliers from 2**-31 to 2**8: right shifts, no shift and left shifts
    ms = np.exp2(rng.uniform(-31, 8, size=acc.size))
    m0, shift = quantize_multiplier(ms)
    return acc, ms, m0, shift


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, True), (16, True), (16, False), (1, False)])
def test_requantize_matches_reference_kernel(bits, signed):
    rng = np.random.default_rng(bits * 10 + signed)
    acc, _, m0, shift = random_cases(rng, 1000)
    assert (shift > 0).any() and (shift < 0).any()
    qmin, qmax = qlib.integer_range(bits, signed)
    zp = rng.integers(qmin, qmax + 1, size=acc.size)
    got = requantize(acc, m0, shift, zp, bits=bits, signed=signed)
    assert got.dtype == qlib.smallest_int_dtype(qmin, qmax)
    want = [ref_requantize(a, int(q), int(s), int(z), qmin, qmax)
            for a, q, s, z in zip(acc.tolist(), m0, shift, zp)]
    assert got.tolist() == want


def test_multiply_by_quantized_multiplier_matches_reference():
    rng = np.random.default_rng(11)
    acc, _, m0, shift = random_cases(rng, 1000)
    got = multiply_by_quantized_multiplier(acc.astype(np.int32), m0, shift)
    assert got.dtype == np.int32
    assert got.tolist() == [ref_mbqm(a, int(q), int(s)) for a, q, s in zip(acc.tolist(), m0, shift)]


def test_requantize_within_one_of_exact_rounding():
    rng = np.random.default_rng(12)
    acc, ms, m0, shift = random_cases(rng, 2000)
    r = multiply_by_quantized_multiplier(acc, m0, shift)
    checked = 0
    for a, m, q, s, got in zip(acc.tolist(), ms.tolist(), m0.tolist(), shift.tolist(), r.tolist()):
        exact = Fraction(a) * Fraction(m)
        if abs(exact) >= 2**30:  # the true product does not fit int32: saturation territory
            continue
        checked += 1
        assert abs(got - exact_round(exact)) <= 1
        # and within 1 of acc * (the represented multiplier), too
        assert abs(got - Fraction(a) * q * Fraction(2) ** (s - 31)) <= 1
    assert checked > 3000
    # through requantize with a wide output grid, before any clamp
    small = rng.integers(-(2**15), 2**15, 500)
    out = requantize(small, 0.37, bits=16)
    assert np.abs(out.astype(np.int64) - np.rint(small * 0.37)).max() <= 1


def test_requantize_saturates():
    m0, shift = quantize_multiplier(8.0)
    out = requantize([INT32_MAX, INT32_MIN, 20, -20, 1000, -1000], m0, shift)
    assert out.tolist() == [127, -128, 127, -128, 127, -128]
    out = requantize([INT32_MAX, INT32_MIN], 0.5, zero_point=10, bits=8, signed=False)
    assert out.tolist() == [255, 0]


def test_requantize_real_multiplier_equals_integer_pair():
    rng = np.random.default_rng(13)
    acc = rng.integers(-(2**24), 2**24, size=(50, 4)).astype(np.int32)
    ms = np.array([0.0011, 0.0042, 0.37, 1.7])
    m0, shift = quantize_multiplier(ms)
    np.testing.assert_array_equal(requantize(acc, ms, zero_point=-5), requantize(acc, m0, shift, -5))
    # per-row (axis 0) multipliers by broadcasting a column
    rows = np.full((50, 1), 0.01)
    m0r, sr = quantize_multiplier(rows)
    np.testing.assert_array_equal(requantize(acc, rows), requantize(acc, m0r, sr))
    assert requantize(acc, m0r, sr).shape == (50, 4)


def test_requantize_matches_float_for_typical_layer():
    # integer-only result equals the float computation except at rare double-rounding ties
    rng = np.random.default_rng(14)
    a = rng.integers(-128, 128, size=(32, 256), dtype=np.int8)
    w = rng.integers(-127, 128, size=(256, 16), dtype=np.int8)
    acc = int_matmul(a, w)
    m = 0.02 * 0.004 / 0.15
    q = requantize(acc, m, zero_point=0)
    ref = np.clip(np.rint(acc * m), -128, 127)
    assert np.abs(q - ref).max() <= 1
    assert np.mean(q == ref) > 0.99


def test_requantize_errors():
    m0, s = quantize_multiplier(0.1)
    with pytest.raises(TypeError, match="acc"):
        requantize([1.5], m0, s)
    with pytest.raises(ValueError, match="acc must hold int32 accumulators"):
        requantize([2**31], m0, s)
    with pytest.raises(ValueError, match="multiplier must hold Q0.31"):
        requantize([1], -5, s)
    with pytest.raises(ValueError, match="multiplier"):
        requantize([1], 2**31, s)
    with pytest.raises(TypeError, match="multiplier must be the integer M0"):
        requantize([1], 0.1, -3)
    with pytest.raises(ValueError, match="multiplier must be > 0"):
        requantize([1], -0.1)
    with pytest.raises(ValueError, match="multiplier must be finite"):
        requantize([1], np.nan)
    with pytest.raises(ValueError, match="shift must hold shifts in \\[-31, 30\\]"):
        requantize([1], m0, 31)
    with pytest.raises(ValueError, match="shift"):
        requantize([1], m0, -32)
    with pytest.raises(TypeError, match="shift"):
        requantize([1], m0, 1.0)
    with pytest.raises(ValueError, match="zero_point must hold values of the signed 8-bit grid"):
        requantize([1], m0, s, zero_point=128)
    with pytest.raises(ValueError, match="zero_point .*unsigned 4-bit"):
        requantize([1], m0, s, zero_point=-1, bits=4, signed=False)
    with pytest.raises(TypeError, match="zero_point"):
        requantize([1], m0, s, zero_point=0.5)
    with pytest.raises(ValueError, match="bits"):
        requantize([1], m0, s, bits=17)
    with pytest.raises(ValueError, match="bits"):
        requantize([1], m0, s, bits=0)
    with pytest.raises(TypeError, match="bits"):
        requantize([1], m0, s, bits=8.0)
    with pytest.raises(TypeError, match="signed"):
        requantize([1], m0, s, signed="yes")
    with pytest.raises(ValueError, match="acc and multiplier and shift and zero_point must broadcast"):
        requantize([1, 2, 3], [m0, m0], s)


def test_real_multiplier_too_large_for_a_shift_is_refused():
    # shift 30 is the largest that multiply_by_quantized_multiplier supports
    assert quantize_multiplier(2.0**29) == (2**30, 30)
    assert quantize_multiplier(2.0**30 - 0.5)[1] == 30
    for m in (2.0**30 - 0.25, 2.0**30, 2.0**40, 2.0**62, 2.0**63, 1e300):
        with pytest.raises(ValueError, match=r"M must be < 2\*\*30 - 0.25"):
            quantize_multiplier(m)
        with pytest.raises(ValueError, match=r"multiplier must be < 2\*\*30 - 0.25"):
            requantize([1, 2**31 - 1], m)
        with pytest.raises(ValueError, match=r"multiplier must be < 2\*\*30 - 0.25"):
            multiply_by_quantized_multiplier([1], [0.5, m])
    # the message states the supported range
    with pytest.raises(ValueError, match=r"shift is at most 30 .*got 4\.6.*e\+18 \(shift 63\)"):
        requantize([1], 2.0**62)
    # just below the limit: left shift 30, saturating, never wrapping
    m = 2.0**30 - 0.5
    assert requantize([INT32_MAX, INT32_MIN, 1, -1, 0], m).tolist() == [127, -128, 127, -128, 0]
    big = multiply_by_quantized_multiplier([INT32_MAX, INT32_MIN, 1, -1], m)
    assert big.tolist() == [ref_mbqm(a, *quantize_multiplier(m)) for a in (INT32_MAX, INT32_MIN, 1, -1)]
