"""Tests for qlib.core.intops: the exact integer matrix product."""

import numpy as np
import pytest

import qlib
from qlib.core.intops import _matmul_method, int_matmul

INT32_MAX = 2**31 - 1


def test_exported_from_package():
    assert qlib.int_matmul is int_matmul


# ---------------------------------------------------------------------------
# int_matmul
# ---------------------------------------------------------------------------

DTYPES = (np.int8, np.uint8, np.int16, np.uint16)


def rand_int(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dt)


@pytest.mark.parametrize("dta", DTYPES)
@pytest.mark.parametrize("dtb", DTYPES)
def test_int_matmul_matches_int64(dta, dtb):
    rng = np.random.default_rng(hash((np.dtype(dta).str, np.dtype(dtb).str)) % 2**32)
    for m, k, n in [(1, 1, 1), (3, 5, 2), (17, 64, 9), (8, 300, 33), (4, 1500, 3)]:
        a, b = rand_int(rng, (m, k), dta), rand_int(rng, (k, n), dtb)
        got = int_matmul(a, b)
        want = a.astype(np.int64) @ b.astype(np.int64)
        np.testing.assert_array_equal(got, want)
        assert got.shape == (m, n)
        bound = k * max(-int(np.iinfo(dta).min), int(np.iinfo(dta).max)) * max(
            -int(np.iinfo(dtb).min), int(np.iinfo(dtb).max))
        assert got.dtype == (np.int32 if bound <= INT32_MAX else np.int64)


def test_int_matmul_extremes_float32_boundary():
    # K = 1024, all -128: every partial sum up to exactly 2**24 (float32 path)
    a = np.full((3, 1024), -128, dtype=np.int8)
    b = np.full((1024, 2), -128, dtype=np.int8)
    assert _matmul_method(1024, 128, 128) == "float32"
    out = int_matmul(a, b)
    assert out.dtype == np.int32
    assert (out == 2**24).all()
    # mixed signs at the boundary: 2**24 - 1 and friends must be exact too
    a[0, 0] = 127
    np.testing.assert_array_equal(int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_int_matmul_extremes_float64_path():
    # K = 1025 all -128 (bound 2**24 + 2**14, odd sums not representable in float32)
    k = 1025
    assert _matmul_method(k, 128, 128) == "float64"
    a = np.full((2, k), -128, dtype=np.int8)
    a[:, ::2] = 127
    b = np.full((k, 3), -128, dtype=np.int8)
    b[0, 0] = 1
    np.testing.assert_array_equal(int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))
    # int16 extremes: bound K * 2**30, int64 output
    rng = np.random.default_rng(3)
    a16 = rand_int(rng, (5, 700), np.int16)
    b16 = rand_int(rng, (700, 4), np.int16)
    a16[0, :] = -32768
    b16[:, 0] = -32768
    out = int_matmul(a16, b16)
    assert out.dtype == np.int64 and out[0, 0] == 700 * 2**30
    np.testing.assert_array_equal(out, a16.astype(np.int64) @ b16.astype(np.int64))


def test_int_matmul_small_values_use_float32_even_for_large_k():
    # the path uses the actual magnitudes: 0/1 matrices with K = 4096 stay float32
    assert _matmul_method(4096, 1, 1) == "float32"
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, size=(4, 4096), dtype=np.uint8)
    b = rng.integers(-1, 2, size=(4096, 5), dtype=np.int8)
    np.testing.assert_array_equal(int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_int_matmul_int64_path_for_huge_16bit_dot():
    k = 2**21 + 128  # k * 65535**2 > 2**53: not exact in float64
    assert _matmul_method(k, 65535, 65535) == "int64"
    a = np.full(k, 65535, dtype=np.uint16)
    out = int_matmul(a, a)
    assert out.dtype == np.int64 and out.shape == ()
    assert int(out) == k * 65535**2
    with pytest.raises(ValueError, match="beyond int64"):
        _matmul_method(2**40, 2**16, 2**16)


def test_int_matmul_vector_cases():
    rng = np.random.default_rng(5)
    a = rand_int(rng, (6, 7), np.int8)
    v = rand_int(rng, (7,), np.int8)
    w = rand_int(rng, (6,), np.uint8)
    np.testing.assert_array_equal(int_matmul(a, v), a.astype(np.int64) @ v.astype(np.int64))
    np.testing.assert_array_equal(int_matmul(w, a), w.astype(np.int64) @ a.astype(np.int64))
    assert int_matmul(a, v).shape == (6,)
    assert int(int_matmul(v, v)) == int(v.astype(np.int64) @ v.astype(np.int64))


def test_int_matmul_empty_dimensions():
    a = np.zeros((0, 4), dtype=np.int8)
    b = np.zeros((4, 3), dtype=np.int8)
    assert int_matmul(a, b).shape == (0, 3)
    z = int_matmul(np.zeros((2, 0), dtype=np.int8), np.zeros((0, 3), dtype=np.int8))
    assert z.shape == (2, 3) and (z == 0).all()


def test_int_matmul_errors():
    i8 = np.zeros((2, 3), dtype=np.int8)
    with pytest.raises(ValueError, match=r"a and b .*a \(2, 3\) and b \(4, 2\)"):
        int_matmul(i8, np.zeros((4, 2), dtype=np.int8))
    with pytest.raises(TypeError, match="a must be an array of integers"):
        int_matmul(i8.astype(np.float32), i8.T)
    with pytest.raises(TypeError, match="b must be an array of integers"):
        int_matmul(i8, np.ones((3, 2)))
    with pytest.raises(TypeError, match="b must be an integer array of at most 16 bits"):
        int_matmul(i8, np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(TypeError, match="a .*at most 16 bits"):
        int_matmul([[1, 2]], [[1], [2]])  # lists become int64
    with pytest.raises(TypeError, match="a"):
        int_matmul(np.ones((2, 2), dtype=bool), np.ones((2, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="a must be 1-D or 2-D"):
        int_matmul(np.zeros((2, 2, 2), dtype=np.int8), i8)
    with pytest.raises(ValueError, match="b must be 1-D or 2-D"):
        int_matmul(i8, np.int8(3))
