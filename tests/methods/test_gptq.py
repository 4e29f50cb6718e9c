"""Tests of qlib.methods.gptq: GPTQ, its round-to-nearest baseline and the layer output error."""

import numpy as np
import pytest

import qlib
from qlib.methods.gptq import QuantizedWeight, gptq_quantize, layer_output_error, round_to_nearest


def correlated_inputs(rng, n, in_features, noise=0.3):
    """Rows x = z M + noise: strongly correlated inputs, as a layer's activations are."""
    mix = rng.standard_normal((in_features, in_features)) / np.sqrt(in_features)
    return rng.standard_normal((n, in_features)) @ mix + noise * rng.standard_normal((n, in_features))


def hessian_of(x):
    return 2.0 * x.T @ x / x.shape[0]


def reference_gptq(w, h, *, bits, symmetric=True, group_size=None, method="minmax", damp=0.01, act_order=False):
    """The slow OBQ-style loop: one column at a time, with the explicit inverse Hessian of the
    columns not yet quantized, updated by the Schur complement that removes column j:

        w_F <- w_F - (w_j - q_j) / [H_F^-1]_jj * [H_F^-1]_{j,F}
        H_{F-j}^-1 = H_F^-1 - [H_F^-1]_{:,j} [H_F^-1]_{j,:} / [H_F^-1]_jj   (row and column j then 0)

    Codes and values from qlib.quantize / qlib.fake_quantize on each column. Returns
    (codes, dequantized weight, proxy loss, per-group quantizers by group index or the channel one).
    """
    w0 = np.array(w, dtype=np.float64)
    h = np.array(h, dtype=np.float64)
    n_in = w0.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w = w0.copy()
    w[:, dead] = 0
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n_in)
    hinv = np.linalg.inv(h + damp * np.mean(np.diag(h)) * np.eye(n_in))
    grid = dict(bits=bits, symmetric=symmetric, method=method, axis=0)
    quantizers = {} if group_size else {None: qlib.calibrate(w0, **grid)}
    codes = np.zeros(w0.shape, dtype=np.int64)
    loss = 0.0
    for j in order:
        key = None if group_size is None else j // group_size
        if key not in quantizers:  # the group's first column reached: its current weights
            quantizers[key] = qlib.calibrate(w[:, key * group_size: (key + 1) * group_size], **grid)
        q = quantizers[key]
        codes[:, j] = qlib.quantize(w[:, j], q)
        qv = qlib.fake_quantize(w[:, j], q)
        d = hinv[j, j]
        delta = w[:, j] - qv
        loss += 0.5 * float(delta @ delta) / d
        w -= np.outer(delta / d, hinv[j])
        w[:, j] = qv
        hinv -= np.outer(hinv[:, j], hinv[j]) / d
        hinv[j, :] = 0.0
        hinv[:, j] = 0.0
    return codes, w, loss, quantizers


# ----------------------------------------------------------------------------
# (a) uncorrelated inputs: GPTQ is round-to-nearest
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("group_size", [None, 4, 7])
@pytest.mark.parametrize("symmetric,method", [(True, "minmax"), (False, "minmax"), (True, "mse")])
@pytest.mark.parametrize("act_order", [False, True])
def test_diagonal_hessian_gives_round_to_nearest(dtype, group_size, symmetric, method, act_order):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((9, 20)).astype(dtype)
    h = np.diag(rng.uniform(0.5, 3.0, 20))
    grid = dict(bits=4, symmetric=symmetric, group_size=group_size, method=method)
    r = gptq_quantize(w, hessian=h, act_order=act_order, block_size=3, **grid)
    rtn = round_to_nearest(w, **grid)
    np.testing.assert_array_equal(r.codes, rtn.codes)
    np.testing.assert_array_equal(r.weight, rtn.weight)
    np.testing.assert_array_equal(r.quantizer.scale, rtn.quantizer.scale)
    np.testing.assert_array_equal(r.quantizer.zero_point, rtn.quantizer.zero_point)
    # and the baseline is qlib's own calibrate + quantize
    axis = 0 if group_size is None else 1
    q = qlib.calibrate(w, bits=4, symmetric=symmetric, axis=axis, group_size=group_size, method=method)
    np.testing.assert_array_equal(rtn.codes, qlib.quantize(w, q))


def test_uncorrelated_inputs_give_round_to_nearest():
    # each calibration row activates one input: X^T X is exactly diagonal
    rng = np.random.default_rng(1)
    x = np.zeros((60, 12))
    x[np.arange(60), np.arange(60) % 12] = rng.uniform(0.5, 2.0, 60)
    w = rng.standard_normal((5, 12))
    for group_size in (None, 4):
        r = gptq_quantize(w, x, bits=3, group_size=group_size)
        np.testing.assert_array_equal(r.codes, round_to_nearest(w, bits=3, group_size=group_size).codes)


# ----------------------------------------------------------------------------
# (b) a case worked out by hand
# ----------------------------------------------------------------------------


def test_two_weights_by_hand():
    # W = [[w1, w2]] = [[0.59375, 1.75]], H = [[a, b], [b, c]] = [[4, -1.5], [-1.5, 1]], no dampening.
    # Grid: 4-bit symmetric per channel, scale = max|w| / 7 = 0.25 (exact), codes in [-7, 7].
    # Column 1: q1 = 0.25 * round(0.59375 / 0.25 = 2.375) = 0.5 (code 2); w1 - q1 = 0.09375.
    # OBQ update of w2: w2 - (w1 - q1) [H^-1]_12 / [H^-1]_11, with H^-1 = [[c, -b], [-b, a]] / (ac - b^2):
    #   [H^-1]_12 / [H^-1]_11 = -b / c = 1.5, so w2 <- 1.75 - 1.5 * 0.09375 = 1.609375.
    # (GPTQ's form: H^-1 = U^T U with U_11 = 1/sqrt(1.75), U_12 = 1.5/sqrt(1.75), U_22 = 1;
    #  err1 = 0.09375 / U_11, w2 -= err1 * U_12 = 0.09375 * 1.5: the same.)
    # Column 2: q2 = 0.25 * round(1.609375 / 0.25 = 6.4375) = 1.5 (code 6), where round-to-nearest
    # keeps code 7. Proxy loss 1/2 (W - Q) H (W - Q)^T with W - Q = [0.09375, 0.25]:
    #   1/2 (4 * 0.09375^2 - 2 * 1.5 * 0.09375 * 0.25 + 0.25^2) = 1/2 * 0.02734375 = 0.013671875,
    # versus 1/2 * 4 * 0.09375^2 = 0.017578125 for round-to-nearest (W - Q = [0.09375, 0]).
    w = np.array([[0.59375, 1.75]])
    h = np.array([[4.0, -1.5], [-1.5, 1.0]])
    r = gptq_quantize(w, hessian=h, bits=4, damp=0.0)
    np.testing.assert_array_equal(r.codes, [[2, 6]])
    np.testing.assert_array_equal(r.weight, [[0.5, 1.5]])
    assert r.proxy_loss == pytest.approx(0.013671875, rel=1e-12)
    rtn = round_to_nearest(w, bits=4)
    np.testing.assert_array_equal(rtn.codes, [[2, 7]])
    d = w - rtn.weight
    assert 0.5 * (d @ h @ d.T).item() == pytest.approx(0.017578125)
    # act_order: H_11 = 4 > H_22 = 1, the same order; with the diagonal swapped, column 2 goes first,
    # is exact (code 7), and w1 is left alone: round-to-nearest
    h_swapped = np.array([[1.0, -1.5], [-1.5, 4.0]])
    r2 = gptq_quantize(w, hessian=h_swapped, bits=4, damp=0.0, act_order=True)
    np.testing.assert_array_equal(r2.order, [1, 0])
    np.testing.assert_array_equal(r2.codes, [[2, 7]])


def test_dampening_by_hand():
    # damp = 0.5: lambda = 0.5 * mean(4, 1) = 1.25, H + lambda I = [[5.25, -1.5], [-1.5, 2.25]];
    # the update ratio -b/c becomes 1.5 / 2.25 = 2/3: w2 <- 1.75 - 0.09375 * 2/3 = 1.6875 -> 6.75 -> code 7.
    w = np.array([[0.59375, 1.75]])
    h = np.array([[4.0, -1.5], [-1.5, 1.0]])
    r = gptq_quantize(w, hessian=h, bits=4, damp=0.5)
    np.testing.assert_array_equal(r.codes, [[2, 7]])
    hd = h + 1.25 * np.eye(2)
    d = w - r.weight
    assert r.proxy_loss == pytest.approx(0.5 * (d @ hd @ d.T).item(), rel=1e-12)


# ----------------------------------------------------------------------------
# (c) against the slow OBQ-style reference
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 3, 128])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("group_size", [None, 5, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(block_size, act_order, group_size, seed):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, 200, 22) * rng.uniform(0.2, 2.0, 22)  # unequal H_ii: act_order matters
    w = rng.standard_normal((7, 22))
    h = hessian_of(x)
    for symmetric, bits in ((True, 4), (False, 3)):
        r = gptq_quantize(w, x, bits=bits, symmetric=symmetric, group_size=group_size,
                          block_size=block_size, act_order=act_order)
        codes, w_ref, loss, quantizers = reference_gptq(w, h, bits=bits, symmetric=symmetric,
                                                        group_size=group_size, act_order=act_order)
        np.testing.assert_array_equal(r.codes, codes)
        np.testing.assert_array_equal(r.weight, w_ref.astype(np.float32))
        assert r.proxy_loss == pytest.approx(loss, rel=1e-9)
        if group_size is None:
            np.testing.assert_array_equal(r.quantizer.scale, quantizers[None].scale)
        else:
            scales = np.stack([quantizers[g].scale for g in range(len(quantizers))], axis=1)
            np.testing.assert_array_equal(r.quantizer.scale, scales)
        expected_order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(22)
        np.testing.assert_array_equal(r.order, expected_order)


def test_matches_reference_with_mse_calibration_and_dead_inputs():
    rng = np.random.default_rng(3)
    x = correlated_inputs(rng, 150, 16)
    x[:, [2, 9]] = 0.0  # two inputs never active
    w = rng.standard_normal((6, 16))
    for group_size in (None, 4):
        r = gptq_quantize(w, x, bits=3, method="mse", group_size=group_size, block_size=5, act_order=True)
        codes, w_ref, loss, _ = reference_gptq(w, hessian_of(x), bits=3, method="mse",
                                               group_size=group_size, act_order=True)
        np.testing.assert_array_equal(r.codes, codes)
        assert r.proxy_loss == pytest.approx(loss, rel=1e-9)
        np.testing.assert_array_equal(r.codes[:, [2, 9]], 0)  # dead columns are zeroed, as the reference code
        np.testing.assert_array_equal(r.weight[:, [2, 9]], 0.0)


def test_result_is_consistent():
    rng = np.random.default_rng(4)
    x = correlated_inputs(rng, 300, 30)
    w = rng.standard_normal((10, 30)).astype(np.float32)
    for group_size, n_scales in ((None, None), (8, 4), (30, 1), (64, 1)):
        r = gptq_quantize(w, x, bits=4, group_size=group_size, act_order=True, block_size=7)
        assert isinstance(r, QuantizedWeight)
        assert r.codes.dtype == np.int8 and r.codes.shape == w.shape
        assert r.weight.dtype == np.float32
        np.testing.assert_array_equal(r.weight, qlib.dequantize(r.codes, r.quantizer))
        assert np.abs(r.codes).max() <= 7  # the narrow symmetric grid
        if group_size is None:
            assert r.quantizer.axis == 0 and r.quantizer.scale.shape == (10,)
        else:
            assert r.quantizer.axis == 1 and r.quantizer.group_size == group_size
            assert r.quantizer.scale.shape == (10, n_scales)
        # W - W_hat = E U, U^T U = (H + lambda I)^-1: the proxy loss is 1/2 tr(dW (H + lambda I) dW^T)
        h = hessian_of(x)
        h_damped = h + 0.01 * np.mean(np.diag(h)) * np.eye(30)
        d = w.astype(np.float64) - r.weight
        assert r.proxy_loss == pytest.approx(0.5 * np.trace(d @ h_damped @ d.T), rel=1e-4)


def test_hessian_and_batched_inputs_agree():
    rng = np.random.default_rng(5)
    x = correlated_inputs(rng, 64, 12)
    w = rng.standard_normal((4, 12))
    a = gptq_quantize(w, x, bits=4)
    b = gptq_quantize(w, hessian=hessian_of(x), bits=4)
    c = gptq_quantize(w, x.reshape(4, 16, 12), bits=4)  # (batch, sequence, in)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.codes, c.codes)


def test_sixteen_bit_codes():
    rng = np.random.default_rng(6)
    x = correlated_inputs(rng, 64, 10)
    w = rng.standard_normal((3, 10))
    r = gptq_quantize(w, x, bits=12)
    assert r.codes.dtype == np.int16
    codes, _, _, _ = reference_gptq(w, hessian_of(x), bits=12)
    np.testing.assert_array_equal(r.codes, codes)


# ----------------------------------------------------------------------------
# (d) GPTQ beats round-to-nearest on correlated inputs
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [None, 16])
def test_gptq_beats_round_to_nearest(seed, bits, group_size):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, 512, 64).astype(np.float32)
    w = (rng.standard_normal((32, 64)) / 8).astype(np.float32)
    r = gptq_quantize(w, x, bits=bits, group_size=group_size)
    rtn = round_to_nearest(w, bits=bits, group_size=group_size)
    e_gptq = layer_output_error(w, r.weight, x)
    e_rtn = layer_output_error(w, rtn.weight, x)
    assert e_gptq < 0.8 * e_rtn
    assert gptq_quantize(w, x, bits=bits, group_size=group_size, act_order=True).weight.shape == w.shape


def test_layer_output_error_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    w = np.array([[1.0, 1.0], [0.0, 1.0]])
    w_hat = np.array([[1.0, 0.5], [0.0, 1.0]])
    # X W^T = [[1, 0], [2, 2]]: squared norm 9; X (W - W_hat)^T = [[0, 0], [1, 0]]: 1
    assert layer_output_error(w, w_hat, x) == pytest.approx(1 / 9)
    assert layer_output_error(w, w, x) == 0.0


# ----------------------------------------------------------------------------
# (e) errors
# ----------------------------------------------------------------------------


def test_bad_shapes_and_types():
    w = np.ones((3, 4))
    x = np.ones((5, 4))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        gptq_quantize(np.ones(4), x)
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 4\)"):
        gptq_quantize(w, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"inputs must have shape"):
        gptq_quantize(w, np.ones(4))
    with pytest.raises(ValueError, match=r"hessian must have shape \(in, in\) = \(4, 4\)"):
        gptq_quantize(w, hessian=np.eye(3))
    with pytest.raises(TypeError, match="exactly one of inputs"):
        gptq_quantize(w)
    with pytest.raises(TypeError, match="got both"):
        gptq_quantize(w, x, hessian=np.eye(4))
    with pytest.raises(TypeError, match="weight must be a floating-point array"):
        gptq_quantize(np.ones((3, 4), dtype=int), x)
    with pytest.raises(ValueError, match="inputs must be finite"):
        gptq_quantize(w, np.full((5, 4), np.nan))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(bits=1), ValueError, r"bits must be an integer in \[2, 16\]"),
    (dict(bits=17), ValueError, r"bits must be an integer in \[2, 16\]"),
    (dict(bits=4.0), TypeError, "bits must be an integer"),
    (dict(group_size=0), ValueError, "group_size must be an integer >= 1"),
    (dict(block_size=0), ValueError, "block_size must be an integer >= 1"),
    (dict(damp=-0.1), ValueError, "damp must be a finite real number"),
    (dict(method="l1"), ValueError, "method must be one of"),
    (dict(act_order="yes"), TypeError, "act_order must be True or False"),
    (dict(symmetric=1), TypeError, "symmetric must be True or False"),
])
def test_bad_arguments(kwargs, error, match):
    rng = np.random.default_rng(0)
    with pytest.raises(error, match=match):
        gptq_quantize(rng.standard_normal((3, 4)), rng.standard_normal((8, 4)), **kwargs)


def test_hessians_that_are_not_positive_semi_definite():
    w = np.ones((2, 2))
    with pytest.raises(ValueError, match="hessian must be symmetric"):
        gptq_quantize(w, hessian=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"not positive semi-definite: hessian\[1, 1\] = -1 < 0"):
        gptq_quantize(w, hessian=np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match=r"hessian\[0, 0\] = 0 but row 0 has nonzero entries"):
        gptq_quantize(w, hessian=np.array([[0.0, 0.5], [0.5, 1.0]]))
    # indefinite (eigenvalues -1 and 3): the dampened Cholesky fails ...
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(w, hessian=indefinite)
    # ... unless the dampening (lambda = 1.5) makes it positive definite: then it is accepted
    assert gptq_quantize(w, hessian=indefinite, damp=1.5).codes.shape == (2, 2)
    # singular (fewer samples than inputs) needs damp > 0
    x = np.random.default_rng(0).standard_normal((3, 6))
    with pytest.raises(ValueError, match="damp is 0"):
        gptq_quantize(np.ones((2, 6)), x, damp=0.0)
    assert gptq_quantize(np.ones((2, 6)), x).codes.shape == (2, 6)


def test_round_to_nearest_and_output_error_errors():
    with pytest.raises(ValueError, match="weight must be 2-D"):
        round_to_nearest(np.ones(3))
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        round_to_nearest(np.ones((2, 3)), bits=0)
    with pytest.raises(ValueError, match="weight_hat must have the shape of weight"):
        layer_output_error(np.ones((2, 3)), np.ones((3, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 3\)"):
        layer_output_error(np.ones((2, 3)), np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="output inputs @ weight.T is zero"):
        layer_output_error(np.zeros((2, 3)), np.ones((2, 3)), np.ones((4, 3)))


# -- QuantizedWeight.nbytes ---------------------------------------------------------


def nbytes_weight(rng, shape=(3, 10)):
    return rng.standard_normal(shape).astype(np.float32)


def test_nbytes_per_channel_by_hand():
    w = nbytes_weight(np.random.default_rng(0))
    # 4-bit symmetric per output channel: 30 codes * 4 bits = 15 bytes, 3 float32 scales = 12 bytes
    assert round_to_nearest(w, bits=4).nbytes == 15 + 12
    # 8 bits: one byte a code
    assert round_to_nearest(w, bits=8).nbytes == 30 + 12
    # asymmetric: plus 3 int8 zero points
    r = round_to_nearest(w, bits=4, symmetric=False)
    assert np.asarray(r.quantizer.zero_point).dtype == np.int8
    assert r.nbytes == 15 + 12 + 3


def test_nbytes_per_group_by_hand():
    w = nbytes_weight(np.random.default_rng(1))
    # groups of 4 of the 10 columns: 3 groups a row (4, 4, 2), 9 float32 scales = 36 bytes
    assert round_to_nearest(w, bits=4, group_size=4).nbytes == 15 + 36
    assert round_to_nearest(w, bits=4, group_size=4, symmetric=False).nbytes == 15 + 36 + 9
    # one group as wide as the row is per channel again
    assert round_to_nearest(w, bits=4, group_size=10).nbytes == 15 + 12


def test_nbytes_packs_odd_widths_rounding_up():
    rng = np.random.default_rng(2)
    # 7 codes at 3 bits = 21 bits -> 3 bytes, plus one scale
    assert round_to_nearest(nbytes_weight(rng, (1, 7)), bits=3).nbytes == 3 + 4
    # 30 codes at 3 bits = 90 bits -> 12 bytes (11.25 rounded up)
    assert round_to_nearest(nbytes_weight(rng, (3, 10)), bits=3).nbytes == 12 + 12
    # 5 codes at 2 bits = 10 bits -> 2 bytes
    assert round_to_nearest(nbytes_weight(rng, (1, 5)), bits=2).nbytes == 2 + 4


def test_nbytes_of_gptq_equals_that_of_rtn_on_the_same_grid():
    rng = np.random.default_rng(3)
    w, x = nbytes_weight(rng, (6, 16)), correlated_inputs(rng, 64, 16)
    for grid in (dict(bits=4), dict(bits=3, symmetric=False), dict(bits=4, group_size=8, symmetric=False)):
        g, r = gptq_quantize(w, x, **grid), round_to_nearest(w, **grid)
        assert g.nbytes == r.nbytes
    # 96 codes at 4 bits (48 bytes), 6 x 2 scales (48 bytes), 12 int8 zero points
    assert gptq_quantize(w, x, bits=4, group_size=8, symmetric=False).nbytes == 48 + 48 + 12


def test_nbytes_counts_zero_points_unless_narrow_with_zero_point_0():
    codes = np.zeros((2, 4), dtype=np.int8)
    weight = np.zeros((2, 4), dtype=np.float32)
    # 8 codes at 4 bits = 4 bytes, 2 float32 scales = 8 bytes
    narrow = qlib.Quantizer(np.ones(2), 0, bits=4, narrow_range=True, axis=0)
    assert QuantizedWeight(codes, narrow, weight).nbytes == 4 + 8
    # the full grid stores its zero points even when they are 0 (2 int8)
    full = qlib.Quantizer(np.ones(2), np.zeros(2, np.int64), bits=4, narrow_range=False, axis=0)
    assert QuantizedWeight(codes, full, weight).nbytes == 4 + 8 + 2
    # scales count as float32 whatever they were given as
    assert QuantizedWeight(codes, qlib.Quantizer(np.ones(2, np.float64), 0, bits=4, narrow_range=True, axis=0),
                           weight).nbytes == 12


def test_nbytes_of_wider_than_8_bit_grids():
    w = nbytes_weight(np.random.default_rng(4))
    # 30 codes at 12 bits stored as int16: 60 bytes, 3 float32 scales
    assert round_to_nearest(w, bits=12).nbytes == 60 + 12
