"""Tests of qlib.methods.quantized_matmul: symmetric integer operands, one exact integer GEMM, rescaling."""

import itertools

import numpy as np
import pytest

import qlib
from qlib.methods.quantized_matmul import quantized_matmul, rescaled_int_matmul

GRANULARITIES = list(itertools.product(["tensor", "token"], ["tensor", "channel"]))


def operands(rng, tokens=7, k=13, out=5, dtype=np.float64):
    x = rng.normal(size=(tokens, k)) * rng.uniform(0.1, 10, size=(tokens, 1))  # rows of different sizes
    w = rng.normal(size=(out, k)) * rng.uniform(0.1, 10, size=(out, 1))
    return x.astype(dtype), w.astype(dtype)


def quantizers(x, w, x_gran, w_gran, x_bits=8, w_bits=8):
    qx = qlib.calibrate(x, bits=x_bits, symmetric=True, axis=0 if x_gran == "token" else None)
    qw = qlib.calibrate(w, bits=w_bits, symmetric=True, axis=0 if w_gran == "channel" else None)
    return qx, qw


def slow_reference(x, w, qx, qw):
    """sum_k (s_i q_ik)(t_j r_jk), one Python float at a time."""
    cx, cw = qlib.quantize(x, qx), qlib.quantize(w, qw)
    sx = np.broadcast_to(np.asarray(qx.scale, dtype=np.float64).reshape(-1), (x.shape[0],))
    sw = np.broadcast_to(np.asarray(qw.scale, dtype=np.float64).reshape(-1), (w.shape[0],))
    y = np.zeros((x.shape[0], w.shape[0]))
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            y[i, j] = sum((float(sx[i]) * int(cx[i, k])) * (float(sw[j]) * int(cw[j, k])) for k in range(x.shape[1]))
    return y


@pytest.mark.parametrize("x_gran, w_gran", GRANULARITIES)
@pytest.mark.parametrize("bits", [(8, 8), (4, 8), (8, 4), (12, 6)])
def test_factorization_identity(x_gran, w_gran, bits):
    """s_x[:, None] * int_matmul(q_x, q_w.T) * s_w[None, :] == dequantize(x) @ dequantize(w).T."""
    x, w = operands(np.random.default_rng(1))
    qx, qw = quantizers(x, w, x_gran, w_gran, *bits)
    y = quantized_matmul(x, w, x_bits=bits[0], w_bits=bits[1], x_granularity=x_gran, w_granularity=w_gran)
    np.testing.assert_allclose(y, slow_reference(x, w, qx, qw), rtol=1e-12, atol=0)
    deq = qlib.dequantize(qlib.quantize(x, qx), qx).astype(np.float64) @ \
        qlib.dequantize(qlib.quantize(w, qw), qw).astype(np.float64).T
    np.testing.assert_allclose(y, deq, rtol=1e-6, atol=1e-6 * np.abs(deq).max())


def test_rescaled_int_matmul_by_hand():
    qx = qlib.Quantizer(np.array([0.5, 2.0]), axis=0, narrow_range=True)
    qw = qlib.Quantizer(np.array([0.25, 1.0, 4.0]), axis=0, narrow_range=True)
    cx = np.array([[1, 2], [-3, 4]], dtype=np.int8)
    cw = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8)
    # acc = [[1, 2, 3], [-3, 4, 1]]
    expected = np.array([[0.5 * 0.25 * 1, 0.5 * 1 * 2, 0.5 * 4 * 3], [2 * 0.25 * -3, 2 * 1 * 4, 2 * 4 * 1]])
    y = rescaled_int_matmul(cx, cw, qx, qw)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, expected)


def test_integer_accumulation_is_exact_at_the_int8_extremes():
    """-127 * -127 * 1024 terms: an accumulator beyond float16/bfloat16 range of exact integers."""
    cx = np.full((2, 1024), -127, dtype=np.int8)
    cw = np.full((3, 1024), -127, dtype=np.int8)
    y = rescaled_int_matmul(cx, cw, qlib.Quantizer(1.0, narrow_range=True), qlib.Quantizer(1.0, narrow_range=True))
    assert np.all(y == 1024 * 127 * 127)


def test_per_token_scales_isolate_rows():
    x, w = operands(np.random.default_rng(2))
    big = x.copy()
    big[0] *= 1000.0
    tok = quantized_matmul(x, w, x_granularity="token", w_granularity="channel")
    tok_big = quantized_matmul(big, w, x_granularity="token", w_granularity="channel")
    np.testing.assert_array_equal(tok[1:], tok_big[1:])  # other rows' scales are untouched
    ten = quantized_matmul(x, w, w_granularity="channel")
    ten_big = quantized_matmul(big, w, w_granularity="channel")
    ref = x[1:] @ w.T
    assert np.linalg.norm(ten_big[1:] - ref) > 20 * np.linalg.norm(ten[1:] - ref)


def test_finer_granularity_and_more_bits_reduce_error():
    rng = np.random.default_rng(3)
    x, w = operands(rng, tokens=64, k=128, out=32)
    x *= 10.0 ** rng.uniform(-2, 1, size=(64, 1))  # token norms over three decades
    w *= 10.0 ** rng.uniform(-2, 1, size=(32, 1))
    ref = x @ w.T

    def err(**kw):
        return np.linalg.norm(quantized_matmul(x, w, **kw) - ref) / np.linalg.norm(ref)

    assert err(x_granularity="token", w_granularity="channel") < 0.5 * err()
    assert err(x_bits=4, w_bits=4) > 8 * err() > 8 * err(x_bits=16, w_bits=16)


def test_dtypes():
    x, w = operands(np.random.default_rng(4), dtype=np.float32)
    assert quantized_matmul(x, w).dtype == np.float32
    assert quantized_matmul(x.astype(np.float16), w.astype(np.float16)).dtype == np.float32
    assert quantized_matmul(x.astype(np.float64), w).dtype == np.float64


def test_per_input_channel_scales_do_not_factor():
    """With one scale per column of x, y_ij / acc_ij is not s_i t_j for any s, t: the ratio matrix is not rank 1."""
    rng = np.random.default_rng(5)
    x, w = operands(rng)
    x = x * np.array([1.0] * 12 + [50.0])  # one outlier input channel
    qx = qlib.calibrate(x, symmetric=True, axis=1)  # per input channel
    qw = qlib.calibrate(w, symmetric=True)
    cx, cw = qlib.quantize(x, qx), qlib.quantize(w, qw)
    y = (cx * qx.scale.astype(np.float64)) @ (cw * np.float64(qw.scale)).T
    acc = qlib.int_matmul(cx, cw.T).astype(np.float64)
    ratio = y / acc
    sv = np.linalg.svd(ratio, compute_uv=False)
    assert sv[1] > 1e-3 * sv[0]  # a rank-1 outer product s t^T would have sv[1] ~ 1e-16 * sv[0]
    with pytest.raises(ValueError, match="per-channel along axis=1: its scale varies along the summation index"):
        rescaled_int_matmul(cx, cw, qx, qw)


@pytest.mark.parametrize("kw, match", [
    (dict(x_granularity="channel"), r"x_granularity='channel' \(one scale per input channel of x\) is refused"),
    (dict(x_granularity="input_channel"), "does not factor out of sum_k"),
    (dict(w_granularity="input_channel"), r"w_granularity='input_channel' .*SmoothQuant: qlib.smooth"),
    (dict(x_granularity="row"), r"x_granularity must be one of \('tensor', 'token'\), got 'row'"),
    (dict(w_granularity="token"), r"w_granularity must be one of \('tensor', 'channel'\)"),
    (dict(x_bits=1), "x_bits must be an integer in"),
    (dict(w_bits=17), "w_bits must be an integer in"),
])
def test_quantized_matmul_refuses(kw, match):
    x, w = operands(np.random.default_rng(6))
    with pytest.raises(ValueError, match=match):
        quantized_matmul(x, w, **kw)


def test_quantized_matmul_bad_operands():
    x, w = operands(np.random.default_rng(7))
    with pytest.raises(ValueError, match="same in_features"):
        quantized_matmul(x, w[:, :-1])
    with pytest.raises(ValueError, match=r"x must be 2-D, \(tokens, in_features\)"):
        quantized_matmul(x[0], w)
    with pytest.raises(ValueError, match="w must be 2-D"):
        quantized_matmul(x, w[None])
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        quantized_matmul(np.ones((2, 13), dtype=np.int64), w)
    with pytest.raises(ValueError, match="w must be finite"):
        quantized_matmul(x, np.full_like(w, np.nan))
    with pytest.raises(TypeError, match="x_granularity must be a string"):
        quantized_matmul(x, w, x_granularity=0)
    with pytest.raises(TypeError, match="x_bits must be an integer"):
        quantized_matmul(x, w, x_bits=8.0)


def test_rescaled_int_matmul_refuses():
    cx = np.ones((2, 3), dtype=np.int8)
    cw = np.ones((4, 3), dtype=np.int8)
    tensor = qlib.Quantizer(0.5, narrow_range=True)
    with pytest.raises(TypeError, match="x_quantizer must be a qlib.Quantizer, got float"):
        rescaled_int_matmul(cx, cw, 0.5, tensor)
    with pytest.raises(ValueError, match="w_quantizer is per-channel along axis=1"):
        rescaled_int_matmul(cx, cw, tensor, qlib.Quantizer(np.ones(3), axis=1))
    with pytest.raises(ValueError, match="x_quantizer is per-group"):
        rescaled_int_matmul(cx, cw, qlib.Quantizer(np.ones((2, 2)), axis=1, group_size=2), tensor)
    with pytest.raises(ValueError, match="w_quantizer must have zero point 0"):
        rescaled_int_matmul(cx, cw, tensor, qlib.Quantizer(0.5, 3))
    with pytest.raises(ValueError, match=r"x_quantizer must have 1 scale or one per token \(row of q_x\), 2, got 3"):
        rescaled_int_matmul(cx, cw, qlib.Quantizer(np.ones(3), axis=0), tensor)
    with pytest.raises(ValueError, match="q_x and q_w must have the same in_features"):
        rescaled_int_matmul(cx, cw[:, :2], tensor, tensor)
    with pytest.raises(TypeError, match="q_w must be an array of integers"):
        rescaled_int_matmul(cx, cw.astype(np.float32), tensor, tensor)
    with pytest.raises(ValueError, match="q_x must be 2-D"):
        rescaled_int_matmul(cx[0], cw, tensor, tensor)
