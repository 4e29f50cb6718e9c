"""Tests for qlib.models.optim: Adam."""

import math

import numpy as np
import pytest

from qlib.models.optim import Adam


def reference_adam(theta, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """The textbook algorithm (Kingma and Ba, 2015, Algorithm 1), step by step."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def test_matches_the_textbook_algorithm():
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(25)]
    params = {"w.weight": theta.copy()}
    opt = Adam(lr=0.05)
    for g in grads:
        opt.step(params, {"w.weight": g.copy()})
    np.testing.assert_allclose(params["w.weight"], reference_adam(theta, grads, 0.05), rtol=1e-10, atol=1e-13)
    assert opt.steps == 25


def test_weight_decay_applies_to_weights_only():
    params = {"fc.weight": np.ones((2, 2)), "fc.bias": np.ones(2)}
    opt = Adam(lr=0.1, weight_decay=1.0)
    opt.step(params, {"fc.weight": np.zeros((2, 2)), "fc.bias": np.zeros(2)})
    np.testing.assert_allclose(params["fc.weight"], 0.9)  # gradient lambda * W = 1: one step of lr
    np.testing.assert_array_equal(params["fc.bias"], 1.0)


def test_float32_parameters_stay_float32():
    params = {"w.weight": np.ones((2, 2), np.float32)}
    Adam().step(params, {"w.weight": np.ones((2, 2), np.float32)})
    assert params["w.weight"].dtype == np.float32
    assert params["w.weight"][0, 0] == pytest.approx(1 - 0.01, rel=1e-6)
    assert math.isclose(Adam(lr=0.5).lr, 0.5) and "weight_decay=0.0" in repr(Adam())


def test_bad_input():
    with pytest.raises(ValueError, match="lr"):
        Adam(lr=0)
    with pytest.raises(ValueError, match="beta1"):
        Adam(beta1=1.0)
    with pytest.raises(TypeError, match="eps"):
        Adam(eps="small")
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(weight_decay=-1)
    opt = Adam()
    with pytest.raises(ValueError, match="grads"):
        opt.step({"a": np.ones(2)}, {"b": np.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"a": np.ones(2)}, {"a": np.ones(3)})
    with pytest.raises(TypeError, match="mappings"):
        opt.step([np.ones(2)], {"a": np.ones(2)})
