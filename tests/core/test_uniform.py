"""Tests of qlib.uniform: quantize, dequantize, fake_quantize (ONNX semantics)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qlib
from qlib.core import layout
from qlib.core.uniform import dequantize, fake_quantize, quantize

GRID_DTYPES = [
    (2, True, np.int8),
    (4, False, np.uint8),
    (8, True, np.int8),
    (8, False, np.uint8),
    (9, True, np.int16),
    (12, False, np.uint16),
    (16, True, np.int16),
    (16, False, np.uint16),
]


@pytest.fixture(params=[None, 7, 100])
def block(request, monkeypatch):
    """Run a test with the default block size and with tiny ones, so that small
    arrays exercise every blocking path (and the blockwise finiteness check)."""
    if request.param is not None:
        monkeypatch.setattr(layout, "BLOCK", request.param)
    return request.param


def grid(bits, signed):
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def reference(x, scale, zero_point, bits=8, signed=True):
    """The ONNX formula, naively, with scale/zero_point already broadcastable."""
    x = np.asarray(x)
    dt = np.promote_types(x.dtype, np.float32)
    s = np.asarray(scale).astype(dt)
    z = np.asarray(zero_point).astype(np.int64)
    lo, hi = grid(bits, signed)
    with np.errstate(over="ignore"):
        q = np.rint(x.astype(dt) / s).astype(np.float64) + z
    return np.clip(q, lo, hi).astype(np.int64)


def expand_groups(p, g, axis, n):
    return np.take(np.repeat(p, g, axis=axis), np.arange(n), axis=axis)


# --------------------------------------------------------------------------
# Public names
# --------------------------------------------------------------------------


def test_exported_from_package():
    assert qlib.quantize is quantize
    assert qlib.dequantize is dequantize
    assert qlib.fake_quantize is fake_quantize
    assert set(qlib.core.uniform.__all__) == {"quantize", "dequantize", "fake_quantize"}


# --------------------------------------------------------------------------
# Rounding, saturation, zero points
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_round_half_to_even(dtype):
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5], dtype=dtype)
    np.testing.assert_array_equal(quantize(x, 1.0), [0, 2, 2, 4, 0, -2, -2, -4])
    # scale 0.5: x / s = 1.25, 0.75 etc. are no ties; 0.25 / 0.5 = 0.5 is.
    np.testing.assert_array_equal(quantize(np.array([0.25, 0.75], dtype), 0.5), [0, 2])


def test_zero_point_added_after_rounding():
    # round(0.5) + 1 = 1, whereas round(0.5 + 1) would be 2.
    x = np.array([0.5, 1.5, -0.5], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 1.0, 1), [1, 3, 1])
    np.testing.assert_array_equal(quantize(x, 1.0, -3), [-3, -1, -3])


@pytest.mark.parametrize("bits, signed, dtype", GRID_DTYPES)
def test_saturation_and_dtype(bits, signed, dtype):
    lo, hi = grid(bits, signed)
    s = 0.25
    x = np.array([lo, hi, lo - 0.5, hi + 0.49, lo - 1, hi + 1, -1e30, 1e30, lo - 0.51, hi + 0.5])
    q = quantize(x * s, s, bits=bits, signed=signed)
    assert q.dtype == dtype
    assert q.shape == x.shape
    # hi + 0.5 is a tie that rounds to the even of hi, hi+1: saturates to hi either way.
    np.testing.assert_array_equal(q, [lo, hi, lo, hi, lo, hi, lo, hi, lo, hi])
    assert quantize(np.float32(0.0), s, bits=bits, signed=signed).dtype == dtype


def test_negative_zero_point_and_unsigned_zero_point():
    x = np.array([0.0, -1.0, 1.0, -100.0, 100.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 0.5, -5), [-5, -7, -3, -128, 127])
    np.testing.assert_array_equal(
        quantize(x, 0.5, 200, signed=False), [200, 198, 202, 0, 255]
    )
    np.testing.assert_array_equal(
        quantize(x, 0.5, -8, bits=4), [-8, -8, -6, -8, 7]
    )


@pytest.mark.parametrize("bits, signed, dtype", GRID_DTYPES)
@pytest.mark.parametrize("where", ["min", "min+1", "mid", "max-1", "max"])
@pytest.mark.parametrize("xdtype", [np.float32, np.float64])
def test_zero_points_across_the_grid(bits, signed, dtype, where, xdtype):
    """Odd and even zero points at both ends of every grid, with ties and saturation."""
    lo, hi = grid(bits, signed)
    z = {"min": lo, "min+1": lo + 1, "mid": (lo + hi) // 2, "max-1": hi - 1, "max": hi}[where]
    s = 0.5
    k = np.array([lo - z, hi - z, lo - z - 1, hi - z + 1, lo - z - 0.5, hi - z + 0.5,
                  -0.5, 0.5, 1.5, -1.5, 2.5, -2.5, 0.0, 1e6, -1e6])
    x = (k * s).astype(xdtype)
    x = np.concatenate([x, np.array([1e30, -1e30, 3e38, -3e38], dtype=xdtype)])
    q = quantize(x, s, z, bits=bits, signed=signed)
    assert q.dtype == dtype
    np.testing.assert_array_equal(q, reference(x, s, z, bits, signed))
    f = fake_quantize(x, s, z, bits=bits, signed=signed)
    np.testing.assert_array_equal(f, (q.astype(np.float64) - z).astype(xdtype) * xdtype(s))


def test_ties_with_odd_and_even_zero_points_per_channel():
    t = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], dtype=np.float32)
    x = np.tile(t, (4, 1))
    z = np.array([1, 2, -3, 0], dtype=np.int8)
    expected = np.rint(t)[None, :] + z[:, None]
    np.testing.assert_array_equal(quantize(x, np.ones(4), z, axis=0), expected)
    np.testing.assert_array_equal(quantize(x.T, np.ones(4), z, axis=1), expected.T)


def test_float64_huge_quotients_saturate():
    x = np.array([1e300, -1e300, 1e-300, 0.0, 1.4e-300, 1.5e-300])
    np.testing.assert_array_equal(quantize(x, 1e-300), [127, -128, 1, 0, 1, 2])
    np.testing.assert_array_equal(quantize(x, 1e-300, 1), [127, -128, 2, 1, 2, 3])


def test_longdouble_input_divides_in_longdouble():
    x = np.array([0.5, 1.5, 2.5, -300.0, 3.35], dtype=np.longdouble)
    q = quantize(x, 0.1, 3)
    np.testing.assert_array_equal(q, reference(x, 0.1, 3))
    assert fake_quantize(x, 0.1).dtype == np.longdouble


def test_zero_point_array_dtypes_accepted():
    x = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    for zdt in (np.int8, np.int16, np.int64, np.uint8):
        z = np.array([1, 2], dtype=zdt)
        np.testing.assert_array_equal(quantize(x, 1.0, z, axis=0), [[1, 2], [2, 3]])


@pytest.mark.parametrize("bits, signed, dtype", GRID_DTYPES)
def test_random_matches_reference(bits, signed, dtype, block):
    rng = np.random.default_rng(bits + 100 * signed)
    lo, hi = grid(bits, signed)
    x = rng.standard_normal(5000).astype(np.float32) * 3
    s = np.float32(rng.uniform(0.001, 0.1))
    z = int(rng.integers(lo, hi + 1))
    q = quantize(x, s, z, bits=bits, signed=signed)
    assert q.dtype == dtype
    np.testing.assert_array_equal(q, reference(x, s, z, bits, signed))


# --------------------------------------------------------------------------
# Division in the input's precision (ONNX), not multiplication (PyTorch)
# --------------------------------------------------------------------------


def test_division_not_multiplication_by_inverse():
    s = np.float32(0.00214854861)
    x = np.array([0.273939937], dtype=np.float32)
    assert np.rint(x * (np.float32(1) / s))[0] == 128  # PyTorch's way
    assert quantize(x, s)[0] == 127  # ONNX: 0.273939937 / s = 127.49999
    assert fake_quantize(x, s)[0] == np.float32(127) * s


def test_float32_input_divides_in_float32():
    # float32(3.35) / float32(0.1) is exactly 33.5 in float32 (-> 34, even),
    # but 33.4999985... in float64 (-> 33).
    x32 = np.array([3.35], dtype=np.float32)
    s32 = np.float32(0.1)
    assert quantize(x32, s32)[0] == 34
    assert quantize(x32, 0.1)[0] == 34  # a Python float scale is rounded to float32
    assert quantize(x32, np.float64(0.1))[0] == 34
    assert quantize(x32.astype(np.float64), np.float64(s32))[0] == 33
    f = fake_quantize(x32, s32)
    assert f.dtype == np.float32 and f[0] == np.float32(34) * s32


def test_float16_input_divides_in_float16():
    """ONNX divides a float16 x by a float16 scale: the quotient is a float16
    value before it is rounded. (This test replaces one that asserted the old
    float32 computation and a float32 fake_quantize result.)"""
    x = np.array([0.5, 1.0, -7.0], dtype=np.float16)
    np.testing.assert_array_equal(quantize(x, 0.5), [1, 2, -14])
    assert fake_quantize(x, 0.5).dtype == np.float16
    # find values where the float32 quotient and the float16 quotient round apart
    rng = np.random.default_rng(0)
    xs = rng.uniform(-40, 40, 20000).astype(np.float16)
    ss = rng.uniform(0.05, 1, 20000).astype(np.float16)
    q32 = xs.astype(np.float32) / ss.astype(np.float32)
    q16 = (xs / ss).astype(np.float32)  # numpy's float16 division
    differ = np.nonzero(np.rint(q32) != np.rint(q16))[0]
    assert differ.size > 0
    for i in differ[:20]:
        assert quantize(xs[i : i + 1], ss[i], bits=16)[0] == np.rint(q16[i]) != np.rint(q32[i])
    # the hand case: 39.78 / 0.982 is 40.513 in float32 but 40.5 in float16 (-> 40, even)
    x, s = np.array([39.78], dtype=np.float16), np.float16(0.982)
    assert quantize(x, s)[0] == 40
    assert np.rint(np.float32(x[0]) / np.float32(s)) == 41
    f = fake_quantize(x, s)
    assert f.dtype == np.float16 and f[0] == np.float16(np.float32(40) * np.float32(s))
    # the scale is rounded to float16 (where it must stay positive and finite)
    np.testing.assert_array_equal(quantize(x, 0.982), quantize(x, s))
    with pytest.raises(ValueError, match="scale must be positive and finite in float16"):
        quantize(x, 1e-9)


# --------------------------------------------------------------------------
# Per-channel and per-group
# --------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 40, 3), (1, 3, 200)])
def test_per_channel_matches_slice_loop(axis, shape, block):
    rng = np.random.default_rng(sum(shape) + axis)
    x = rng.standard_normal(shape).astype(np.float32)
    n = shape[axis]
    s = rng.uniform(0.005, 0.05, n).astype(np.float32)
    z = rng.integers(-20, 20, n).astype(np.int8)
    q = quantize(x, s, z, axis=axis)
    assert q.shape == x.shape and q.dtype == np.int8
    for i in range(n):
        qi = quantize(np.take(x, i, axis=axis), s[i], z[i])
        np.testing.assert_array_equal(np.take(q, i, axis=axis), qi)
    # dequantize and fake_quantize follow the same per-slice rule
    d = dequantize(q, s, z, axis=axis)
    f = fake_quantize(x, s, z, axis=axis)
    assert d.dtype == np.float32 and f.dtype == np.float32
    np.testing.assert_array_equal(f, d)
    for i in range(n):
        np.testing.assert_array_equal(
            np.take(d, i, axis=axis), dequantize(np.take(q, i, axis=axis), s[i], z[i])
        )


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("group_size", [1, 3, 4, 7, 64])
def test_per_group_matches_loop(axis, group_size, block):
    shape = (6, 10, 7)
    rng = np.random.default_rng(axis * 100 + group_size)
    x = rng.standard_normal(shape).astype(np.float32)
    n = shape[axis]
    n_groups = -(-n // group_size)
    pshape = list(shape)
    pshape[axis] = n_groups
    s = rng.uniform(0.005, 0.05, pshape).astype(np.float32)
    z = rng.integers(-10, 10, pshape).astype(np.int8)
    q = quantize(x, s, z, axis=axis, group_size=group_size)
    expected = np.empty(shape, dtype=np.int64)
    for i in range(n):
        si = np.take(s, i // group_size, axis=axis)
        zi = np.take(z, i // group_size, axis=axis)
        idx = [slice(None)] * 3
        idx[axis] = i
        expected[tuple(idx)] = reference(x[tuple(idx)], si, zi)
    np.testing.assert_array_equal(q, expected)
    d = dequantize(q, s, z, axis=axis, group_size=group_size)
    se = expand_groups(s, group_size, axis, n)
    ze = expand_groups(z, group_size, axis, n).astype(np.float32)
    np.testing.assert_array_equal(d, (q.astype(np.float32) - ze) * se)
    np.testing.assert_array_equal(fake_quantize(x, s, z, axis=axis, group_size=group_size), d)


def test_group_size_not_dividing_length_last_group_shorter():
    x = np.arange(1, 8, dtype=np.float32)  # 7 values, groups of 3: 3 + 3 + 1
    s = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(
        quantize(x, s, axis=0, group_size=3), [1, 2, 3, 2, 2, 3, 14]
    )
    # a group size longer than the axis is one group
    np.testing.assert_array_equal(quantize(x, np.array([2.0]), axis=0, group_size=100), [0, 1, 2, 2, 2, 3, 4])


def test_scalar_scale_and_zero_point_broadcast_with_axis():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    q = quantize(x, 0.1, 3)
    np.testing.assert_array_equal(quantize(x, 0.1, 3, axis=1), q)
    np.testing.assert_array_equal(quantize(x, 0.1, 3, axis=1, group_size=4), q)
    np.testing.assert_array_equal(quantize(x, np.full(6, 0.1), 3, axis=1), q)
    np.testing.assert_array_equal(quantize(x, 0.1, np.full(4, 3), axis=0), q)
    # a one-element array is per-tensor too
    np.testing.assert_array_equal(quantize(x, np.array([0.1]), np.array([3])), q)


def test_large_per_channel_both_axes():
    """Arrays larger than a block, per-channel along the first and last axes."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 700)).astype(np.float32)
    bufsize = np.getbufsize()
    for axis in (0, 1):
        n = x.shape[axis]
        s = rng.uniform(0.01, 0.03, n).astype(np.float32)
        z = rng.integers(-5, 5, n)
        q = quantize(x, s, z, axis=axis)
        shape = [1, 1]
        shape[axis] = n
        np.testing.assert_array_equal(q, reference(x, s.reshape(shape), z.reshape(shape)))
        assert np.getbufsize() == bufsize  # numpy's buffer size is restored
    q = quantize(x, 0.02)
    np.testing.assert_array_equal(q, reference(x, np.float32(0.02), 0))


def test_shapes_scalar_and_non_contiguous_input():
    q = quantize(np.float32(1.26), 0.5)
    assert q.shape == () and q.dtype == np.int8 and int(q) == 3
    x = np.arange(12, dtype=np.float64).reshape(3, 4).T  # not C-contiguous
    np.testing.assert_array_equal(quantize(x, 1.0), x.astype(np.int8))
    np.testing.assert_array_equal(quantize(x, np.arange(1, 4), axis=1), reference(x, np.arange(1, 4), 0))
    assert quantize([[0.5, 1.5]], 1.0).shape == (1, 2)  # nested lists are arrays


# --------------------------------------------------------------------------
# dequantize and fake_quantize
# --------------------------------------------------------------------------


def test_dequantize_values_no_int8_overflow():
    q = np.array([-128, 0, 127], dtype=np.int8)
    np.testing.assert_array_equal(dequantize(q, 0.5, 127), [-127.5, -63.5, 0.0])
    np.testing.assert_array_equal(dequantize(q, 0.5, -128), [0.0, 64.0, 127.5])
    u = np.array([0, 255], dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(u, 2.0, 255), [-510.0, 0.0])
    w = np.array([-32768, 32767], dtype=np.int16)
    np.testing.assert_array_equal(dequantize(w, 1.0, 32767), [-65535.0, 0.0])
    v = np.array([0, 65535], dtype=np.uint16)
    np.testing.assert_array_equal(dequantize(v, 0.25, 1), [-0.25, 16383.5])
    for arr in (q, u, w, v):
        assert dequantize(arr, 0.5).dtype == np.float32


def test_dequantize_wide_integer_codes():
    q = np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32)
    d = dequantize(q, 1.0, -5)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, np.float32([-(2**31) + 5, 5, 2**31 + 4]))
    np.testing.assert_array_equal(dequantize(np.array([[1, 2]], np.int64), [1.0, 2.0], [1, 0], axis=1), [[0.0, 4.0]])
    big = np.array([2**63 + 2**40], dtype=np.uint64)  # no wrap-around through int64
    np.testing.assert_array_equal(dequantize(big, 1.0), np.float32([2.0**63 + 2.0**40]))


def test_dequantize_is_one_float32_rounding():
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, 1000).astype(np.int8)
    s = np.float32(0.0123)
    exact = (q.astype(np.float64) - 7) * np.float64(s)
    np.testing.assert_array_equal(dequantize(q, s, 7), exact.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fake_quantize_dtype_and_value(dtype, block):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(1000) * 2).astype(dtype)
    s, z = 0.013, -3
    f = fake_quantize(x, s, z)
    assert f.dtype == dtype
    sd = np.asarray(s, dtype=dtype)
    expected = (reference(x, s, z) - z).astype(dtype) * sd
    np.testing.assert_array_equal(f, expected)
    if dtype == np.float32:
        np.testing.assert_array_equal(f, dequantize(quantize(x, s, z), s, z))


def test_tiny_scale_saturates_without_warning():
    x = np.array([1e30, -1e30, 3.0e38], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 1e-30), [127, -128, 127])
    np.testing.assert_array_equal(fake_quantize(x, 1e-30), np.float32([127e-30, -128e-30, 127e-30]))


def test_huge_finite_values_in_unchecked_blocks(monkeypatch):
    # x . x overflows for these blocks: the exact re-check must let them pass.
    monkeypatch.setattr(layout, "BLOCK", 8)
    x = np.full(64, 3e38, dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 1.0), np.full(64, 127))


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

X = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)


@pytest.mark.parametrize("func", [quantize, fake_quantize])
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=np.array([1.0, np.nan])), ValueError, "x must be finite"),
        (dict(x=np.array([1.0, np.inf])), ValueError, "x must be finite"),
        (dict(x=np.array([-np.inf])), ValueError, "x must be finite"),
        (dict(x=np.array([], dtype=np.float32)), ValueError, "x must not be empty"),
        (dict(x=np.array([1, 2, 3])), TypeError, "x must be a floating-point"),
        (dict(x=np.array([True])), TypeError, "x must be"),
        (dict(x=np.array(["a"])), TypeError, "x must be"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(scale=-0.1), ValueError, "scale"),
        (dict(scale=np.nan), ValueError, "scale"),
        (dict(scale=np.inf), ValueError, "scale"),
        (dict(scale=1e-50), ValueError, "scale"),  # 0 in float32
        (dict(scale=1e50), ValueError, "scale"),  # inf in float32
        (dict(scale="0.1"), TypeError, "scale"),
        (dict(scale=np.array([])), ValueError, "scale"),
        (dict(scale=np.array([0.1, 0.2])), ValueError, "scale"),  # per-tensor
        (dict(scale=np.array([0.1, 0.0]), axis=0), ValueError, "scale"),
        (dict(scale=np.array([0.1, 0.2, 0.3]), axis=0), ValueError, "scale must be a scalar or have shape"),
        (dict(scale=np.ones((2, 3)), axis=1, group_size=2), ValueError, "scale"),
        (dict(scale=np.ones(2), axis=1, group_size=2), ValueError, "scale"),
        (dict(zero_point=128), ValueError, "zero_point"),
        (dict(zero_point=-129), ValueError, "zero_point"),
        (dict(zero_point=16, bits=4, signed=False), ValueError, "zero_point"),
        (dict(zero_point=-1, signed=False), ValueError, "zero_point"),
        (dict(zero_point=1.0), TypeError, "zero_point"),
        (dict(zero_point=True), TypeError, "zero_point"),
        (dict(zero_point=np.array([1, 2, 3]), scale=np.ones(2), axis=0), ValueError, "zero_point"),
        (dict(zero_point=np.array([1, 2])), ValueError, "zero_point"),
        (dict(bits=1), ValueError, "bits"),
        (dict(bits=17), ValueError, "bits"),
        (dict(bits=0), ValueError, "bits"),
        (dict(bits=4.0), TypeError, "bits"),
        (dict(bits=True), TypeError, "bits"),
        (dict(bits="8"), TypeError, "bits"),
        (dict(bits=None), TypeError, "bits"),
        (dict(signed=1), TypeError, "signed"),
        (dict(signed="yes"), TypeError, "signed"),
        (dict(axis=2), ValueError, "axis"),
        (dict(axis=-3), ValueError, "axis"),
        (dict(axis=1.0), TypeError, "axis"),
        (dict(axis=1, group_size=0), ValueError, "group_size"),
        (dict(axis=1, group_size=-2), ValueError, "group_size"),
        (dict(axis=1, group_size=2.0), TypeError, "group_size"),
        (dict(group_size=2), ValueError, "group_size"),
    ],
)
def test_bad_input(func, kwargs, exc, match):
    args = dict(x=X, scale=0.1, zero_point=0)
    args.update(kwargs)
    x, scale, zero_point = args.pop("x"), args.pop("scale"), args.pop("zero_point")
    with pytest.raises(exc, match=match):
        func(x, scale, zero_point, **args)


@pytest.mark.parametrize("where", [0, 5, 63])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_values_found_in_every_block(monkeypatch, where, bad, dtype):
    monkeypatch.setattr(layout, "BLOCK", 8)  # 64 values: 8 unchecked blocks
    x = np.ones(64, dtype=dtype)
    x[where] = bad
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN or infinite"):
        quantize(x, 0.1)
    with pytest.raises(ValueError, match="x must be finite"):
        fake_quantize(x.reshape(8, 8), np.ones(8), axis=1)


@pytest.mark.parametrize(
    "q, kwargs, exc, match",
    [
        (np.array([1.0, 2.0]), {}, TypeError, "q must be an integer"),
        (np.array([True]), {}, TypeError, "q must be an integer"),
        (np.array([], dtype=np.int8), {}, ValueError, "q must not be empty"),
        (np.array([1], dtype=np.int8), dict(zero_point=128), ValueError, "zero_point"),
        (np.array([1], dtype=np.uint8), dict(zero_point=-1), ValueError, "zero_point"),
        (np.array([1], dtype=np.int8), dict(zero_point=0.5), TypeError, "zero_point"),
        (np.array([1], dtype=np.int8), dict(scale=0.0), ValueError, "scale"),
        (np.array([1], dtype=np.int8), dict(scale=-1.0), ValueError, "scale"),
        (np.array([1], dtype=np.int8), dict(scale=np.nan), ValueError, "scale"),
        (np.array([1], dtype=np.int8), dict(scale=1e39), ValueError, "scale"),
        (np.array([1, 2], dtype=np.int8), dict(scale=np.ones(3), axis=0), ValueError, "scale"),
        (np.array([1, 2], dtype=np.int8), dict(axis=1), ValueError, "axis"),
        (np.array([1, 2], dtype=np.int8), dict(group_size=1), ValueError, "group_size"),
        (np.array([1, 2], dtype=np.int8), dict(axis=0, group_size=0), ValueError, "group_size"),
    ],
)
def test_dequantize_bad_input(q, kwargs, exc, match):
    args = dict(scale=0.5, zero_point=0)
    args.update(kwargs)
    scale, zero_point = args.pop("scale"), args.pop("zero_point")
    with pytest.raises(exc, match=match):
        dequantize(q, scale, zero_point, **args)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@st.composite
def quantizer(draw):
    bits = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    lo, hi = grid(bits, signed)
    z = draw(st.integers(lo, hi))
    s = draw(st.floats(1e-6, 1e6))
    return bits, signed, z, s


def inward(a, b, dtype):
    """The interval [a, b] shrunk to end points representable in ``dtype``."""
    a_, b_ = dtype(a), dtype(b)
    if a_ < a:
        a_ = np.nextafter(a_, dtype(np.inf))
    if b_ > b:
        b_ = np.nextafter(b_, dtype(-np.inf))
    return float(a_), float(b_)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(quantizer(), st.data(), st.sampled_from([np.float32, np.float64]))
def test_error_at_most_half_a_step_inside_range(qz, data, dtype):
    bits, signed, z, s = qz
    lo, hi = grid(bits, signed)
    s_c = float(np.asarray(s, dtype=dtype))  # the scale the computation uses
    a, b = (lo - z) * s_c, (hi - z) * s_c
    width = 32 if dtype == np.float32 else 64
    a, b = inward(a, b, dtype)
    x = data.draw(
        hnp.arrays(dtype, st.integers(1, 50), elements=st.floats(a, b, width=width))
    )
    f = fake_quantize(x, s, z, bits=bits, signed=signed)
    eps = np.finfo(dtype).eps
    tol = 4 * eps * (np.abs(x).astype(np.float64) + s_c)
    err = np.abs(x.astype(np.float64) - f.astype(np.float64))
    assert np.all(err <= s_c / 2 + tol)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    quantizer(),
    hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-1e6, 1e6, width=32)),
)
def test_fake_quantize_idempotent(qz, x):
    bits, signed, z, s = qz
    f = fake_quantize(x, s, z, bits=bits, signed=signed)
    np.testing.assert_array_equal(fake_quantize(f, s, z, bits=bits, signed=signed), f)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    quantizer(),
    hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e8, 1e8)),
)
def test_quantize_monotonic(qz, x):
    bits, signed, z, s = qz
    q = quantize(np.sort(x), s, z, bits=bits, signed=signed).astype(np.int64)
    assert np.all(np.diff(q) >= 0)
    lo, hi = grid(bits, signed)
    assert q.min() >= lo and q.max() <= hi


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
               elements=st.floats(-100, 100, width=32)),
    st.data(),
)
def test_per_channel_monotonic_along_other_axes(x, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    s = data.draw(hnp.arrays(np.float32, x.shape[axis], elements=st.floats(0.015625, 16, width=32)))
    other = (axis + 1) % x.ndim
    xs = np.sort(x, axis=other)
    q = quantize(xs, s, axis=axis).astype(np.int64)
    if x.ndim > 1:
        assert np.all(np.diff(q, axis=other) >= 0)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    quantizer(),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_matches_onnx_formula(qz, dtype, data):
    """Bit-exact with clip(rint(x / s) + z) evaluated naively in x's precision,
    including half-way points k + 0.5 (times the scale)."""
    bits, signed, z, s = qz
    width = 32 if dtype == np.float32 else 64
    x = data.draw(hnp.arrays(dtype, st.integers(1, 40), elements=st.floats(-(2.0**100), 2.0**100, width=width)))
    halves = (np.arange(-40, 40) + 0.5) * float(np.asarray(s, dtype=dtype))
    x = np.concatenate([x, halves.astype(dtype)])
    q = quantize(x, s, z, bits=bits, signed=signed)
    np.testing.assert_array_equal(q, reference(x, s, z, bits, signed))


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_quantize_memory_is_output_plus_bounded_blocks(axis):
    """quantize works in blocks: beyond its output it allocates a bounded amount
    (a few blocks of 2**18 values), the same for a 4x larger input."""
    import tracemalloc

    extras = []
    for rows in (512, 2048):
        x = np.random.default_rng(0).standard_normal((rows, 2048)).astype(np.float32)
        scale, zp = qlib.calibrate(x, bits=8, axis=axis)
        tracemalloc.start()
        q = qlib.quantize(x, scale, zp, axis=axis)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        extras.append(peak - q.nbytes)
    assert max(extras) <= 4 * (1 << 18) * 8  # at most 4 blocks of float64-sized values (8 MiB)
    assert extras[1] <= extras[0] * 1.1 + 65536  # does not grow with the input


# --------------------------------------------------------------------------
# narrow_range, exact wide dequantization, one-element parameters, ml_dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bits, signed", [(2, True), (4, False), (8, True), (8, False), (16, True)])
def test_narrow_range_drops_the_lowest_code(bits, signed):
    lo, hi = qlib.integer_range(bits, signed, narrow_range=True)
    x = np.array([-1e9, -1.0, 0.0, 1.0, 1e9], dtype=np.float32)
    z = 0 if signed else 2 ** (bits - 1)
    q = quantize(x, 0.5, z, bits=bits, signed=signed, narrow_range=True)
    assert q[0] == lo and q[-1] == hi and q.dtype == quantize(x, 0.5, z, bits=bits, signed=signed).dtype
    f = fake_quantize(x, 0.5, z, bits=bits, signed=signed, narrow_range=True)
    assert f[0] == (lo - z) * 0.5
    with pytest.raises(ValueError, match="narrow grid"):
        quantize(x, 0.5, lo - 1, bits=bits, signed=signed, narrow_range=True)
    with pytest.raises(TypeError, match="narrow_range"):
        quantize(x, 0.5, narrow_range=1)


def test_dequantize_int64_beyond_2_53_forms_q_minus_z_exactly():
    # float64(2**62 + 3) is 2**62: the old float64 subtraction gave 0.
    q = np.array([2**62 + 3, 2**62 - 5, 2**62], dtype=np.int64)
    np.testing.assert_array_equal(dequantize(q, 1.0, 2**62), [3.0, -5.0, 0.0])
    np.testing.assert_array_equal(dequantize(q, 0.5, 2**62), [1.5, -2.5, 0.0])
    u = np.array([2**64 - 1, 2**63], dtype=np.uint64)
    np.testing.assert_array_equal(dequantize(u, 1.0, 2**64 - 2), [1.0, -(2.0**63) + 2])
    # per channel, through the blocks
    q2 = np.array([[2**60 + 1, 2**60 + 2], [7, 9]], dtype=np.int64)
    np.testing.assert_array_equal(dequantize(q2, np.array([1.0, 2.0]), np.array([2**60, 8]), axis=0),
                                  [[1.0, 2.0], [-2.0, 2.0]])
    # one rounding to float32 while |q - z| < 2**29
    rng = np.random.default_rng(0)
    d = rng.integers(-(2**28), 2**28, 1000)
    s = np.float32(0.0123)
    exact = (d.astype(np.float64) * np.float64(s)).astype(np.float32)  # exact product, then one rounding
    np.testing.assert_array_equal(dequantize(d + 2**40, s, 2**40), exact)


def test_dequantize_refuses_q_minus_z_beyond_int64():
    with pytest.raises(ValueError, match="q - zero_point must fit in int64"):
        dequantize(np.array([2**63 - 1], dtype=np.int64), 1.0, -1)
    with pytest.raises(ValueError, match="q - zero_point must fit in int64"):
        dequantize(np.array([0, 2**64 - 1], dtype=np.uint64), 1.0, 2**63 + 5)


@pytest.mark.parametrize("func", [quantize, fake_quantize])
def test_one_element_parameters_with_axis(func, block):
    """A (1,) scale or zero point with axis: a per-axis vector of length 1 when
    that axis has length 1, and shared by all elements otherwise (as a scalar,
    like ONNX's reference implementation); it used to be refused."""
    x = np.array([[0.5, 1.5, -2.5, 3.0]], dtype=np.float32)  # axis 0 has length 1
    expected = func(x, 0.5, 1)
    for kw in (dict(axis=0), dict(axis=0, group_size=2), dict(axis=1), dict(axis=1, group_size=3)):
        for s, z in ((np.array([0.5]), 1), (0.5, np.array([1])), (np.array([0.5]), np.array([1], np.int8)),
                     (np.full((1, 1), 0.5), np.ones((1, 1), np.int64))):
            np.testing.assert_array_equal(func(x, s, z, **kw), expected)
    q = quantize(x, 0.5, 1)
    np.testing.assert_array_equal(dequantize(q, np.array([0.5]), np.array([1]), axis=1), dequantize(q, 0.5, 1))


@pytest.mark.parametrize("name, bits, signed", [("int4", 4, True), ("uint4", 4, False),
                                                ("int2", 2, True), ("uint2", 2, False)])
def test_dequantize_accepts_ml_dtypes_sub_byte_codes(name, bits, signed):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    lo, hi = qlib.integer_range(bits, signed)
    values = np.arange(lo, hi + 1)
    q = values.astype(getattr(ml_dtypes, name))
    assert q.dtype.name == name
    z = (lo + hi + 1) // 2
    np.testing.assert_array_equal(dequantize(q, 0.25, z), (values - z) * np.float32(0.25))
    np.testing.assert_array_equal(dequantize(q.reshape(1, -1), np.array([0.5]), axis=0), [values * np.float32(0.5)])
    with pytest.raises(ValueError, match=rf"zero_point must lie in the range of q's dtype {name} \[{lo}, {hi}\]"):
        dequantize(q, 0.25, hi + 1)
