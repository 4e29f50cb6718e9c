"""Tests of qlib.methods.outliers: synthetic outlier activations, LLM.int8() and SmoothQuant."""

import math

import numpy as np
import pytest

from qlib.methods.outliers import (
    llm_int8_matmul,
    outlier_activations,
    smooth,
    smoothquant_matmul,
    smoothquant_scales,
)
from qlib.methods.quantized_matmul import quantized_matmul


def example(seed=0, tokens=256, channels=512, out=512, n_outliers=8):
    """The chapter's setting: (256 tokens x 512 in) activations, a (512 out x 512 in) Gaussian weight."""
    rng = np.random.default_rng(seed)
    x, idx = outlier_activations(rng, tokens, channels, n_outliers=n_outliers)
    w = (rng.standard_normal((out, channels)) / np.sqrt(channels)).astype(np.float32)
    return x, w, idx, x.astype(np.float64) @ w.astype(np.float64).T


def rel_err(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


# ----------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------


def test_outlier_activations_shape_and_channels():
    x, idx = outlier_activations(np.random.default_rng(0), 1000, 64, n_outliers=5)
    assert x.shape == (1000, 64) and x.dtype == np.float32
    assert idx.dtype == np.int64 and len(idx) == 5 and np.all(np.diff(idx) > 0)
    std = x.std(axis=0)
    others = np.delete(std, idx)
    np.testing.assert_allclose(others, 1.0, atol=0.1)  # N(0, 1) elsewhere
    assert np.all((std[idx] > 20 * 0.9) & (std[idx] < 100 * 1.1))  # factors in [20, 100]


def test_outlier_activations_is_seeded_and_edge_cases():
    a, ia = outlier_activations(np.random.default_rng(3), 4, 8, n_outliers=2, scale_range=(5, 5))
    b, ib = outlier_activations(np.random.default_rng(3), 4, 8, n_outliers=2, scale_range=[5, 5])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    _, none = outlier_activations(np.random.default_rng(0), 4, 8, n_outliers=0)
    assert none.size == 0
    _, every = outlier_activations(np.random.default_rng(0), 4, 8, n_outliers=8)
    np.testing.assert_array_equal(every, np.arange(8))


def test_outlier_activations_refuses():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        outlier_activations(0, 4, 8, n_outliers=1)
    with pytest.raises(ValueError, match=r"n_outliers must be an integer in \[0, 8\], got 9"):
        outlier_activations(rng, 4, 8, n_outliers=9)
    with pytest.raises(ValueError, match="tokens must be an integer >= 1"):
        outlier_activations(rng, 0, 8, n_outliers=1)
    with pytest.raises(TypeError, match="scale_range must be a pair"):
        outlier_activations(rng, 4, 8, n_outliers=1, scale_range=20)
    with pytest.raises(ValueError, match=r"scale_range\[1\] must be a finite real number in \[20.0, inf\]"):
        outlier_activations(rng, 4, 8, n_outliers=1, scale_range=(20, 10))
    with pytest.raises(ValueError, match=r"scale_range\[0\] must be a finite real number in \(0, inf\]"):
        outlier_activations(rng, 4, 8, n_outliers=1, scale_range=(0, 10))


# ----------------------------------------------------------------------------
# LLM.int8()
# ----------------------------------------------------------------------------


def slow_llm_int8(x, w, threshold):
    """The decomposition written out: columns by a loop, int8 part by explicit per-row absmax scales."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    cols = [k for k in range(x.shape[1]) if np.max(np.abs(x[:, k])) >= threshold]
    rest = [k for k in range(x.shape[1]) if k not in cols]
    y = x[:, cols] @ w[:, cols].T
    xr, wr = x[:, rest], w[:, rest]
    sx = np.maximum(np.abs(xr).max(axis=1).astype(np.float32) / np.float32(127), np.finfo(np.float32).eps)
    sw = np.maximum(np.abs(wr).max(axis=1).astype(np.float32) / np.float32(127), np.finfo(np.float32).eps)
    qx = np.clip(np.rint(xr / sx[:, None].astype(np.float64)), -127, 127)
    qw = np.clip(np.rint(wr / sw[:, None].astype(np.float64)), -127, 127)
    y += (qx * sx[:, None].astype(np.float64)) @ (qw * sw[:, None].astype(np.float64)).T
    return y, np.array(cols)


def test_llm_int8_matches_slow_reference():
    x, w, idx, _ = example(seed=1, tokens=32, channels=64, out=16, n_outliers=3)
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    y, cols = llm_int8_matmul(x, w, threshold=6.0)
    y_ref, cols_ref = slow_llm_int8(x, w, 6.0)
    np.testing.assert_array_equal(cols, cols_ref)
    np.testing.assert_array_equal(cols, idx)  # the generated outlier channels, nothing else
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12 * np.abs(y_ref).max())


def test_threshold_counts_equal_magnitudes_and_either_sign():
    x = np.array([[1.0, -6.0, 5.99], [0.5, 0.0, 0.0]])
    w = np.eye(3)
    _, cols = llm_int8_matmul(x, w)
    np.testing.assert_array_equal(cols, [1])
    _, cols = llm_int8_matmul(x, w, threshold=0.5)
    np.testing.assert_array_equal(cols, [0, 1, 2])


def test_threshold_inf_is_plain_vector_wise_int8():
    x, w, _, _ = example(seed=2, tokens=64, channels=128, out=32)
    y, cols = llm_int8_matmul(x, w, threshold=math.inf)
    assert cols.size == 0 and cols.dtype == np.int64
    np.testing.assert_array_equal(y, quantized_matmul(x, w, x_granularity="token", w_granularity="channel"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_zero_is_the_float_matmul(dtype):
    x, w, _, _ = example(seed=3, tokens=64, channels=128, out=32)
    x, w = x.astype(dtype), w.astype(dtype)
    y, cols = llm_int8_matmul(x, w, threshold=0)
    np.testing.assert_array_equal(cols, np.arange(128))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_llm_int8_far_beats_per_tensor_int8_on_outlier_data():
    x, w, idx, ref = example()
    y, cols = llm_int8_matmul(x, w)
    np.testing.assert_array_equal(cols, idx)
    per_tensor = rel_err(quantized_matmul(x, w), ref)
    vector_wise = rel_err(quantized_matmul(x, w, x_granularity="token", w_granularity="channel"), ref)
    decomposed = rel_err(y, ref)
    assert decomposed < per_tensor / 20  # measured: 0.0012 vs 0.084
    assert decomposed < vector_wise / 10  # the outliers still set every token's scale without decomposition


def test_llm_int8_refuses():
    x, w, _, _ = example(tokens=4, channels=8, out=2)
    for bad in (-1.0, math.nan, -math.inf):
        with pytest.raises(ValueError, match="threshold must be a finite real number in"):
            llm_int8_matmul(x, w, threshold=bad)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        llm_int8_matmul(x, w, threshold=True)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        llm_int8_matmul(x, w, bits=1)
    with pytest.raises(ValueError, match="same in_features"):
        llm_int8_matmul(x, w.T)


# ----------------------------------------------------------------------------
# SmoothQuant
# ----------------------------------------------------------------------------


def test_smoothquant_scales_formula():
    xm = np.array([16.0, 1.0, 9.0, 0.0, 3.0])
    wm = np.array([1.0, 4.0, 0.25, 2.0, 0.0])
    np.testing.assert_allclose(smoothquant_scales(xm, wm), [4.0, 0.5, 6.0, 1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(smoothquant_scales(xm, wm, alpha=0.25),
                               [16 ** 0.25 / 1.0, 1.0 / 4 ** 0.75, 9 ** 0.25 / 0.25 ** 0.75, 1.0, 1.0], rtol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_smoothquant_maxima_after_smoothing(alpha):
    """max|X_k / s_k| = (mx mw)^(1-a), max|W_k s_k| = (mx mw)^a: alpha=1 gives activations max 1, alpha=0 weights."""
    x, w, _, _ = example(seed=4, tokens=64, channels=128, out=32)
    x, w = x.astype(np.float64), w.astype(np.float64)
    mx, mw = np.abs(x).max(axis=0), np.abs(w).max(axis=0)
    xs, ws = smooth(x, w, smoothquant_scales(mx, mw, alpha))
    np.testing.assert_allclose(np.abs(xs).max(axis=0), mx ** (1 - alpha) * mw ** (1 - alpha), rtol=1e-12)
    np.testing.assert_allclose(np.abs(ws).max(axis=0), mx ** alpha * mw ** alpha, rtol=1e-12)
    if alpha == 1.0:
        np.testing.assert_allclose(np.abs(xs).max(axis=0), 1.0, rtol=1e-12)
    if alpha == 0.0:
        np.testing.assert_allclose(np.abs(ws).max(axis=0), 1.0, rtol=1e-12)
    if alpha == 0.5:
        np.testing.assert_allclose(np.abs(xs).max(axis=0), np.abs(ws).max(axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_smooth_leaves_the_product_unchanged(dtype, rtol):
    x, w, _, _ = example(seed=5, tokens=64, channels=128, out=32)
    x, w = x.astype(dtype), w.astype(dtype)
    s = smoothquant_scales(np.abs(x).max(axis=0), np.abs(w).max(axis=0))
    xs, ws = smooth(x, w, s)
    assert xs.dtype == ws.dtype == dtype
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    got = xs.astype(np.float64) @ ws.astype(np.float64).T
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    np.testing.assert_array_equal(ws, w * s.astype(dtype)[None, :])  # columns of w (out, in) are scaled
    np.testing.assert_array_equal(xs, x / s.astype(dtype)[None, :])


def test_smoothquant_far_beats_per_tensor_int8_and_alpha_has_an_interior_minimum():
    x, w, _, ref = example()
    plain = rel_err(quantized_matmul(x, w), ref)
    errors = {a: rel_err(smoothquant_matmul(x, w, alpha=a), ref) for a in (0.0, 0.5, 1.0)}
    assert errors[0.5] < plain / 3  # measured: 0.017 vs 0.084
    assert errors[0.5] < errors[0.0] / 3 and errors[0.5] < errors[1.0] / 3  # measured 0.082, 0.085
    # alpha = 0 still moves a little: it normalizes the weight columns, which barely helps
    assert errors[0.0] > plain / 2


def test_smoothquant_matmul_is_the_composition_and_takes_calibration_maxima():
    big, w, _, _ = example(seed=6, tokens=512)
    calib, x = big[:256], big[256:]  # maxima from calibration tokens, applied to other tokens
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    mx = np.abs(calib).max(axis=0)
    s = smoothquant_scales(mx, np.abs(w).max(axis=0), 0.5)
    xs, ws = smooth(x, w, s)
    got = smoothquant_matmul(x, w, x_absmax=mx, x_granularity="token")
    np.testing.assert_array_equal(got, quantized_matmul(xs, ws, x_granularity="token"))
    plain = rel_err(quantized_matmul(x, w, x_granularity="token"), ref)
    assert rel_err(got, ref) < plain / 2  # measured: 0.012 vs 0.036


def test_smoothquant_refuses():
    with pytest.raises(ValueError, match="alpha must be a finite real number in"):
        smoothquant_scales([1.0], [1.0], alpha=1.5)
    with pytest.raises(ValueError, match="x_absmax must be non-negative"):
        smoothquant_scales([-1.0], [1.0])
    with pytest.raises(ValueError, match="x_absmax and w_absmax must have the same shape"):
        smoothquant_scales([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="w_absmax must be 1-D"):
        smoothquant_scales([1.0], [[1.0]])
    with pytest.raises(ValueError, match="smoothing factors over- or underflow"):
        smoothquant_scales([1e308], [5e-324])
    x, w = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match=r"s must have shape \(3,\)"):
        smooth(x, w, [1.0, 2.0])
    with pytest.raises(ValueError, match="s must be positive"):
        smooth(x, w, [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="s must be positive and finite in float32"):
        smooth(x.astype(np.float32), w.astype(np.float32), [1.0, 1e300, 2.0])



def test_smoothquant_static_scales_come_from_the_calibration_batch():
    import qlib
    from qlib.methods.outliers import outlier_activations, smoothquant_matmul

    x_all, _ = outlier_activations(np.random.default_rng(3), 128, 64, n_outliers=3)
    x_cal, x = x_all[:64], x_all[64:]
    w = np.random.default_rng(4).normal(size=(32, 64)).astype(np.float32) / 8
    # the same computation written out with public qlib calls
    s = qlib.smoothquant_scales(np.abs(x_cal).max(axis=0), np.abs(w).max(axis=0), 0.5)
    x_cal_s, w_s = qlib.smooth(x_cal, w, s)
    qx, qw = qlib.calibrate(x_cal_s, symmetric=True), qlib.calibrate(w_s, symmetric=True, axis=0)
    x_s, _ = qlib.smooth(x, w, s)
    expected = qlib.rescaled_int_matmul(qlib.quantize(x_s, qx), qlib.quantize(w_s, qw), qx, qw)
    got = smoothquant_matmul(x, w, x_calibration=x_cal, w_granularity="channel")
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert not np.array_equal(got, smoothquant_matmul(x, w, w_granularity="channel"))  # dynamic differs
    with pytest.raises(ValueError, match="not both"):
        smoothquant_matmul(x, w, x_calibration=x_cal, x_absmax=np.ones(64))
    with pytest.raises(ValueError, match="per tensor"):
        smoothquant_matmul(x, w, x_calibration=x_cal, x_granularity="token")
