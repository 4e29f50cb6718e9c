"""Tests for qlib.metrics: mse, sqnr_db, max_abs_error, size_bytes."""

import math

import numpy as np
import pytest

import qlib
from qlib.core.metrics import max_abs_error, mse, size_bytes, sqnr_db


def test_exported_from_package():
    for name in ("mse", "sqnr_db", "max_abs_error", "size_bytes"):
        assert getattr(qlib, name) is globals()[name]


def test_mse_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    xh = x + rng.normal(scale=0.1, size=x.shape)
    assert mse(x, xh) == pytest.approx(np.mean((x - xh) ** 2), rel=1e-15)
    assert isinstance(mse(x, xh), float)


def test_metrics_compute_in_float64():
    # In float16 the squared errors underflow / lose precision; qlib must not.
    x = np.array([1000.0, 2000.0], dtype=np.float16)
    xh = np.array([1001.0, 1998.0], dtype=np.float16)
    assert mse(x, xh) == 2.5
    assert max_abs_error(x, xh) == 2.0
    assert sqnr_db(x, xh) == pytest.approx(10 * math.log10(5e6 / 5.0))
    # float32 squares of large values would overflow float32
    big = np.array([3e38, -3e38], dtype=np.float32)
    assert math.isfinite(mse(big, np.zeros(2, dtype=np.float32)))


def test_integer_inputs_are_accepted():
    assert mse(np.array([1, 2, 3]), np.array([1, 2, 5])) == pytest.approx(4 / 3)
    assert max_abs_error([1, 2], [1, 2]) == 0.0


def test_sqnr_db_values():
    assert sqnr_db([3.0, 4.0], [3.0, 3.5]) == pytest.approx(20.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    noise = rng.normal(size=1000) * 0.01
    expected = 10 * np.log10(np.sum(x**2) / np.sum(noise**2))
    assert sqnr_db(x, x + noise) == pytest.approx(expected, rel=1e-9)


def test_sqnr_db_edge_cases_do_not_warn():
    # pytest runs with filterwarnings=error, so a divide warning would fail here
    assert sqnr_db([1.0, 2.0], [1.0, 2.0]) == math.inf
    assert sqnr_db([0.0, 0.0], [0.0, 0.0]) == math.inf
    assert sqnr_db([0.0, 0.0], [0.0, 0.1]) == -math.inf


def test_max_abs_error():
    assert max_abs_error([1.0, -2.0, 3.0], [1.5, -4.0, 3.0]) == 2.0


@pytest.mark.parametrize("fn", [mse, sqnr_db, max_abs_error])
def test_shape_mismatch_names_both_arguments(fn):
    with pytest.raises(ValueError, match=r"x and x_hat.*\(3,\).*\(2,\)"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        fn(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("fn", [mse, sqnr_db, max_abs_error])
def test_bad_values(fn):
    with pytest.raises(ValueError, match="x must be finite"):
        fn([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="x_hat must be finite"):
        fn([1.0, 2.0], [1.0, np.inf])
    with pytest.raises(ValueError, match="x must not be empty"):
        fn([], [])
    with pytest.raises(TypeError, match="x_hat"):
        fn([1.0], ["a"])
    with pytest.raises(TypeError, match="x"):
        fn(np.array([True]), np.array([True]))


def test_size_bytes_counts_real_storage():
    x = np.zeros((10, 10), dtype=np.float32)
    q = np.zeros((10, 10), dtype=np.int8)
    packed = qlib.pack(np.zeros(100, dtype=np.int8), bits=4)
    assert size_bytes(x) == 400
    assert size_bytes(q) == 100
    assert size_bytes(packed) == 50
    assert size_bytes(q, np.float32(0.1), np.int8(3)) == 105
    assert size_bytes(q, np.ones(10, dtype=np.float32)) == 140  # per-channel scales
    assert size_bytes(q, 0.5, 3) == 116  # Python scalars count as 8-byte numpy scalars
    assert size_bytes() == 0
    assert isinstance(size_bytes(x), int)


def test_size_bytes_rejects_non_arrays():
    with pytest.raises(TypeError, match="argument 1 of size_bytes.*list"):
        size_bytes(np.zeros(3), [1, 2, 3])
    with pytest.raises(TypeError, match="argument 0"):
        size_bytes("abc")
    with pytest.raises(TypeError, match="argument 0"):
        size_bytes(True)
    with pytest.raises(TypeError, match="argument 0"):
        size_bytes(None)
    with pytest.raises(TypeError, match="numeric dtype"):
        size_bytes(np.array(["a", "b"]))


def test_size_bytes_counts_ml_dtypes_arrays():
    ml_dtypes = pytest.importorskip("ml_dtypes")

    assert size_bytes(np.zeros(10, dtype=ml_dtypes.bfloat16), np.zeros(4, dtype=ml_dtypes.float8_e4m3fn)) == 24
    with pytest.raises(TypeError, match="numeric dtype"):
        size_bytes(np.array(["a"]))
