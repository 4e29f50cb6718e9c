"""Tests of qlib.calibration.calibrate."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qlib
from qlib import calibrate, fake_quantize, quantize

EPS = np.finfo(np.float32).eps


def mse_of(x, scale, zp, **kw):
    f = fake_quantize(x, scale, zp, **kw)
    return float(np.mean((x.astype(np.float64) - f) ** 2))


def test_exported_from_package():
    assert qlib.calibrate is calibrate


# --------------------------------------------------------------------------
# min-max on hand cases
# --------------------------------------------------------------------------


def test_minmax_asymmetric_hand_case():
    x = np.array([-1.0, 0.0, 2.0, 3.0], dtype=np.float32)
    s, z = calibrate(x)
    assert isinstance(s, np.float32) and isinstance(z, np.int8)
    assert s == np.float32(4.0 / 255)
    assert z == -128 - round(-1.0 / (4.0 / 255))  # -128 + 64 = -64
    q = quantize(x, s, z)
    assert q.min() == -128 and q.max() == 127  # the range fills the grid


def test_minmax_range_stretched_to_include_zero():
    pos = np.array([2.0, 4.0], dtype=np.float32)
    s, z = calibrate(pos)  # range [0, 4]
    assert s == np.float32(4.0 / 255) and z == -128
    neg = np.array([-4.0, -2.0], dtype=np.float32)
    s, z = calibrate(neg)  # range [-4, 0]
    assert s == np.float32(4.0 / 255) and z == 127
    s, z = calibrate(pos, signed=False)
    assert z == 0 and z.dtype == np.uint8
    s, z = calibrate(neg, signed=False)
    assert z == 255
    # 0 is exactly representable
    for x in (pos, neg):
        s, z = calibrate(x)
        assert fake_quantize(np.float32([0.0]), s, z)[0] == 0


def test_constant_and_zero_input():
    s, z = calibrate(np.full(5, 3.0, dtype=np.float32))
    assert s == np.float32(3.0 / 255) and z == -128
    s, z = calibrate(np.zeros(5, dtype=np.float32))
    assert s == EPS and z == -128
    s, z = calibrate(np.zeros(5, dtype=np.float32), symmetric=True)
    assert s == EPS and z == 0
    s, z = calibrate(np.full(3, 1e-9))  # tiny range: floored at eps
    assert s == EPS


def test_symmetric_restricted_range():
    x = np.array([-1.0, 0.5, 3.0], dtype=np.float32)
    s, z = calibrate(x, symmetric=True)
    assert s == np.float32(3.0 / 127) and z == 0
    # +-amax map to +-127 exactly; -128 is never produced
    q = quantize(np.float32([-3.0, 3.0, -1.0, 1.0]), s, z)
    np.testing.assert_array_equal(q, [-127, 127, -42, 42])
    s4, z4 = calibrate(x, bits=4, symmetric=True)
    assert s4 == np.float32(3.0 / 7) and z4 == 0
    s2, _ = calibrate(x, bits=2, symmetric=True)  # ternary {-1, 0, 1}
    assert s2 == np.float32(3.0)
    s16, z16 = calibrate(x, bits=16, symmetric=True)
    assert s16 == np.float32(3.0 / 32767) and z16.dtype == np.int16


def test_symmetric_negation_symmetric():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    s, z = calibrate(x, symmetric=True)
    q = quantize(x, s, z)
    np.testing.assert_array_equal(quantize(-x, s, z), -q)
    assert q.min() >= -127 and max(-q.min(), q.max()) == 127


def test_symmetric_unsigned_zero_point_mid_grid():
    x = np.array([-2.0, 1.0], dtype=np.float32)
    s, z = calibrate(x, symmetric=True, signed=False)
    assert z == 128 and z.dtype == np.uint8 and s == np.float32(2.0 / 127)
    np.testing.assert_array_equal(quantize(np.float32([-2.0, 2.0]), s, z, signed=False), [1, 255])
    s, z = calibrate(x, bits=4, symmetric=True, signed=False)
    assert z == 8 and s == np.float32(2.0 / 7)


@pytest.mark.parametrize(
    "bits, signed, dtype",
    [(2, True, np.int8), (4, False, np.uint8), (8, True, np.int8), (8, False, np.uint8),
     (12, True, np.int16), (16, False, np.uint16)],
)
@pytest.mark.parametrize("symmetric", [False, True])
def test_zero_point_dtype_and_on_grid(bits, signed, dtype, symmetric):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((4, 30)).astype(np.float32) + rng.uniform(-3, 3, (4, 1)).astype(np.float32)
    lo, hi = qlib.integer_range(bits, signed)
    for kw in (dict(), dict(axis=0), dict(axis=1, group_size=7)):
        s, z = calibrate(x, bits=bits, signed=signed, symmetric=symmetric, **kw)
        assert np.asarray(s).dtype == np.float32 and np.all(s >= EPS)
        assert np.asarray(z).dtype == dtype
        assert np.all(z >= lo) and np.all(z <= hi)
        q = quantize(x, s, z, bits=bits, signed=signed, **kw)
        assert q.dtype == dtype


def test_float64_input_gives_float32_scale():
    x = np.array([-1.0, 3.0])
    s, z = calibrate(x)
    assert isinstance(s, np.float32) and s == np.float32(4.0 / 255)
    assert isinstance(calibrate(x.astype(np.float16))[0], np.float32)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e4, 1e4)),
    st.sampled_from([(8, True), (8, False), (4, True), (3, False), (16, True)]),
    st.booleans(),
)
def test_minmax_error_at_most_half_a_step(x, grid, symmetric):
    bits, signed = grid
    s, z = calibrate(x, bits=bits, signed=signed, symmetric=symmetric)
    f = fake_quantize(x, s, z, bits=bits, signed=signed)
    # min-max clips nothing: the rounding of the zero point moves the grid by
    # at most half a step, and the end of the range then rounds to the end code
    tol = 1e-9 * (np.abs(x) + float(s))
    assert np.all(np.abs(x - f) <= float(s) / 2 + tol)


# --------------------------------------------------------------------------
# granularity: per-channel and per-group equal per-slice calibration
# --------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_channel_matches_per_slice(axis, method, symmetric):
    rng = np.random.default_rng(axis + 10)
    x = rng.laplace(size=(3, 5, 40)).astype(np.float32) + np.float32(0.3)
    kw = dict(method=method, symmetric=symmetric, percentile=99.0, num_candidates=20)
    s, z = calibrate(x, axis=axis, **kw)
    n = x.shape[axis]
    assert s.shape == (n,) and z.shape == (n,)
    for i in range(n):
        si, zi = calibrate(np.take(x, i, axis=axis), **kw)
        assert s[i] == si and z[i] == zi


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("group_size", [1, 3, 4, 16])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_per_group_matches_per_group_slices(axis, group_size, method):
    rng = np.random.default_rng(group_size)
    shape = (4, 10, 6)
    x = rng.standard_t(3, size=shape).astype(np.float32)
    kw = dict(method=method, percentile=95.0, num_candidates=10)
    s, z = calibrate(x, axis=axis, group_size=group_size, **kw)
    n = shape[axis]
    n_groups = -(-n // group_size)
    expected_shape = list(shape)
    expected_shape[axis] = n_groups
    assert s.shape == tuple(expected_shape) and z.shape == s.shape
    xm = np.moveaxis(x, axis, 0)
    sm, zm = np.moveaxis(s, axis, 0), np.moveaxis(z, axis, 0)
    for gi in range(n_groups):
        block = xm[gi * group_size : (gi + 1) * group_size]  # the last may be shorter
        for idx in np.ndindex(*block.shape[1:]):
            values = block[(slice(None),) + idx]
            si, zi = calibrate(values, **kw)
            assert sm[(gi,) + idx] == si and zm[(gi,) + idx] == zi
    q = quantize(x, s, z, axis=axis, group_size=group_size)
    assert q.shape == shape


def test_per_group_hand_case():
    x = np.array([[1.0, -2.0, 4.0, 0.5, 8.0]], dtype=np.float32)
    s, z = calibrate(x, symmetric=True, axis=1, group_size=2)
    np.testing.assert_array_equal(s, np.float32([[2.0, 4.0, 8.0]]) / np.float32(127))
    np.testing.assert_array_equal(z, [[0, 0, 0]])


# --------------------------------------------------------------------------
# percentile
# --------------------------------------------------------------------------


def test_percentile_hand_cases():
    x = np.arange(-50, 1001, dtype=np.float64)  # -50 .. 1000
    s, z = calibrate(x, method="percentile", percentile=90.0, symmetric=True)
    assert s == np.float32(np.percentile(np.abs(x), 90.0) / 127)
    s, z = calibrate(x, method="percentile", percentile=95.0)
    lo, hi = np.percentile(x, [5.0, 95.0])  # 2.5, 947.5: lo is stretched to 0
    assert lo > 0
    assert s == np.float32(hi / 255) and z == -128
    y = np.linspace(-100.0, 100.0, 2001)
    s, z = calibrate(y, method="percentile", percentile=99.0)
    lo, hi = np.percentile(y, [1.0, 99.0])
    assert s == np.float32((hi - lo) / 255)
    assert z == -128 - np.rint(lo / np.float64(s))


def test_percentile_100_is_minmax():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    for kw in (dict(), dict(symmetric=True), dict(axis=1), dict(axis=1, group_size=8)):
        a = calibrate(x, method="percentile", percentile=100, **kw)
        b = calibrate(x, **kw)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_percentile_clips_outlier():
    x = np.concatenate([np.linspace(-1, 1, 999), [1000.0]]).astype(np.float32)
    s_mm, _ = calibrate(x, symmetric=True)
    s_p, _ = calibrate(x, method="percentile", percentile=99.0, symmetric=True)
    assert s_p < s_mm / 100


# --------------------------------------------------------------------------
# mse
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("dist", ["student_t", "laplace"])
def test_mse_beats_minmax_on_heavy_tails(bits, symmetric, dist):
    rng = np.random.default_rng(2024 + bits)
    if dist == "student_t":
        x = rng.standard_t(2.5, size=20000).astype(np.float32)
    else:
        x = rng.laplace(size=20000).astype(np.float32)
    kw = dict(bits=bits, symmetric=symmetric)
    s_mm, z_mm = calibrate(x, **kw)
    s_mse, z_mse = calibrate(x, method="mse", **kw)
    assert s_mse < s_mm
    # 4 bits: clipping the tails more than halves the error; 8 bits: a few percent
    factor = 0.5 if bits == 4 else 0.97
    assert mse_of(x, s_mse, z_mse, bits=bits) < factor * mse_of(x, s_mm, z_mm, bits=bits)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_per_channel_beats_minmax_each_channel(bits):
    rng = np.random.default_rng(7)
    x = rng.standard_t(2.0, size=(8, 4000)).astype(np.float32)
    s_mm, z_mm = calibrate(x, bits=bits, symmetric=True, axis=0)
    s, z = calibrate(x, bits=bits, symmetric=True, axis=0, method="mse")
    for i in range(8):
        assert mse_of(x[i], s[i], z[i], bits=bits) < mse_of(x[i], s_mm[i], z_mm[i], bits=bits)


def test_mse_never_worse_than_minmax_and_keeps_uniform_range():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, 5000).astype(np.float32)
    s_mm, z_mm = calibrate(x, bits=8)
    s, z = calibrate(x, bits=8, method="mse")
    assert mse_of(x, s, z) <= mse_of(x, s_mm, z_mm)
    assert s > 0.95 * s_mm  # uniform data: hardly any clipping pays
    s1, z1 = calibrate(x, method="mse", num_candidates=1)  # the only candidate is min-max
    assert s1 == s_mm and z1 == z_mm


def test_mse_constant_input():
    s, z = calibrate(np.zeros(10, dtype=np.float32), method="mse")
    assert s == EPS and z == -128
    s, z = calibrate(np.full(10, 2.0, dtype=np.float32), method="mse", symmetric=True)
    assert fake_quantize(np.float32([2.0]), s, z)[0] == pytest.approx(2.0, rel=1e-2)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, kwargs, exc, match",
    [
        (np.array([1.0, np.nan]), {}, ValueError, "x must be finite"),
        (np.array([np.inf, 1.0]), {}, ValueError, "x must be finite"),
        (np.array([], dtype=np.float32), {}, ValueError, "x must not be empty"),
        (np.array([1, 2, 3]), {}, TypeError, "x must be a floating-point"),
        (np.array([True, False]), {}, TypeError, "x must be"),
        (np.array([1e300, -1e300]), {}, ValueError, "x spans a range too wide"),
        (np.ones(3), dict(bits=1), ValueError, "bits"),
        (np.ones(3), dict(bits=17), ValueError, "bits"),
        (np.ones(3), dict(bits=4.0), TypeError, "bits"),
        (np.ones(3), dict(bits=True), TypeError, "bits"),
        (np.ones(3), dict(bits="8"), TypeError, "bits"),
        (np.ones(3), dict(signed="no"), TypeError, "signed"),
        (np.ones(3), dict(symmetric=1), TypeError, "symmetric"),
        (np.ones((2, 3)), dict(axis=2), ValueError, "axis"),
        (np.ones((2, 3)), dict(axis=-3), ValueError, "axis"),
        (np.ones((2, 3)), dict(axis="0"), TypeError, "axis"),
        (np.ones((2, 3)), dict(axis=1, group_size=0), ValueError, "group_size"),
        (np.ones((2, 3)), dict(axis=1, group_size=1.5), TypeError, "group_size"),
        (np.ones((2, 3)), dict(group_size=2), ValueError, "group_size"),
        (np.ones(3), dict(method="max"), ValueError, "method"),
        (np.ones(3), dict(method=None), TypeError, "method"),
        (np.ones(3), dict(method="percentile", percentile=0), ValueError, "percentile"),
        (np.ones(3), dict(method="percentile", percentile=-5), ValueError, "percentile"),
        (np.ones(3), dict(method="percentile", percentile=100.5), ValueError, "percentile"),
        (np.ones(3), dict(method="percentile", percentile=np.nan), ValueError, "percentile"),
        (np.ones(3), dict(method="percentile", percentile="99"), TypeError, "percentile"),
        (np.ones(3), dict(method="percentile", percentile=True), TypeError, "percentile"),
        (np.ones(3), dict(percentile=101), ValueError, "percentile"),
        (np.ones(3), dict(method="mse", num_candidates=0), ValueError, "num_candidates"),
        (np.ones(3), dict(method="mse", num_candidates=10.0), TypeError, "num_candidates"),
    ],
)
def test_bad_input(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        calibrate(x, **kwargs)


# --------------------------------------------------------------------------
# calibrate returns a Quantizer; symmetric grids are narrow
# --------------------------------------------------------------------------


def test_returns_a_quantizer_that_unpacks_as_the_old_pair():
    x = np.array([-1.0, 0.0, 2.0, 3.0], dtype=np.float32)
    q = calibrate(x)
    assert isinstance(q, qlib.Quantizer)
    assert (q.bits, q.signed, q.narrow_range, q.axis, q.group_size) == (8, True, False, None, None)
    s, z = q
    assert s == np.float32(4.0 / 255) and z == -64 and isinstance(z, np.int8)
    assert repr(q) == "Quantizer(8-bit signed [-128, 127], per-tensor, scale 0.015686275, zero point -64)"
    w = np.ones((3, 4, 5), dtype=np.float32)
    assert calibrate(w, axis=-1).axis == 2  # normalized
    qg = calibrate(w, axis=1, group_size=3, symmetric=True)
    assert (qg.granularity, qg.group_size, qg.narrow_range) == ("group", 3, True)


def test_symmetric_defaults_to_narrow_and_narrow_range_false_is_the_old_grid():
    rng = np.random.default_rng(3)
    x = rng.laplace(size=5000).astype(np.float32)
    kw = dict(symmetric=True, method="percentile", percentile=99.0)
    q = calibrate(x, **kw)
    assert q.narrow_range and (q.qmin, q.qmax) == (-127, 127)
    codes = quantize(x, q)
    assert codes.min() == -127 and codes.max() == 127  # clipped values saturate at +-127
    old = calibrate(x, narrow_range=False, **kw)
    assert not old.narrow_range and old.scale == q.scale and old.zero_point == q.zero_point
    assert quantize(x, old).min() == -128  # the full grid: the old behaviour
    # the unpacked pair with the functional call is the full ONNX grid, unless told otherwise
    s, z = q
    assert quantize(x, s, z).min() == -128
    np.testing.assert_array_equal(quantize(x, s, z, narrow_range=True), codes)
    qu = calibrate(x, signed=False, **kw)
    assert (qu.qmin, qu.qmax, int(qu.zero_point)) == (1, 255, 128)
    assert quantize(x, qu).min() == 1


def test_asymmetric_narrow_range_maps_onto_the_narrow_grid():
    x = np.array([-1.0, 0.0, 2.0, 3.0], dtype=np.float32)
    q = calibrate(x, narrow_range=True)
    assert q.narrow_range and q.scale == np.float32(4.0 / 254)
    assert q.zero_point == -127 - round(-1.0 / (4.0 / 254))
    codes = quantize(x, q)
    assert codes.min() == -127 and codes.max() == 127
    qu = calibrate(np.array([0.0, 1.0], dtype=np.float32), signed=False, narrow_range=True)
    assert qu.zero_point == 1 and quantize(np.float32([0.0, 1.0]), qu).tolist() == [1, 255]


def test_two_bit_symmetric_is_ternary_for_every_method():
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, size=(4, 64)).astype(np.float32)
    for method in ("minmax", "percentile", "mse"):
        for kw in (dict(), dict(axis=0), dict(axis=1, group_size=16)):
            q = calibrate(x, bits=2, symmetric=True, method=method, percentile=90.0, **kw)
            assert set(np.unique(quantize(x, q))) <= {-1, 0, 1}


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_search_evaluates_the_grid_it_returns(symmetric):
    """Brute force over the same candidates with the returned grid (narrow when
    symmetric): the chosen range is the one with the least error."""
    rng = np.random.default_rng(11)
    x = rng.standard_t(2.0, size=3000).astype(np.float32)
    K = 25
    for bits in (2, 3, 4):
        q = calibrate(x, bits=bits, symmetric=symmetric, method="mse", num_candidates=K)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        errs = []
        for k in range(K, 0, -1):
            c = k / K
            cand = calibrate(np.array([c * lo, c * hi]), bits=bits, symmetric=symmetric)
            assert cand.narrow_range == q.narrow_range
            f = fake_quantize(x, cand)
            errs.append((float(np.sum((x.astype(np.float64) - f) ** 2)), cand))
        best = min(errs, key=lambda e: e[0])[1]  # first minimum: the largest range wins ties
        assert q.scale == best.scale and q.zero_point == best.zero_point


def test_bad_narrow_range():
    with pytest.raises(TypeError, match="narrow_range must be True or False"):
        calibrate(np.ones(3), narrow_range=1)


@st.composite
def symmetric_case(draw):
    rows = draw(st.integers(1, 4))
    cols = draw(st.integers(1, 12))
    x = draw(hnp.arrays(np.float32, (rows, cols), elements=st.floats(-1e3, 1e3, width=32)))
    gran = draw(st.sampled_from([{}, dict(axis=0), dict(axis=1), dict(axis=1, group_size=draw(st.integers(1, 5)))]))
    return x, gran


@settings(derandomize=True, max_examples=80, deadline=None)
@given(symmetric_case(), st.integers(2, 16), st.sampled_from(["minmax", "percentile", "mse"]), st.booleans())
def test_symmetric_codes_in_the_narrow_range_and_odd(case, bits, method, signed):
    x, gran = case
    q = calibrate(x, bits=bits, signed=signed, symmetric=True, method=method, percentile=80.0,
                  num_candidates=8, **gran)
    h = 2 ** (bits - 1) - 1
    assert q.narrow_range and q.levels == 2 * h + 1
    codes = quantize(x, q).astype(np.int64)
    neg = quantize(-x, q).astype(np.int64)
    z = 0 if signed else h + 1
    assert codes.min() >= z - h and codes.max() <= z + h
    np.testing.assert_array_equal(neg - z, -(codes - z))  # quantize(-x, q) == -quantize(x, q) when signed
    np.testing.assert_array_equal(fake_quantize(-x, q), -fake_quantize(x, q) + 0.0)
