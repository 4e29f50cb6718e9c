"""Tests of qlib.core.fake_quant: the one fake-quantization kernel and its backward pass."""

import numpy as np
import pytest

import qlib
from qlib import Quantizer, dequantize, fake_quantize, fake_quantize_backward, quantize
from qlib.core import layout
from qlib.core.fake_quant import fake_quantize_into, prepare
from qlib.core.rounding import fake_quantize_stochastic, quantize_stochastic


def test_exported_from_package():
    assert qlib.fake_quantize_backward is fake_quantize_backward
    assert qlib.core.fake_quant.__all__ == ["fake_quantize_backward"]


# --------------------------------------------------------------------------
# The forward kernel
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(), dict(zero_point=3), dict(zero_point=-4, signed=True, bits=4)])
def test_no_negative_zero(dtype, kw):
    """Small negative values round to -0.0; fake_quantize returned -0.0 where
    dequantize(quantize(x)) returns 0.0 (a bug of the old kernel)."""
    x = np.array([-0.1, -0.4, -0.0, 0.0, 0.3, -1e-30, -0.5], dtype=dtype)
    f = fake_quantize(x, 1.0, **kw)
    codes_kw = {k: v for k, v in kw.items() if k != "zero_point"}
    d = dequantize(quantize(x, 1.0, **kw), 1.0, kw.get("zero_point", 0)).astype(dtype)
    np.testing.assert_array_equal(f, d)
    assert not np.any(np.signbit(f[f == 0]))
    assert np.array_equal(np.signbit(f), np.signbit(d))
    assert fake_quantize(np.array([-0.1], dtype=dtype), 1.0, **codes_kw)[0] == 0.0


def test_no_negative_zero_per_channel_and_stochastic(monkeypatch):
    x = -np.full((3, 300), 0.01, dtype=np.float32)
    f = fake_quantize(x, np.ones(3), axis=0)
    assert not np.any(np.signbit(f))
    monkeypatch.setattr(layout, "BLOCK", 64)
    assert not np.any(np.signbit(fake_quantize(x, np.ones(300), axis=1)))
    x = -np.full(100, 1e-9)
    assert not np.any(np.signbit(fake_quantize_stochastic(x, 1.0, rng=np.random.default_rng(0))))


def test_kernel_matches_formula_with_zero_points_per_group():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 9, 4)) * 2
    s = rng.uniform(0.01, 0.1, (5, 3, 4))
    z = rng.integers(-20, 20, (5, 3, 4))
    job = prepare(x, s, z, 8, True, True, 1, 3)
    out = fake_quantize_into(job, np.empty(x.shape))
    se, ze = np.repeat(s, 3, axis=1), np.repeat(z, 3, axis=1)
    ref = (np.clip(np.rint(x / se) + ze, -127, 127) - ze) * se
    np.testing.assert_array_equal(out, ref)
    codes = fake_quantize_into(job, np.empty(x.shape, dtype=np.int8), dequantize=False)
    np.testing.assert_array_equal(codes, quantize(x, s, z, narrow_range=True, axis=1, group_size=3))
    with pytest.raises(ValueError, match="C-contiguous"):
        fake_quantize_into(job, np.empty(x.shape[::-1]).T)


def test_stochastic_draws_do_not_depend_on_the_block_size(monkeypatch):
    x = np.linspace(-3, 3, 1001)
    a = fake_quantize_stochastic(x, 0.07, rng=np.random.default_rng(5))
    qa = quantize_stochastic(x, 0.07, 3, rng=np.random.default_rng(5))
    monkeypatch.setattr(layout, "BLOCK", 7)
    np.testing.assert_array_equal(fake_quantize_stochastic(x, 0.07, rng=np.random.default_rng(5)), a)
    np.testing.assert_array_equal(quantize_stochastic(x, 0.07, 3, rng=np.random.default_rng(5)), qa)


# --------------------------------------------------------------------------
# Backward: straight-through estimator and LSQ scale gradient
# --------------------------------------------------------------------------


def test_ste_mask_exactly():
    q = Quantizer(0.5, 2, bits=4)  # codes -8..7, range of x: [(-8-2)0.5, (7-2)0.5] = [-5, 2.5]
    x = np.array([-6.0, -5.0001, -5.0, -4.9, 0.0, 2.4, 2.5, 2.6, 2.7, 9.0])
    g = np.arange(1.0, 11.0)
    gx, gs = fake_quantize_backward(x, q, g)
    np.testing.assert_array_equal(gx, [0, 0, 3, 4, 5, 6, 7, 0, 0, 0])  # the ends are inside
    assert gx.dtype == np.float64 and gx.shape == x.shape
    # 2.6 and 2.7 round onto code 7 without clipping (x/s = 5.2, 5.4) but are outside the range
    v = x / 0.5
    d = np.where(v <= -10, -10, np.where(v >= 5, 5, np.rint(v) - v))
    assert gs == pytest.approx(float(np.sum(g * d)), abs=1e-12)
    assert np.shape(gs) == () and gs.dtype == np.float64  # float64 x: the precision of the arithmetic


def test_backward_float32_and_per_channel_shapes():
    x = np.array([[0.1, 5.0, -5.0], [0.14, 0.2, -0.3]], dtype=np.float32)
    q = Quantizer(np.array([1.0, 0.1]), bits=3, narrow_range=True, axis=0)  # codes -3..3
    gx, gs = fake_quantize_backward(x, q, np.ones_like(x))
    assert gx.dtype == np.float32
    np.testing.assert_array_equal(gx, [[1, 0, 0], [1, 1, 1]])
    assert gs.shape == (2,) and gs.dtype == np.float32
    # -0.3 / 0.1 is -3, the lower end: the clipped branch, qmin - z = -3
    np.testing.assert_allclose(gs, [(0 - 0.1) + 3 - 3, (1 - 1.4) + (2 - 2) - 3], atol=1e-5)


def _away_from_boundaries(rng, s, z, qmin, qmax, shape, margin=1e-2):
    """x with x/s at least ``margin`` from every k + 0.5 and from both clip ends."""
    lo, hi = qmin - z, qmax - z
    k = rng.integers(lo - 6, hi + 7, shape)  # some beyond the range
    u = rng.uniform(-0.5 + margin, 0.5 - margin, shape)
    v = np.where(k == lo, k + np.abs(u), np.where(k == hi, k - np.abs(u), k + u))
    v = np.where((k < lo) | (k > hi), k + np.sign(k - lo) * 0.25, v)
    return v * s


def _cases():
    """(x, quantizer, sharing) in float64, per tensor, per channel and per group."""
    rng = np.random.default_rng(42)
    # scales with few significant bits, so that s +- h below is exact in float32
    s_t = np.float32(0.375)
    x_t = _away_from_boundaries(rng, 0.375, 3, -8, 7, (40,))
    yield x_t, Quantizer(s_t, 3, bits=4), "tensor"
    s_c = np.array([0.25, 0.75, 1.5], dtype=np.float32)
    z_c = np.array([0, -5, 9])
    x_c = _away_from_boundaries(rng, s_c[:, None], z_c[:, None], -127, 127, (3, 50))
    yield x_c, Quantizer(s_c, z_c, narrow_range=True, axis=0), "channel"
    s_g = np.array([[0.5, 0.125], [1.25, 0.625]], dtype=np.float32)
    z_g = np.array([[1, 0], [-2, 3]])
    sg, zg = np.repeat(s_g, 3, axis=1)[:, :5], np.repeat(z_g, 3, axis=1)[:, :5]
    x_g = _away_from_boundaries(rng, sg, zg, 0, 15, (2, 5))
    x_g = x_g + sg * (8 - zg)  # center the codes on the unsigned grid
    yield x_g, Quantizer(s_g, z_g + 8, bits=4, signed=False, axis=1, group_size=3), "group"


def _forward_sum(x, q, g, scale):
    return float(np.sum(g * fake_quantize(x, Quantizer(scale, q.zero_point, bits=q.bits, signed=q.signed,
                                                       narrow_range=q.narrow_range, axis=q.axis,
                                                       group_size=q.group_size))))


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[2])
def test_lsq_scale_gradient_against_central_differences(case):
    """The LSQ gradient uses the straight-through estimator for round(x/s), so
    inside the range it is round(v) - v while the true derivative of the
    piecewise-linear forward (round locally constant) is round(v). Checked:

    - a central finite difference of sum(g * fake_quantize(x, s)) equals
      grad_scale + sum(g * v) over the elements inside the range (and is
      exactly grad_scale where everything is clipped);
    - a central finite difference of the STE surrogate
      sum(g * s' (clip(x/s', lo, hi) + c)), with c = round(v) - v frozen at s,
      equals grad_scale.
    """
    x, q, _ = case
    rng = np.random.default_rng(1)
    g = rng.standard_normal(x.shape)
    gx, gs = fake_quantize_backward(x, q, g)
    s_full = np.broadcast_to(np.asarray(q.scale, dtype=np.float64), np.shape(q.scale))
    lay = layout.make_layout(x.shape, q.axis, q.group_size)
    shape3 = (lay.pre, lay.n, lay.post)
    s3 = layout.broadcast3(layout.param(np.asarray(q.scale, np.float64), lay, "s"), lay)
    z3 = layout.broadcast3(layout.param(np.asarray(q.zero_point, np.float64), lay, "z"), lay)
    v = x.reshape(shape3) / s3
    lo, hi = q.qmin - z3, q.qmax - z3
    assert np.all(np.abs(v - np.floor(v) - 0.5) > 1e-3)
    assert np.all(np.abs(v - lo) > 1e-3) and np.all(np.abs(v - hi) > 1e-3)
    inside = (v > lo) & (v < hi)
    assert inside.any() and (~inside).any()
    ste_term = layout.reduce3(g.reshape(shape3) * v * inside, lay, np.shape(q.scale))
    c = np.where(inside, np.rint(v) - v, 0.0)
    h = 2.0**-20
    fd = np.empty(np.shape(q.scale))
    fd_ste = np.empty(np.shape(q.scale))
    for idx in np.ndindex(*np.shape(q.scale)):
        e = np.zeros(np.shape(q.scale))
        e[idx] = h
        fd[idx] = (_forward_sum(x, q, g, s_full + e) - _forward_sum(x, q, g, s_full - e)) / (2 * h)

        def surrogate(sp):
            sp3 = layout.broadcast3(layout.param(np.asarray(sp), lay, "s"), lay)
            return float(np.sum(g.reshape(shape3) * sp3 * (np.clip(x.reshape(shape3) / sp3, lo, hi) + c)))

        fd_ste[idx] = (surrogate(s_full + e) - surrogate(s_full - e)) / (2 * h)
    assert np.shape(gs) == np.shape(q.scale)
    np.testing.assert_allclose(gs + ste_term, fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gs, fd_ste, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(gx, np.where(inside.reshape(x.shape), g, 0.0))


def test_backward_bad_input():
    x = np.array([0.5, 1.0])
    with pytest.raises(TypeError, match="quantizer must be a qlib.Quantizer"):
        fake_quantize_backward(x, 0.5, np.ones(2))
    with pytest.raises(ValueError, match="grad_output must have the shape of x"):
        fake_quantize_backward(x, Quantizer(0.5), np.ones(3))
    with pytest.raises(TypeError, match="grad_output must be a floating-point"):
        fake_quantize_backward(x, Quantizer(0.5), np.ones(2, dtype=int))
    with pytest.raises(ValueError, match="x must be finite"):
        fake_quantize_backward(np.array([np.nan, 1.0]), Quantizer(0.5), np.ones(2))
    with pytest.raises(ValueError, match="scale must be a scalar or have shape"):
        fake_quantize_backward(x, Quantizer(np.ones(3), axis=0), np.ones(2))
