"""Tests of qlib.distillation: softmax, cross-entropy, Hinton et al.'s loss and its gradient."""

import numpy as np
import pytest

import qlib
from qlib import distillation
from qlib.methods.distillation import (
    cross_entropy,
    distillation_loss,
    distillation_loss_grad,
    log_softmax,
    softmax,
)


def test_exported():
    for name in distillation.__all__:
        assert getattr(qlib, name) is getattr(distillation, name)


def batch(seed, n=6, c=5, scale=3.0):
    rng = np.random.default_rng(seed)
    return (
        scale * rng.standard_normal((n, c)),
        scale * rng.standard_normal((n, c)),
        rng.integers(0, c, size=n),
    )


# ---------------------------------------------------------------------------
# softmax, log_softmax
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_rows_sum_to_one_and_match_naive(temperature, axis):
    z, _, _ = batch(0)
    p = softmax(z, temperature, axis)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-14)
    assert np.all(p >= 0)
    naive = np.exp(z / temperature) / np.exp(z / temperature).sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(p, naive, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(z, temperature, axis), np.log(naive), rtol=1e-12, atol=1e-12)


def test_softmax_stable_for_huge_logits():
    z = np.array([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4, -1e4]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        p = softmax(z)
        lp = log_softmax(z)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p[0, :2], softmax(np.array([1.0, 0.0])), rtol=1e-14)
    np.testing.assert_allclose(p[1], 1 / 3, rtol=1e-15)
    np.testing.assert_allclose(lp[0, 2], -2e4 - np.log1p(np.exp(-1.0)), rtol=1e-15)
    # shift invariance
    np.testing.assert_allclose(softmax(z[:1] - 1e4), p[:1], rtol=1e-15)


def test_softmax_dtypes():
    z32 = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    assert softmax(z32, np.float64(2.0)).dtype == np.float32  # NEP 50: no upcast
    assert log_softmax(z32, 2.0).dtype == np.float32
    assert softmax(z32.astype(np.float16)).dtype == np.float32
    assert softmax(np.array([1, 2, 3])).dtype == np.float64
    np.testing.assert_allclose(softmax(np.array([1, 2, 3])), softmax(np.array([1.0, 2.0, 3.0])))


def test_temperature_limits():
    z = np.array([1.0, 2.0, 5.0])
    np.testing.assert_allclose(softmax(z, 1e-3), [0.0, 0.0, 1.0], atol=1e-300)
    np.testing.assert_allclose(softmax(z, 1e6), 1 / 3, rtol=1e-5)


@pytest.mark.parametrize("fn", [softmax, log_softmax])
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": "2"}, TypeError, "temperature"),
        ({"temperature": True}, TypeError, "temperature"),
        ({"axis": 2}, ValueError, "axis"),
        ({"axis": 0.0}, TypeError, "axis"),
        ({"logits": np.array([1.0, np.nan])}, ValueError, "logits"),
        ({"logits": np.array([])}, ValueError, "logits"),
        ({"logits": np.array(["a"])}, TypeError, "logits"),
    ],
)
def test_softmax_bad_input(fn, kwargs, exc, match):
    args = {"logits": np.ones((2, 3))}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fn(**args)


# ---------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------


def test_cross_entropy_int_and_onehot_agree():
    s, _, y = batch(1)
    expected = -np.mean(np.log(softmax(s))[np.arange(len(y)), y])
    ce = cross_entropy(s, y)
    assert isinstance(ce, float)
    np.testing.assert_allclose(ce, expected, rtol=1e-14)
    np.testing.assert_allclose(cross_entropy(s, np.eye(s.shape[1])[y]), ce, rtol=1e-14)
    np.testing.assert_allclose(cross_entropy(s, y.astype(np.int8)), ce, rtol=0)


def test_cross_entropy_soft_labels_and_large_logits():
    s = np.array([[0.0, 0.0], [1e4, 0.0]])
    p = np.array([[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(cross_entropy(s, p), np.log(2) / 2, rtol=1e-14)
    assert cross_entropy(np.array([[0.0, 1e4]]), np.array([0])) == 1e4


@pytest.mark.parametrize(
    "logits, labels, exc, match",
    [
        (np.ones((3, 4)), np.array([0, 1, 4]), ValueError, r"labels.*\[0, 3\].*4"),
        (np.ones((3, 4)), np.array([0, -1, 2]), ValueError, r"labels.*-1"),
        (np.ones((3, 4)), np.array([0, 1]), ValueError, r"labels.*\(3,\)"),
        (np.ones((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, "labels"),
        (np.ones((3, 4)), np.array([True, False, True]), TypeError, "labels"),
        (np.ones((3, 4)), np.full((3, 3), 1 / 3), ValueError, r"labels.*\(3, 4\)"),
        (np.ones((3, 4)), np.full((3, 4), 0.5), ValueError, "labels.*sum"),
        (np.ones((3, 4)), np.array([[2.0, -1, 0, 0]] * 3), ValueError, "labels.*>= 0"),
        (np.ones((3, 4)), np.full((3, 4), np.nan), ValueError, "labels"),
        (np.ones(4), np.array([0]), ValueError, r"logits.*\(N, C\)"),
        (np.ones((2, 3, 4)), np.array([0, 1]), ValueError, r"logits.*\(N, C\)"),
        (np.full((3, 4), np.inf), np.array([0, 1, 2]), ValueError, "logits"),
    ],
)
def test_cross_entropy_bad_input(logits, labels, exc, match):
    with pytest.raises(exc, match=match):
        cross_entropy(logits, labels)


# ---------------------------------------------------------------------------
# distillation_loss
# ---------------------------------------------------------------------------


def test_alpha_zero_is_cross_entropy_exactly():
    s, t, y = batch(2)
    for temperature in (0.5, 1.0, 4.0, 10.0):
        assert distillation_loss(s, t, y, temperature=temperature, alpha=0.0) == cross_entropy(s, y)
        soft_y = softmax(t)
        assert distillation_loss(s, t, soft_y, temperature=temperature, alpha=0) == cross_entropy(s, soft_y)


def test_hard_teacher_at_t1_is_cross_entropy():
    """A teacher whose logits are 1e3 * one-hot has softmax exactly one-hot in
    float64 (exp(-1000) underflows to 0), so at T = 1 the soft term is the
    cross-entropy with the teacher's labels."""
    s, _, y = batch(3)
    t = 1e3 * np.eye(s.shape[1])[y]
    np.testing.assert_array_equal(softmax(t), np.eye(s.shape[1])[y])
    np.testing.assert_allclose(
        distillation_loss(s, t, None, temperature=1.0, alpha=1.0), cross_entropy(s, y), rtol=1e-15
    )
    # and then the labels do not matter
    other = (y + 1) % s.shape[1]
    np.testing.assert_allclose(
        distillation_loss(s, t, other, temperature=1.0, alpha=1.0), cross_entropy(s, y), rtol=1e-15
    )


def test_loss_formula_against_naive():
    s, t, y = batch(4)
    n, c = s.shape
    for temperature, alpha in [(1.0, 0.5), (4.0, 0.9), (2.5, 0.3), (10.0, 1.0)]:
        p = np.exp(t / temperature) / np.exp(t / temperature).sum(axis=1, keepdims=True)
        q = np.exp(s / temperature) / np.exp(s / temperature).sum(axis=1, keepdims=True)
        soft = np.mean(-(p * np.log(q)).sum(axis=1))
        hard = cross_entropy(s, y)
        expected = alpha * temperature**2 * soft + (1 - alpha) * hard
        got = distillation_loss(s, t, y, temperature=temperature, alpha=alpha)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_loss_is_minimized_at_teacher_when_alpha_is_one():
    """H(p, q) >= H(p, p): the soft term is smallest when the student copies the teacher."""
    s, t, _ = batch(5)
    at_teacher = distillation_loss(t, t, temperature=3.0, alpha=1.0)
    assert distillation_loss(s, t, temperature=3.0, alpha=1.0) > at_teacher
    assert np.abs(distillation_loss_grad(t, t, temperature=3.0, alpha=1.0)).max() < 1e-15
    # adding a constant to each student row changes nothing
    np.testing.assert_allclose(
        distillation_loss(t + 7.0, t, temperature=3.0, alpha=1.0), at_teacher, rtol=1e-13
    )


def test_t_squared_keeps_soft_gradient_magnitude():
    """With zero-mean logits the soft gradient, times T^2 as in the loss, tends
    to (s - t) / (C N) as T grows (Hinton et al., 2015, section 2)."""
    s, t, _ = batch(6, scale=0.5)
    s -= s.mean(axis=1, keepdims=True)
    t -= t.mean(axis=1, keepdims=True)
    n, c = s.shape
    limit = (s - t) / (c * n)
    for temperature in (50.0, 500.0):
        g = distillation_loss_grad(s, t, temperature=temperature, alpha=1.0)
        np.testing.assert_allclose(g, limit, rtol=0.1 * 50 / temperature, atol=1e-5)


def finite_difference(f, x, h=1e-5):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("soft_labels", [False, True])
def test_gradient_matches_finite_differences(temperature, alpha, soft_labels):
    s, t, y = batch(7, n=4, c=5, scale=2.0)
    if soft_labels:
        y = softmax(np.random.default_rng(8).standard_normal((4, 5)))
    kw = dict(temperature=temperature, alpha=alpha)
    g = distillation_loss_grad(s, t, y, **kw)
    assert g.shape == s.shape and g.dtype == np.float64
    fd = finite_difference(lambda x: distillation_loss(x, t, y, **kw), s)
    assert np.linalg.norm(g - fd) / np.linalg.norm(g) < 1e-6
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-15)


def test_gradient_formula():
    s, t, y = batch(9)
    n, c = s.shape
    temperature, alpha = 3.0, 0.7
    expected = alpha * temperature * (softmax(s, temperature) - softmax(t, temperature)) / n + (
        1 - alpha
    ) * (softmax(s) - np.eye(c)[y]) / n
    np.testing.assert_allclose(
        distillation_loss_grad(s, t, y, temperature=temperature, alpha=alpha),
        expected,
        rtol=1e-13,
        atol=1e-16,
    )


def test_float32_logits():
    s, t, y = batch(10)
    s32, t32 = s.astype(np.float32), t.astype(np.float32)
    g = distillation_loss_grad(s32, t32, y, temperature=np.float64(4.0), alpha=0.5)
    assert g.dtype == np.float32
    g64 = distillation_loss_grad(s32.astype(float), t32.astype(float), y, alpha=0.5)
    np.testing.assert_allclose(g, g64, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        distillation_loss(s32, t32, y), distillation_loss(s32.astype(float), t32.astype(float), y), rtol=1e-5
    )


def test_defaults():
    s, t, y = batch(11)
    np.testing.assert_allclose(
        distillation_loss(s, t, y),
        distillation_loss(s, t, y, temperature=4.0, alpha=0.9),
        rtol=0,
    )


@pytest.mark.parametrize("fn", [distillation_loss, distillation_loss_grad])
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (
            {"teacher_logits": np.ones((3, 5))},
            ValueError,
            r"student_logits and teacher_logits.*\(3, 4\).*\(3, 5\)",
        ),
        ({"teacher_logits": np.ones((2, 4))}, ValueError, "teacher_logits"),
        ({"student_logits": np.ones(4)}, ValueError, "student_logits"),
        ({"student_logits": np.array([[np.nan] * 4] * 3)}, ValueError, "student_logits"),
        ({"teacher_logits": np.array([["a"] * 4] * 3)}, TypeError, "teacher_logits"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"temperature": -2.0}, ValueError, "temperature"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": None}, TypeError, "temperature"),
        ({"alpha": 1.1}, ValueError, "alpha"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"alpha": float("nan")}, ValueError, "alpha"),
        ({"alpha": "0.5"}, TypeError, "alpha"),
        ({"labels": np.array([0, 1, 4])}, ValueError, "labels"),
        ({"labels": np.array([0, 1])}, ValueError, "labels"),
        ({"labels": np.array([0.0, 1.0, 2.0])}, TypeError, "labels"),
        ({"labels": None}, ValueError, "labels.*alpha"),
    ],
)
def test_distillation_bad_input(fn, change, exc, match):
    args = {
        "student_logits": np.ones((3, 4)),
        "teacher_logits": np.zeros((3, 4)),
        "labels": np.array([0, 1, 3]),
        "temperature": 2.0,
        "alpha": 0.5,
    }
    args.update(change)
    s, t, y = args.pop("student_logits"), args.pop("teacher_logits"), args.pop("labels")
    with pytest.raises(exc, match=match):
        fn(s, t, y, **args)


def test_labels_none_ok_only_for_alpha_one():
    s, t, _ = batch(12)
    assert np.isfinite(distillation_loss(s, t, alpha=1.0))
    assert distillation_loss_grad(s, t, None, alpha=1).shape == s.shape
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t)  # default alpha = 0.9 needs labels


def test_tiny_temperature_no_warning_and_zero_log_zero():
    """(z - max) / T overflows to -inf for tiny T: softmax gives exact zeros,
    log_softmax -inf, and the losses use 0 log 0 = 0 (no NaN, no warning)."""
    z = np.array([[1.0, 3.0, 2.0], [0.0, -5.0, 5.0]])
    np.testing.assert_array_equal(softmax(z, 1e-310), [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert log_softmax(z, 1e-310)[0, 0] == -np.inf
    assert cross_entropy(np.array([[0.0, -np.finfo(float).max]]), np.array([[1.0, 0.0]])) == 0.0
    loss = distillation_loss(z, z + 1.0, temperature=1e-310, alpha=1.0)
    assert loss == 0.0
    assert np.all(np.isfinite(distillation_loss_grad(z, 2 * z, temperature=1e-310, alpha=1.0)))
