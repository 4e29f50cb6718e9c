"""Tests of qlib.methods.bias_correction: empirical bias correction of a quantized linear layer."""

import numpy as np
import pytest

import qlib
from qlib.methods.bias_correction import bias_correction


def test_by_hand():
    # y = x W^T + b, W = [[1, 2], [0, -1]], W_hat = [[1.5, 2], [0, -0.75]], E[x] = mean([1, 3], [3, 1]) = [2, 2]
    # (W_hat - W) E[x] = [0.5 * 2, 0.25 * 2] = [1, 0.5], so b' = [0.25 - 1, -1 - 0.5] = [-0.75, -1.5]
    w = np.array([[1.0, 2.0], [0.0, -1.0]])
    w_hat = np.array([[1.5, 2.0], [0.0, -0.75]])
    x = np.array([[1.0, 3.0], [3.0, 1.0]])
    np.testing.assert_array_equal(bias_correction(w, w_hat, np.array([0.25, -1.0]), x), [-0.75, -1.5])
    np.testing.assert_array_equal(bias_correction(w, w_hat, None, x), [-1.0, -0.5])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_output_error_vanishes_on_the_calibration_inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.0, (400, 24))  # a nonzero mean input: quantization biases the output
    w = rng.standard_normal((10, 24))
    b = rng.standard_normal(10)
    w_hat = qlib.fake_quantize(w, qlib.calibrate(w, bits=3, symmetric=True, axis=0))
    b_new = bias_correction(w, w_hat, b, x)
    before = np.mean(x @ w_hat.T + b - (x @ w.T + b), axis=0)
    after = np.mean(x @ w_hat.T + b_new - (x @ w.T + b), axis=0)
    assert np.abs(before).max() > 1e-2
    np.testing.assert_allclose(after, 0.0, atol=1e-12)


def test_dtypes_and_batched_inputs():
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 1.0, (2, 50, 8)).astype(np.float32)
    w = rng.standard_normal((5, 8)).astype(np.float32)
    w_hat = qlib.fake_quantize(w, qlib.calibrate(w, bits=4, symmetric=True, axis=0))
    b = rng.standard_normal(5).astype(np.float32)
    out = bias_correction(w, w_hat, b, x)
    assert out.dtype == np.float32 and out.shape == (5,)
    expected = b.astype(np.float64) - (w_hat.astype(np.float64) - w) @ x.reshape(-1, 8).mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert bias_correction(w, w_hat, None, x).dtype == np.float32
    assert bias_correction(w.astype(np.float64), w_hat, None, x).dtype == np.float64


def test_errors():
    w = np.ones((3, 4))
    x = np.ones((5, 4))
    b = np.zeros(3)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        bias_correction(np.ones(4), np.ones(4), b, x)
    with pytest.raises(ValueError, match=r"weight_hat must have the shape of weight \(3, 4\)"):
        bias_correction(w, np.ones((4, 3)), b, x)
    with pytest.raises(ValueError, match=r"bias must have shape \(out_features,\) = \(3,\)"):
        bias_correction(w, w, np.zeros(4), x)
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 4\)"):
        bias_correction(w, w, b, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 4\)"):
        bias_correction(w, w, b, np.ones(4))
    with pytest.raises(TypeError, match="bias must be a floating-point array"):
        bias_correction(w, w, np.zeros(3, dtype=int), x)
    with pytest.raises(ValueError, match="inputs must be finite"):
        bias_correction(w, w, b, np.full((5, 4), np.inf))
