"""Tests of qlib.integer: the article's integer quantization (section 3.1)."""

import numpy as np
import pytest

import qlib


def test_article_example_by_hand():
    # x = 1..5: mean 3, population std sqrt(2); z = (x-3)/sqrt(2) = -1.414, -0.707, 0, 0.707, 1.414
    r = qlib.integer_quantize(np.array([1, 2, 3, 4, 5]))
    np.testing.assert_array_equal(r.codes, [-1, -1, 0, 1, 1])
    assert r.mean == 3.0
    assert r.std == pytest.approx(np.sqrt(2.0))
    s = np.sqrt(2.0)
    np.testing.assert_allclose(r.dequantize(), [3 - s, 3 - s, 3, 3 + s, 3 + s])
    assert r.step == pytest.approx(s)
    assert r.levels == 3
    assert r.bits_needed == 2


def test_standardize_mean_zero_variance_one():
    x = np.random.default_rng(1).normal(5.0, 3.0, size=1000)
    z, mean, std = qlib.standardize(x)
    assert abs(z.mean()) < 1e-12
    assert z.std() == pytest.approx(1.0)
    assert mean == pytest.approx(x.mean())
    assert std == pytest.approx(x.std())


def test_exact_ties_round_half_to_even():
    # z = [-1.5, -0.5, 0, 0.5, 1.5] has mean 0 and population std exactly 1
    # (squares sum to 5 over 5 values); x = 3 + 2 z standardizes back to z exactly.
    z = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
    r = qlib.integer_quantize(3.0 + 2.0 * z)
    assert (r.mean, r.std) == (3.0, 2.0)
    np.testing.assert_array_equal(r.codes, [-2, 0, 0, 0, 2])


def test_gaussian_data_uses_about_seven_levels():
    x = np.random.default_rng(0).standard_normal(100_000)
    r = qlib.integer_quantize(x)
    assert 7 <= r.levels <= 11
    assert set(range(-3, 4)) <= set(np.unique(r.codes).tolist())


def test_error_bounded_by_half_a_step():
    x = np.random.default_rng(2).uniform(-1, 1, size=5000)
    r = qlib.integer_quantize(x)
    assert np.max(np.abs(x - r.dequantize())) <= r.step / 2 + 1e-12


def test_bits_saturates_codes_and_picks_dtype():
    x = np.random.default_rng(3).standard_normal(10_000)
    r = qlib.integer_quantize(x, bits=2)
    assert r.codes.dtype == np.int8
    assert r.codes.min() == -2 and r.codes.max() == 1
    unbounded = qlib.integer_quantize(x)
    np.testing.assert_array_equal(r.codes, np.clip(unbounded.codes, -2, 1))


def test_dtype_preserved():
    x32 = np.linspace(-1, 1, 11, dtype=np.float32)
    assert qlib.integer_quantize(x32).dequantize().dtype == np.float32
    assert qlib.integer_quantize(np.arange(5)).dequantize().dtype == np.float64


def test_shape_preserved_and_repr_has_no_address():
    x = np.random.default_rng(4).standard_normal((3, 4, 5))
    r = qlib.integer_quantize(x)
    assert r.codes.shape == x.shape == r.dequantize().shape
    assert "0x" not in repr(r) and "levels=" in repr(r)


@pytest.mark.parametrize(
    "x, err, match",
    [
        (np.array([1.0, np.nan]), ValueError, "finite"),
        (np.array([1.0, np.inf]), ValueError, "finite"),
        (np.array([]), ValueError, "empty"),
        (np.full(4, 2.5), ValueError, "constant"),
        (np.array(["a", "b"]), TypeError, "real numbers"),
        (np.array([True, False]), TypeError, "real numbers"),
        (np.array([1 + 2j, 3j]), TypeError, "real numbers"),
    ],
)
def test_bad_x(x, err, match):
    with pytest.raises(err, match=f"x.*{match}|{match}.*x"):
        qlib.integer_quantize(x)


@pytest.mark.parametrize(
    "bits, err",
    [(0, ValueError), (65, ValueError), (-3, ValueError), (4.0, TypeError), (True, TypeError), ("8", TypeError)],
)
def test_bad_bits(bits, err):
    with pytest.raises(err, match="bits"):
        qlib.integer_quantize(np.arange(4.0), bits=bits)
