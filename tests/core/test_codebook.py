"""Tests for qlib.core.codebook: k-means (Lloyd) codebook quantization, nearest-codeword assignment."""

import dataclasses

import numpy as np
import pytest

import qlib
from qlib.core.codebook import CodebookQuantized, assign_to_codebook, kmeans_quantize


def weighted_mse(x, x_hat, w=None):
    d2 = (np.asarray(x, np.float64) - np.asarray(x_hat, np.float64)) ** 2
    return float(np.average(d2, weights=w))


def slow_lloyd(x, c, iters):
    """Reference: Lloyd's algorithm with a full distance matrix, no empty clusters expected."""
    x = np.asarray(x, np.float64).ravel()
    c = np.array(c, np.float64)
    for _ in range(iters):
        idx = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        new = np.array([x[idx == j].mean() for j in range(c.size)])
        if np.array_equal(new, c):
            break
        c = new
    return c


# --------------------------------------------------------------------------- assignment

def test_assign_to_codebook_matches_brute_force():
    rng = np.random.default_rng(0)
    cb = np.sort(rng.normal(size=16))
    x = rng.normal(size=(50, 7)) * 2
    idx = assign_to_codebook(x, cb)
    assert idx.dtype == np.uint8 and idx.shape == x.shape
    np.testing.assert_array_equal(idx, np.argmin(np.abs(x[..., None] - cb), axis=-1))


def test_assign_to_codebook_ties_go_to_the_lower_entry_and_dtype_widens():
    assert assign_to_codebook([0.5, 1.5], [0.0, 1.0, 2.0]).tolist() == [0, 1]
    assert assign_to_codebook([1.0], [0.0, 1.0, 1.0, 2.0]).tolist() == [1]
    assert assign_to_codebook([3.0], np.arange(300.0)).dtype == np.uint16


@pytest.mark.parametrize("cb, match", [
    ([[0.0, 1.0]], "1-D"),
    ([1.0, 0.0], "sorted"),
    ([], "empty"),
    ([0.0, np.nan], "finite"),
])
def test_assign_to_codebook_rejects_bad_codebooks(cb, match):
    with pytest.raises(ValueError, match=match):
        assign_to_codebook([0.0], cb)


# --------------------------------------------------------------------------- k-means

@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_exactly_k_distinct_values_are_recovered_with_zero_error(bits):
    rng = np.random.default_rng(bits)
    k = 1 << bits
    # float32-representable values with gaps that leave linear-init clusters empty
    values = np.sort(np.round(rng.standard_cauchy(k) * 8) / 8 + np.arange(k) * 1e-2).astype(np.float32)
    values = np.unique(values)
    assert values.size == k
    x = rng.permutation(np.repeat(values, rng.integers(1, 20, size=k)))
    cq = kmeans_quantize(x, bits)
    np.testing.assert_array_equal(cq.codebook, values)
    assert cq.converged
    np.testing.assert_array_equal(cq.dequantize(), x)
    np.testing.assert_array_equal(cq.codebook[cq.indices], x)


def test_mse_never_increases_over_iterations():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=3000), rng.standard_t(2, size=1000) * 3]).astype(np.float32)
    for init in ("linear", "density"):
        errors = [weighted_mse(x, kmeans_quantize(x, 3, iters=t, init=init).dequantize()) for t in range(25)]
        diffs = np.diff(errors)
        assert np.all(diffs <= 1e-9 * errors[0]), (init, errors)
        assert errors[-1] < errors[0] * 0.9  # and it does improve


def test_matches_slow_reference_lloyd():
    rng = np.random.default_rng(2)
    x = rng.normal(size=2000)
    cq = kmeans_quantize(x, 2, iters=200)
    ref = slow_lloyd(x, np.linspace(x.min(), x.max(), 4), 200)
    np.testing.assert_allclose(cq.codebook, ref, rtol=1e-6)
    assert cq.converged and cq.n_iter < 200


def test_iterations_counted_and_unconverged_flag():
    x = np.random.default_rng(3).normal(size=5000)
    cq0 = kmeans_quantize(x, 3, iters=0)
    assert cq0.n_iter == 0 and not cq0.converged
    np.testing.assert_allclose(cq0.codebook, np.linspace(x.min(), x.max(), 8), rtol=1e-6)
    cq1 = kmeans_quantize(x, 3, iters=1)
    assert cq1.n_iter == 1 and not cq1.converged
    full = kmeans_quantize(x, 3, iters=1000)
    assert full.converged and full.n_iter < 1000
    again = kmeans_quantize(x, 3, iters=full.n_iter)
    np.testing.assert_array_equal(again.codebook, full.codebook)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_beats_uniform_minmax_on_gaussian_data(bits):
    x = np.random.default_rng(4).normal(size=20000).astype(np.float32)
    uniform = qlib.fake_quantize(x, qlib.calibrate(x, bits=bits))
    cq = kmeans_quantize(x, bits)
    assert weighted_mse(x, cq.dequantize()) <= weighted_mse(x, uniform)
    assert np.unique(cq.indices).size == 1 << bits


def test_one_bit_splits_at_the_midpoint_of_two_means():
    x = np.array([-3.0, -1.0, 0.5, 2.0, 4.0])
    cq = kmeans_quantize(x, 1)
    # linear init -3, 4 -> split at 0.5 (0.5 goes to the lower level) -> means -7/6, 3 -> split 0.9167
    np.testing.assert_allclose(cq.codebook, [np.mean([-3, -1, 0.5]), 3.0], rtol=1e-7)
    assert cq.indices.tolist() == [0, 0, 0, 1, 1] and cq.converged


def test_constant_and_few_valued_input():
    cq = kmeans_quantize(np.full((3, 4), 2.5), 2)
    np.testing.assert_array_equal(cq.dequantize(), np.full((3, 4), 2.5, np.float32))
    cq = kmeans_quantize([0.0, 1.0, 1.0, 0.0], 3)  # 2 values, 8 levels: both exact, the rest unused
    np.testing.assert_array_equal(cq.dequantize(), [0.0, 1.0, 1.0, 0.0])
    assert np.all(np.diff(cq.codebook) >= 0)


def test_sample_weight_moves_levels_to_weighted_means():
    x = np.array([0.0, 1.0, 10.0, 11.0])
    w = np.array([3.0, 1.0, 1.0, 0.0])
    cq = kmeans_quantize(x, 1, sample_weight=w)
    np.testing.assert_allclose(cq.codebook, [0.25, 10.0])
    # a zero-weight value is assigned but does not pull its level
    assert cq.indices.tolist() == [0, 0, 1, 1]
    ones = kmeans_quantize(x, 1, sample_weight=np.ones(4))
    np.testing.assert_array_equal(ones.codebook, kmeans_quantize(x, 1).codebook)


def test_density_and_random_init():
    x = np.random.default_rng(5).normal(size=4000)
    d = kmeans_quantize(x, 2, init="density", iters=0)
    np.testing.assert_allclose(d.codebook, np.quantile(x, [1 / 8, 3 / 8, 5 / 8, 7 / 8]), atol=0.01)
    r1 = kmeans_quantize(x, 2, init="random", rng=np.random.default_rng(0))
    r2 = kmeans_quantize(x, 2, init="random", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r1.codebook, r2.codebook)


def test_result_is_frozen_readonly_and_sized():
    x = np.random.default_rng(6).normal(size=(30, 10)).astype(np.float32)
    cq = kmeans_quantize(x, 3)
    assert isinstance(cq, CodebookQuantized)
    assert cq.codebook.dtype == np.float32 and cq.codebook.shape == (8,)
    assert np.all(np.diff(cq.codebook) > 0)
    assert cq.indices.dtype == np.uint8 and cq.indices.shape == x.shape
    assert cq.dequantize().dtype == np.float32
    assert cq.nbytes == qlib.packed_nbytes(300, 3) + 8 * 4 == 113 + 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        cq.bits = 4
    with pytest.raises(ValueError):
        cq.indices[0, 0] = 1
    assert "bits=3" in repr(cq)


def test_deterministic():
    x = np.random.default_rng(7).standard_t(3, size=10000)
    a, b = kmeans_quantize(x, 4), kmeans_quantize(x.copy(), 4)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=[1.0, np.inf], bits=2), ValueError, "finite"),
    (dict(x=[], bits=2), ValueError, "empty"),
    (dict(x=["a"], bits=2), TypeError, "x must be"),
    (dict(x=[1.0], bits=0), ValueError, r"bits must be an integer in \[1, 8\]"),
    (dict(x=[1.0], bits=9), ValueError, "bits"),
    (dict(x=[1.0], bits=2.0), TypeError, "bits must be an integer"),
    (dict(x=[1.0], bits=2, iters=-1), ValueError, "iters"),
    (dict(x=[1.0], bits=2, init="kmeans++"), ValueError, "init must be one of"),
    (dict(x=[1.0], bits=2, init="random"), TypeError, "rng must be a numpy.random.Generator"),
    (dict(x=[1.0], bits=2, rng=np.random.default_rng(0)), ValueError, "rng is used only"),
    (dict(x=[1.0, 2.0], bits=2, sample_weight=[1.0]), ValueError, "sample_weight must have the shape"),
    (dict(x=[1.0, 2.0], bits=2, sample_weight=[1.0, -1.0]), ValueError, "non-negative"),
    (dict(x=[1.0, 2.0], bits=2, sample_weight=[0.0, 0.0]), ValueError, "not all zero"),
])
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kmeans_quantize(**kwargs)
