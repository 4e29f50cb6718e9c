"""Tests for qlib.models.mlp: the numpy MLP, its forward and backward passes."""

import numpy as np
import pytest

import qlib
from qlib.models.mlp import MLP, ForwardTrace, mlp_forward

# fixtures `digits` and `trained` (model, history): tests/conftest.py


def chapter2_net(rng):
    """The network of chapter 2 (cell 3), as the notebook builds it."""
    sizes = [32, 64, 64, 10]
    net = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        net[f"fc{i}.weight"] = rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in))
        net[f"fc{i}.bias"] = rng.normal(0, 0.1, n_out)
    return net, rng.normal(size=(512, sizes[0]))


def notebook_forward(net, x):
    """Chapter 2's forward(net, x), verbatim."""
    n = len(net) // 2
    for i in range(1, n + 1):
        x = x @ net[f"fc{i}.weight"].T + net[f"fc{i}.bias"]
        x = np.maximum(x, 0) if i < n else x
    return x


def test_init_shapes_names_and_scale():
    m = MLP.init((64, 100, 50, 10), np.random.default_rng(0))
    assert list(m.params) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert m.sizes == (64, 100, 50, 10) and m.layers == ["fc1", "fc2", "fc3"]
    assert m.params["fc2.weight"].shape == (50, 100)  # (out_features, in_features)
    assert all(v.dtype == np.float32 for v in m.params.values())
    assert m.n_params == 64 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10
    assert np.std(m.params["fc1.weight"]) == pytest.approx(np.sqrt(2 / 64), rel=0.05)
    assert np.all(m.params["fc1.bias"] == 0)
    m2 = MLP.init((64, 100, 50, 10), np.random.default_rng(0))
    assert all(np.array_equal(m.params[k], m2.params[k]) for k in m.params)


def test_forward_is_x_wt_plus_b_with_relu():
    rng = np.random.default_rng(3)
    m = MLP.init((5, 4, 3), rng, dtype=np.float64)
    m.params["fc1.bias"][:] = rng.standard_normal(4)
    x = rng.standard_normal((7, 5))
    p = m.params
    h = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0)
    np.testing.assert_allclose(m.forward(x), h @ p["fc2.weight"].T + p["fc2.bias"], rtol=1e-12)
    np.testing.assert_array_equal(m.predict(x), np.argmax(m.forward(x), axis=1))


def test_float32_model_accumulates_in_float64_and_rounds_once():
    rng = np.random.default_rng(4)
    m = MLP.init((64, 32, 10), rng)
    m.params["fc1.bias"][:] = rng.standard_normal(32).astype(np.float32)
    x = rng.random((50, 64), dtype=np.float32)
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    h = np.maximum((x.astype(np.float64) @ p["fc1.weight"].T + p["fc1.bias"]).astype(np.float32), 0)
    expected = (h.astype(np.float64) @ p["fc2.weight"].T + p["fc2.bias"]).astype(np.float32)
    out = m.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_mlp_forward_reproduces_the_chapter_2_forward_exactly():
    net, x = chapter2_net(np.random.default_rng(0))
    expected = notebook_forward(net, x)
    np.testing.assert_array_equal(mlp_forward(net, x), expected)
    np.testing.assert_array_equal(MLP(net).forward(x), expected)  # float64 model: the same loop
    assert qlib.mlp_forward is mlp_forward


def test_mlp_forward_dtypes_and_act_quant():
    net, x = chapter2_net(np.random.default_rng(1))
    net32 = {k: v.astype(np.float32) for k, v in net.items()}
    assert mlp_forward(net32, x.astype(np.float32)).dtype == np.float32
    assert mlp_forward(net32, x).dtype == np.float64  # numpy's promotion
    mixed = dict(net32, **{"fc3.bias": net["fc3.bias"]})
    assert mlp_forward(mixed, x.astype(np.float32)).dtype == np.float64
    seen = []
    mlp_forward(net, x, act_quant=lambda h: seen.append(h.shape) or h)
    assert seen == [(512, 32), (512, 64), (512, 64)]
    with pytest.raises(ValueError, match="x"):
        mlp_forward(net, x[:, :5])
    with pytest.raises(ValueError, match="params"):
        mlp_forward({"fc2.weight": net["fc2.weight"]}, x)


def test_copy_is_deep_and_astype():
    m = MLP.init((3, 2), np.random.default_rng(0))
    c = m.copy()
    c.params["fc1.weight"][:] = 0
    assert np.any(m.params["fc1.weight"] != 0)
    m64 = m.astype(np.float64)
    assert m64.dtype == np.float64 and m.dtype == np.float32
    assert m64.forward(np.ones((1, 3))).dtype == np.float64


def test_forward_params_override_and_act_quant():
    rng = np.random.default_rng(0)
    m = MLP.init((4, 6, 3), rng)
    x = rng.random((5, 4), dtype=np.float32)
    zero = {k: np.zeros_like(v) for k, v in m.params.items()}
    np.testing.assert_array_equal(m.forward(x, params=zero), np.zeros((5, 3), dtype=np.float32))
    seen = []
    np.testing.assert_array_equal(m.forward(x, act_quant=lambda h: seen.append(h.shape) or h), m.forward(x))
    assert seen == [(5, 4), (5, 6)]  # the input of every dense layer
    only_first = {"fc1": lambda h: np.zeros_like(h)}
    out = m.forward(x, act_quant=only_first)
    np.testing.assert_allclose(out, np.broadcast_to(m.params["fc2.bias"], (5, 3)))


def test_public_checks():
    m = MLP.init((4, 3), np.random.default_rng(0))
    assert m.check_input([[1, 2, 3, 4]]).dtype == np.float32
    np.testing.assert_array_equal(m.check_labels([0, 2], 2), [0, 2])
    assert m.resolve_params() is m.params
    other = m.resolve_params({k: v.astype(np.float64) for k, v in m.params.items()})
    assert other["fc1.weight"].dtype == np.float32
    with pytest.raises(ValueError, match="calib_x"):
        m.check_input(np.ones((2, 5)), "calib_x")


def test_trace_and_backward():
    rng = np.random.default_rng(1)
    m = MLP.init((4, 8, 6, 3), rng)
    x = rng.random((5, 4), dtype=np.float32)
    t = m.trace(x)
    assert isinstance(t, ForwardTrace)
    np.testing.assert_array_equal(t.logits, m.forward(x))
    assert [h.shape for h in t.inputs] == [(5, 4), (5, 8), (5, 6)] and len(t.preacts) == 2
    y = np.array([0, 1, 2, 0, 1])
    value, grads = qlib.CrossEntropyLoss().logit_loss(t.logits, {"y": y})
    loss, expected = m.loss_and_grads(x, y)
    assert loss == value
    for k, g in m.backward(t, grads).items():
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, expected[k])
    # replacement parameters: the backward pass goes through the weights the forward pass used
    half = {k: v / 2 for k, v in m.params.items()}
    t2 = m.trace(x, params=half)
    assert t2.params["fc2.weight"][0, 0] == m.params["fc2.weight"][0, 0] / 2
    g_half = m.backward(t2, np.ones((5, 3)))
    assert not np.array_equal(g_half["fc1.weight"], m.backward(t, np.ones((5, 3)))["fc1.weight"])
    with pytest.raises(TypeError, match="trace"):
        m.backward("t", np.ones((5, 3)))
    with pytest.raises(ValueError, match="grad_logits"):
        m.backward(t, np.ones((5, 2)))


def _numerical_grads(model, f, eps=1e-6):
    grads = {}
    for k, v in model.params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + eps
            up = f()
            v[idx] = old - eps
            down = f()
            v[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads[k] = g
    return grads


@pytest.mark.parametrize(
    "kind", ["cross_entropy", "distillation", "distillation_soft_only"]
)
def test_backward_matches_finite_differences(kind):
    rng = np.random.default_rng(42)
    m = MLP.init((5, 7, 6, 4), rng).astype(np.float64)
    for k in m.params:
        if k.endswith("bias"):
            m.params[k][:] = 0.1 * rng.standard_normal(m.params[k].shape)
    x = rng.standard_normal((9, 5))
    y = rng.integers(0, 4, size=9)
    kw = {}
    if kind != "cross_entropy":
        kw = {"teacher_logits": 3 * rng.standard_normal((9, 4)), "temperature": 2.5, "alpha": 0.7}
    if kind == "distillation_soft_only":
        y, kw["alpha"] = None, 1.0
    loss, grads = m.loss_and_grads(x, y, **kw)
    num = _numerical_grads(m, lambda: m.loss_and_grads(x, y, **kw)[0])
    assert set(grads) == set(m.params)
    for k in m.params:
        assert grads[k].shape == m.params[k].shape and grads[k].dtype == np.float64
        err = np.linalg.norm(grads[k] - num[k]) / max(np.linalg.norm(grads[k]), np.linalg.norm(num[k]))
        assert err < 1e-5, (k, err)


def test_loss_values():
    rng = np.random.default_rng(0)
    m = MLP.init((4, 3), rng, dtype=np.float64)
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 3, size=6)
    loss, _ = m.loss_and_grads(x, y)
    assert loss == pytest.approx(qlib.cross_entropy(m.forward(x), y), rel=1e-12)
    t = rng.standard_normal((6, 3))
    loss, _ = m.loss_and_grads(x, y, teacher_logits=t, temperature=3.0, alpha=0.4)
    ref = qlib.distillation_loss(m.forward(x), t, y, temperature=3.0, alpha=0.4)
    assert loss == pytest.approx(ref, rel=1e-12)


def test_bad_inputs(digits):
    m = MLP.init((64, 8, 10), np.random.default_rng(0))
    x, y = digits["x_val"], digits["y_val"]
    rng = np.random.default_rng(0)
    cases = [
        (lambda: m.forward(x[:, :10]), ValueError, "x"),
        (lambda: m.forward(x[0]), ValueError, "x"),
        (lambda: m.forward(x.astype(str)), TypeError, "x"),
        (lambda: m.accuracy(x, y[:-1]), ValueError, "y"),
        (lambda: m.accuracy(x, y + 1), ValueError, "y"),
        (lambda: m.accuracy(x, y.astype(float)), TypeError, "y"),
        (lambda: m.loss_and_grads(x, None), ValueError, "y"),
        (lambda: m.loss_and_grads(x, y, teacher_logits=np.zeros((len(y), 3))), ValueError, "teacher_logits"),
        (lambda: m.forward(x, params={"fc1.weight": 1}), ValueError, "params"),
        (lambda: m.forward(x, params={k: v[:1] for k, v in m.params.items()}), ValueError, "params"),
        (lambda: m.forward(x, act_quant=3), TypeError, "act_quant"),
        (lambda: m.forward(x, act_quant={"fc9": abs}), ValueError, "act_quant"),
        (lambda: MLP.init((64,), rng), ValueError, "sizes"),
        (lambda: MLP.init((64, 0, 10), rng), ValueError, "sizes"),
        (lambda: MLP.init((64, 2.5, 10), rng), TypeError, "sizes"),
        (lambda: MLP.init(64, rng), TypeError, "sizes"),
        (lambda: MLP.init((64, 10), 0), TypeError, "rng"),
        (lambda: MLP.init((64, 10), rng, dtype=np.int32), TypeError, "dtype"),
        (lambda: MLP({"fc1.weight": np.zeros((2, 3)), "fc1.bias": np.zeros(3)}), ValueError, "bias"),
        (lambda: MLP({"fc1.weight": np.zeros((2, 3)), "fc1.bias": np.zeros(2, np.float32)}), TypeError, "dtype"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()


# -- MLP.layer_inputs -------------------------------------------------------------


def test_layer_inputs_are_the_traced_inputs(trained, digits):
    model = trained[0]
    x = digits["x_val"][:50]
    inputs = model.layer_inputs(x)
    assert list(inputs) == model.layers == ["fc1", "fc2"]
    trace = model.trace(x)
    for layer, h in zip(model.layers, trace.inputs):
        np.testing.assert_array_equal(inputs[layer], h)
    # fc1 sees the data itself, fc2 the ReLU of fc1's pre-activation
    np.testing.assert_array_equal(inputs["fc1"], x.astype(np.float32))
    assert inputs["fc2"].shape == (50, 64) and inputs["fc2"].dtype == np.float32
    assert np.all(inputs["fc2"] >= 0) and np.any(inputs["fc2"] > 0)
    z1 = x.astype(np.float64) @ model.params["fc1.weight"].T.astype(np.float64) + model.params["fc1.bias"]
    np.testing.assert_allclose(inputs["fc2"], np.maximum(z1, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(inputs["fc2"], np.maximum(trace.preacts[0], 0))


def test_layer_inputs_with_params_and_act_quant():
    model = MLP.init((6, 5, 4, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).random((7, 6), dtype=np.float32)
    assert list(model.layer_inputs(x)) == ["fc1", "fc2", "fc3"]
    other = {k: -v for k, v in model.params.items()}
    with_other = model.layer_inputs(x, params=other)
    for layer, h in zip(model.layers, model.trace(x, params=other).inputs):
        np.testing.assert_array_equal(with_other[layer], h)
    assert not np.array_equal(with_other["fc2"], model.layer_inputs(x)["fc2"])

    def q(h):
        return np.round(h * 4) / 4
    quantized = model.layer_inputs(x, act_quant={"fc1": q})
    np.testing.assert_array_equal(quantized["fc1"], q(x))          # the input after its quantizer
    for layer, h in zip(model.layers, model.trace(x, act_quant={"fc1": q}).inputs):
        np.testing.assert_array_equal(quantized[layer], h)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        model.layer_inputs(np.ones((2, 5), np.float32))
