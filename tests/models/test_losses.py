"""Tests for qlib.models.losses: cross-entropy and distillation as loss objects."""

import numpy as np
import pytest

import qlib
from qlib.models.losses import CrossEntropyLoss, DistillationLoss, LogitLoss
from qlib.models.mlp import MLP


def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    z = 3 * rng.standard_normal((7, 5))
    y = rng.integers(0, 5, 7)
    value, grad = CrossEntropyLoss().logit_loss(z, {"y": y})
    assert value == pytest.approx(qlib.cross_entropy(z, y), rel=1e-12)
    p = qlib.softmax(z)
    np.testing.assert_allclose(grad, (p - np.eye(5)[y]) / 7, rtol=1e-12, atol=1e-15)
    assert grad.dtype == np.float64
    assert repr(CrossEntropyLoss()) == "CrossEntropyLoss()"


def test_distillation_value_and_gradient():
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    loss = DistillationLoss(temperature=3.0, alpha=0.25)
    value, grad = loss.logit_loss(s, {"y": y, "teacher_logits": t})
    assert value == qlib.distillation_loss(s, t, y, temperature=3.0, alpha=0.25)
    np.testing.assert_array_equal(grad, qlib.distillation_loss_grad(s, t, y, temperature=3.0, alpha=0.25))
    assert "temperature=3.0" in repr(loss)
    soft = DistillationLoss(alpha=1.0)
    soft.logit_loss(s, {"teacher_logits": t})  # no labels needed
    with pytest.raises(ValueError, match="y"):
        loss.logit_loss(s, {"teacher_logits": t})


def test_calling_a_loss_runs_forward_and_backward():
    rng = np.random.default_rng(2)
    m = MLP.init((4, 6, 3), rng)
    batch = {"x": rng.random((5, 4)), "y": np.array([0, 1, 2, 1, 0])}
    value, grads = CrossEntropyLoss()(m, batch)
    expected_value, expected = m.loss_and_grads(batch["x"], batch["y"])
    assert value == expected_value
    assert all(np.array_equal(grads[k], expected[k]) for k in m.params)


def test_bad_input():
    m = MLP.init((4, 3), np.random.default_rng(0))
    with pytest.raises(NotImplementedError, match="logit_loss"):
        LogitLoss()(m, {"x": np.ones((2, 4))})
    with pytest.raises(ValueError, match="'y'"):
        CrossEntropyLoss().logit_loss(np.zeros((2, 3)), {})
    with pytest.raises(TypeError, match="batch"):
        CrossEntropyLoss()(m, [1, 2])
    with pytest.raises(ValueError, match="y"):
        CrossEntropyLoss().logit_loss(np.zeros((2, 3)), {"y": [0, 3]})
    with pytest.raises(ValueError, match="teacher_logits"):
        DistillationLoss().logit_loss(np.zeros((2, 3)), {"y": [0, 1], "teacher_logits": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(temperature=-1)
    with pytest.raises(TypeError, match="alpha"):
        DistillationLoss(alpha="0.5")
