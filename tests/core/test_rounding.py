"""Tests of qlib.rounding: stochastic rounding and the stochastic uniform quantizer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qlib
from qlib.core.rounding import fake_quantize_stochastic, quantize_stochastic, stochastic_round


def test_exported_from_package():
    assert qlib.stochastic_round is stochastic_round
    assert qlib.quantize_stochastic is quantize_stochastic
    assert qlib.fake_quantize_stochastic is fake_quantize_stochastic


# --------------------------------------------------------------------------
# stochastic_round
# --------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.3, -0.3, 2.75, -1.5, 1e-3, 0.999, -7.125])
def test_unbiased_mean_within_four_standard_errors(x):
    n = 200_000
    r = stochastic_round(np.full(n, x), np.random.default_rng(12345))
    f = x - np.floor(x)
    se = np.sqrt(f * (1 - f) / n)
    assert abs(r.mean() - x) < 4 * se


def test_probability_of_rounding_up_is_the_fractional_part():
    x = np.repeat(np.array([0.1, 0.5, 0.9]), 100_000)
    r = stochastic_round(x, np.random.default_rng(7)).reshape(3, -1)
    p_up = r.mean(axis=1)
    assert np.allclose(p_up, [0.1, 0.5, 0.9], atol=4 * np.sqrt(0.25 / 100_000))


@settings(derandomize=True, max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=8),
                  elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.integers(0, 2**32 - 1))
def test_values_are_floor_or_ceil(x, seed):
    r = stochastic_round(x, np.random.default_rng(seed))
    assert r.shape == x.shape
    assert np.all((r == np.floor(x)) | (r == np.ceil(x)))


def test_integers_are_unchanged():
    x = np.array([-3.0, 0.0, 5.0, 1e15])
    assert np.array_equal(stochastic_round(x, np.random.default_rng(0)), x)
    ints = np.array([1, -2, 3])
    r = stochastic_round(ints, np.random.default_rng(0))
    assert r.dtype == np.float64 and np.array_equal(r, ints)


def test_both_neighbours_occur():
    r = stochastic_round(np.full(1000, 2.5), np.random.default_rng(0))
    assert set(np.unique(r)) == {2.0, 3.0}


def test_deterministic_for_a_seed_and_different_across_seeds():
    x = np.linspace(-3, 3, 1001)
    a = stochastic_round(x, np.random.default_rng(42))
    b = stochastic_round(x, np.random.default_rng(42))
    c = stochastic_round(x, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_advances_the_generator():
    rng = np.random.default_rng(0)
    x = np.full(100, 0.5)
    assert not np.array_equal(stochastic_round(x, rng), stochastic_round(x, rng))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_keeps_the_float_dtype(dtype):
    x = np.array([0.25, -1.75], dtype=dtype)
    assert stochastic_round(x, np.random.default_rng(0)).dtype == dtype


def test_scalar_in_scalar_out():
    r = stochastic_round(0.5, np.random.default_rng(0))
    assert isinstance(r, np.float64) and r in (0.0, 1.0)


def test_error_variance_is_f_times_one_minus_f():
    x = np.full(200_000, 0.25)
    err = stochastic_round(x, np.random.default_rng(3)) - x
    assert abs(np.mean(err**2) - 0.25 * 0.75) < 0.005


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0), "seed"])
def test_rng_must_be_a_generator(rng):
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        stochastic_round(np.array([0.5]), rng)


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (np.array([0.5, np.nan]), ValueError, "x must be finite"),
        (np.array([np.inf]), ValueError, "x must be finite"),
        (np.array([]), ValueError, "x must not be empty"),
        (np.array(["a"]), TypeError, "x must be an array of real numbers"),
        (np.array([True]), TypeError, "x must be an array of real numbers"),
    ],
)
def test_bad_x(x, exc, match):
    with pytest.raises(exc, match=match):
        stochastic_round(x, np.random.default_rng(0))


# --------------------------------------------------------------------------
# quantize_stochastic / fake_quantize_stochastic
# --------------------------------------------------------------------------


def test_fake_quantize_is_unbiased_inside_the_range():
    s = 0.1
    x = np.array([0.03, -0.47, 0.55, 1.234], dtype=np.float64)
    n = 100_000
    xs = np.tile(x, (n, 1))
    xh = fake_quantize_stochastic(xs, s, bits=6, rng=np.random.default_rng(5))
    f = x / s - np.floor(x / s)
    se = s * np.sqrt(f * (1 - f) / n)
    assert np.all(np.abs(xh.mean(axis=0) - x) < 4 * se)


def test_values_are_the_two_neighbouring_grid_points():
    rng = np.random.default_rng(0)
    s = np.float32(0.05)
    x = rng.uniform(-3, 3, 10_000).astype(np.float32)
    q = quantize_stochastic(x, s, bits=8, rng=np.random.default_rng(1))
    v = x / s
    assert np.all((q == np.floor(v)) | (q == np.ceil(v)))


def test_saturates_at_the_ends_of_the_grid():
    x = np.array([-100.0, -1.0, 1.0, 100.0])
    q = quantize_stochastic(x, 0.25, bits=4, rng=np.random.default_rng(0))
    assert q.dtype == np.int8
    assert q[0] == -8 and q[-1] == 7
    xh = fake_quantize_stochastic(x, 0.25, 3, bits=4, signed=False, rng=np.random.default_rng(0))
    assert xh[0] == pytest.approx(-3 * 0.25) and xh[-1] == pytest.approx(12 * 0.25)


def test_overflowing_division_saturates_without_warning():
    x = np.array([3e38, -3e38, 0.0], dtype=np.float32)
    q = quantize_stochastic(x, 1e-3, bits=8, rng=np.random.default_rng(0))
    assert q.tolist() == [127, -128, 0]


def test_zero_point_shifts_the_codes():
    x = np.linspace(-1, 1, 101)
    q0 = quantize_stochastic(x, 0.1, 0, bits=8, rng=np.random.default_rng(9))
    q5 = quantize_stochastic(x, 0.1, 5, bits=8, rng=np.random.default_rng(9))
    assert np.array_equal(q5.astype(int) - q0.astype(int), np.full(101, 5))


def test_grid_points_are_reproduced_exactly():
    s = 0.125
    x = np.arange(-16, 16) * s
    xh = fake_quantize_stochastic(x, s, bits=6, rng=np.random.default_rng(0))
    assert np.array_equal(xh, qlib.fake_quantize(x, s, bits=6))


@pytest.mark.parametrize("signed, dtype", [(True, np.int8), (False, np.uint8), (True, np.int16)])
def test_code_dtype_matches_quantize(signed, dtype):
    bits = 12 if dtype == np.int16 else 8
    x = np.array([0.0, 0.3])
    q = quantize_stochastic(x, 0.1, bits=bits, signed=signed, rng=np.random.default_rng(0))
    assert q.dtype == qlib.quantize(x, 0.1, bits=bits, signed=signed).dtype == dtype


# float16 now stays float16 (it divides in float16, as qlib.fake_quantize and ONNX); it was float32.
@pytest.mark.parametrize("dtype, out", [(np.float16, np.float16), (np.float32, np.float32), (np.float64, np.float64)])
def test_fake_quantize_dtype(dtype, out):
    x = np.array([0.3, -0.2], dtype=dtype)
    assert fake_quantize_stochastic(x, 0.1, rng=np.random.default_rng(0)).dtype == out


def test_float32_is_not_upcast_by_a_float64_scale():
    x = np.array([0.3, -0.2], dtype=np.float32)
    assert fake_quantize_stochastic(x, np.float64(0.1), rng=np.random.default_rng(0)).dtype == np.float32


def test_deterministic_for_a_seed():
    x = np.linspace(-1, 1, 257)
    a = fake_quantize_stochastic(x, 0.07, rng=np.random.default_rng(11))
    b = fake_quantize_stochastic(x, 0.07, rng=np.random.default_rng(11))
    assert np.array_equal(a, b)


def test_large_input_with_nan_is_refused():
    x = np.zeros(300_000)
    x[-1] = np.nan
    with pytest.raises(ValueError, match="x must be finite"):
        quantize_stochastic(x, 0.1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(rng=None), TypeError, "rng must be a numpy.random.Generator"),
        (dict(rng=np.random.RandomState(0)), TypeError, "rng must be a numpy.random.Generator"),
        (dict(scale=np.array([0.1, 0.2])), ValueError, "per-tensor only"),
        (dict(zero_point=np.array([0, 1])), ValueError, "per-tensor only"),
        (dict(scale=-0.1), ValueError, "scale must be positive"),
        (dict(zero_point=200), ValueError, "zero_point must lie in"),
        (dict(zero_point=0.5), TypeError, "zero_point must be an integer"),
        (dict(bits=1), ValueError, "bits must be an integer in"),
        (dict(bits=8.0), TypeError, "bits must be an integer"),
        (dict(signed=1), TypeError, "signed must be True or False"),
        (dict(x=np.array([1, 2])), TypeError, "x must be a floating-point array"),
        (dict(x=np.array([0.1, np.inf])), ValueError, "x must be finite"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    args = dict(x=np.array([0.1, 0.2]), scale=0.1, zero_point=0, bits=8, signed=True,
                rng=np.random.default_rng(0))
    args.update(kwargs)
    x = args.pop("x")
    scale = args.pop("scale")
    for fn in (quantize_stochastic, fake_quantize_stochastic):
        with pytest.raises(exc, match=match):
            fn(x, scale, **args)


def test_rng_is_required():
    with pytest.raises(TypeError):
        fake_quantize_stochastic(np.array([0.1]), 0.1)  # no rng: a missing keyword argument


def test_quantizer_in_the_scale_position():
    x = np.linspace(-20, 20, 301)
    q = qlib.Quantizer(0.125, 3, bits=6, signed=True, narrow_range=True)
    a = quantize_stochastic(x, q, rng=np.random.default_rng(2))
    assert a.min() == -31 and a.max() == 31  # the narrow 6-bit grid [-31, 31]
    b = fake_quantize_stochastic(x, q, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(b, (a.astype(np.float64) - 3) * 0.125)
    # same draws, same grid as the explicit call on the full grid where nothing reaches -32
    y = np.linspace(-2, 2, 101)
    full = qlib.Quantizer(0.125, 3, bits=6)
    np.testing.assert_array_equal(quantize_stochastic(y, full, rng=np.random.default_rng(4)),
                                  quantize_stochastic(y, 0.125, 3, bits=6, rng=np.random.default_rng(4)))
    with pytest.raises(TypeError, match="the quantizer carries its grid"):
        quantize_stochastic(x, q, bits=6, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="per-tensor only"):
        fake_quantize_stochastic(x.reshape(1, -1), qlib.Quantizer(np.ones(2), axis=0), rng=np.random.default_rng(0))
