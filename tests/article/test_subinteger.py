"""Tests of qlib.subinteger: the article's sub-integer (fixed-point) quantization (section 3.2)."""

import numpy as np
import pytest

import qlib


def test_article_example_by_hand():
    # z = (x - 3)/sqrt(2) = +-1.4142, +-0.7071, 0; times 4 = +-5.657, +-2.828 -> +-6, +-3
    r = qlib.subinteger_quantize(np.array([1, 2, 3, 4, 5]), frac_bits=2)
    np.testing.assert_array_equal(r.codes, [-6, -3, 0, 3, 6])
    np.testing.assert_array_equal(r.standardized, [-1.5, -0.75, 0.0, 0.75, 1.5])
    np.testing.assert_allclose(r.dequantize(), 3 + np.sqrt(2) * np.array([-1.5, -0.75, 0, 0.75, 1.5]))
    assert r.step == pytest.approx(np.sqrt(2) / 4)


def test_frac_bits_zero_is_integer_quantization():
    x = np.random.default_rng(0).standard_normal(1000)
    a, b = qlib.subinteger_quantize(x, 0), qlib.integer_quantize(x)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.dequantize(), b.dequantize())


def test_exact_ties_round_half_to_even():
    # z = [-1.5, -0.5, 0, 0.5, 1.5] (mean 0, std 1); with one fractional bit z*2 = -3,-1,0,1,3 (no ties),
    # with frac_bits=0 the ties go to even; scale to x = 10 + 4z.
    z = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
    np.testing.assert_array_equal(qlib.subinteger_quantize(10 + 4 * z, 0).codes, [-2, 0, 0, 0, 2])
    np.testing.assert_array_equal(qlib.subinteger_quantize(10 + 4 * z, 1).codes, [-3, -1, 0, 1, 3])


@pytest.mark.parametrize("frac_bits", [0, 1, 2, 4, 8])
def test_error_bounded_by_half_a_step(frac_bits):
    x = np.random.default_rng(frac_bits).normal(2.0, 5.0, size=4000)
    r = qlib.subinteger_quantize(x, frac_bits)
    assert np.max(np.abs(x - r.dequantize())) <= r.step / 2 * (1 + 1e-9)


def test_each_fractional_bit_halves_the_step_and_quarters_the_mse():
    x = np.random.default_rng(5).uniform(-1, 1, 200_000)
    mses = [np.mean((x - qlib.subinteger_quantize(x, b).dequantize()) ** 2) for b in range(2, 7)]
    ratios = np.array(mses[:-1]) / np.array(mses[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.05)


def test_word_length_saturates():
    x = np.random.default_rng(6).standard_normal(10_000)
    r = qlib.subinteger_quantize(x, frac_bits=2, bits=4)  # codes -8..7, values -2.0 .. 1.75 std
    assert r.codes.dtype == np.int8
    assert (r.codes.min(), r.codes.max()) == (-8, 7)
    z, _, _ = qlib.standardize(x)
    big = z > 1.875
    np.testing.assert_array_equal(r.standardized[big], 1.75)
    r16 = qlib.subinteger_quantize(x, frac_bits=10, bits=16)
    assert r16.codes.dtype == np.int16


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(frac_bits=-1), ValueError, "frac_bits"),
        (dict(frac_bits=53), ValueError, "frac_bits"),
        (dict(frac_bits=2.0), TypeError, "frac_bits"),
        (dict(frac_bits=None), TypeError, "frac_bits"),
        (dict(frac_bits=4, bits=4), ValueError, "bits"),
        (dict(frac_bits=4, bits=70), ValueError, "bits"),
        (dict(frac_bits=4, bits=8.5), TypeError, "bits"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        qlib.subinteger_quantize(np.arange(6.0), **kwargs)


@pytest.mark.parametrize(
    "x, err, match",
    [
        ([1.0, float("nan")], ValueError, "finite"),
        ([], ValueError, "empty"),
        ([7, 7, 7], ValueError, "constant"),
        ("abc", TypeError, "real numbers"),
    ],
)
def test_bad_x(x, err, match):
    with pytest.raises(err, match=match):
        qlib.subinteger_quantize(x, 4)
