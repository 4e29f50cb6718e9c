"""Tests for qlib.models: the digits split, the numpy MLP, its training and PTQ helpers."""

import numpy as np
import pytest

import qlib
from qlib.models.mlp import (
    MLP,
    ActivationRanges,
    activation_quantizer,
    calibrate_activations,
    fake_quantize_weights,
    load_digits_split,
    train,
)


# fixtures `digits` and `trained` (model, history): tests/conftest.py


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def test_split_shapes_dtypes_and_range(digits):
    assert [digits[k].shape for k in ("x_train", "x_val", "x_test")] == [(1078, 64), (359, 64), (360, 64)]
    for k in ("x_train", "x_val", "x_test"):
        assert digits[k].dtype == np.float32
        assert digits[k].min() == 0.0 and digits[k].max() == 1.0
    for k in ("y_train", "y_val", "y_test"):
        assert digits[k].dtype == np.int64


def test_split_is_stratified_and_a_partition(digits):
    from sklearn.datasets import load_digits

    full = load_digits()
    counts = np.bincount(full.target)
    parts = [np.bincount(digits[k], minlength=10) for k in ("y_train", "y_val", "y_test")]
    np.testing.assert_array_equal(sum(parts), counts)
    np.testing.assert_array_equal(parts[0], np.round(0.6 * counts).astype(int))
    # every image of the split, with its label, is an image of the data set, as often as there
    rows = lambda x, y: sorted(map(tuple, np.column_stack([x * 16, y]).astype(int).tolist()))
    xs = np.concatenate([digits[k] for k in ("x_train", "x_val", "x_test")])
    ys = np.concatenate([digits[k] for k in ("y_train", "y_val", "y_test")])
    assert rows(xs, ys) == rows(full.data / 16, full.target)


def test_split_is_deterministic_and_depends_on_seed(digits):
    again = load_digits_split(seed=0)
    for k in digits:
        np.testing.assert_array_equal(again[k], digits[k])
    other = load_digits_split(seed=1)
    assert not np.array_equal(other["y_train"], digits["y_train"])
    again["x_train"][:] = 0  # fresh copies: modifying one does not affect the next call
    assert load_digits_split(seed=0)["x_train"].max() == 1.0


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_split_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        load_digits_split(seed=seed)


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def test_training_reaches_95_percent(digits, trained):
    model, hist = trained
    assert model.accuracy(digits["x_test"], digits["y_test"]) >= 0.95
    assert len(hist["loss"]) == 20 and hist["loss"][-1] < 0.2 * hist["loss"][0]


def test_training_is_deterministic(digits):
    def run(seed):
        m = MLP.init((64, 16, 10), np.random.default_rng(5))
        h = train(m, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(seed),
                  x_val=digits["x_val"], y_val=digits["y_val"])
        return m, h

    (a, ha), (b, hb), (c, _) = run(1), run(1), run(2)
    assert ha == hb and len(ha["val_accuracy"]) == 2
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])


def test_masks_keep_pruned_weights_at_zero(digits, trained):
    model = trained[0].copy()
    rng = np.random.default_rng(0)
    masks = {k: rng.random(v.shape) > 0.7 for k, v in model.params.items() if k.endswith("weight")}
    before = model.copy()
    train(model, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(1), masks=masks)
    for k, mk in masks.items():
        assert np.all(model.params[k][~mk] == 0)
        changed = model.params[k][mk] != before.params[k][mk]
        assert changed.mean() > 0.5  # kept weights train (not those of always-0 pixels or dead units)
    assert model.accuracy(digits["x_test"], digits["y_test"]) > 0.9


def test_weight_decay_shrinks_weights(digits):
    norms = []
    for wd in (0.0, 0.05):
        m = MLP.init((64, 16, 10), np.random.default_rng(0))
        train(m, digits["x_train"], digits["y_train"], epochs=3, rng=np.random.default_rng(1), weight_decay=wd)
        norms.append(np.linalg.norm(m.params["fc1.weight"]))
    assert norms[1] < norms[0]


def test_distillation_training(digits, trained):
    teacher = trained[0]
    t_logits = teacher.forward(digits["x_train"])
    student = MLP.init((64, 16, 10), np.random.default_rng(3))
    hist = train(student, digits["x_train"], digits["y_train"], epochs=10, rng=np.random.default_rng(4),
                 teacher_logits=t_logits, temperature=4.0, alpha=0.9)
    assert hist["loss"][-1] < hist["loss"][0]
    assert student.accuracy(digits["x_test"], digits["y_test"]) > 0.9
    soft = MLP.init((64, 16, 10), np.random.default_rng(3))
    train(soft, digits["x_train"], None, epochs=10, rng=np.random.default_rng(4), teacher_logits=t_logits, alpha=1.0)
    assert soft.accuracy(digits["x_test"], digits["y_test"]) > 0.9


# ---------------------------------------------------------------------------
# post-training quantization helpers
# ---------------------------------------------------------------------------


def test_fake_quantize_weights(trained):
    model = trained[0]
    for bits in (8, 4, 2):
        wq = fake_quantize_weights(model.params, bits=bits)
        for k, v in wq.items():
            assert v.dtype == np.float32 and v.shape == model.params[k].shape
            if k.endswith("bias"):
                np.testing.assert_array_equal(v, model.params[k])
            else:
                assert max(len(np.unique(row)) for row in v) <= 2**bits - 1
                assert np.max(np.abs(v - model.params[k])) > 0
    per_tensor = fake_quantize_weights(model.params, bits=4, per_channel=False)
    assert len(np.unique(per_tensor["fc1.weight"])) <= 15


def test_int8_weights_and_activations_within_one_point(digits, trained):
    model = trained[0]
    ranges = calibrate_activations(model, digits["x_val"], bits=8)
    assert isinstance(ranges, ActivationRanges) and list(ranges) == ["fc1", "fc2"]
    assert ranges.bits == 8 and ranges.signed is True
    s, z = ranges["fc1"]
    assert s == np.float32(1 / 255) and z == -128  # the pixels span [0, 1]
    aq = activation_quantizer(ranges)
    wq = fake_quantize_weights(model.params, bits=8)
    acc_f = model.accuracy(digits["x_test"], digits["y_test"])
    acc_q = model.accuracy(digits["x_test"], digits["y_test"], params=wq, act_quant=aq)
    assert abs(acc_q - acc_f) <= 0.01


def test_activation_quantizer_uses_the_calibrated_grid(digits, trained):
    model = trained[0]
    r2 = calibrate_activations(model, digits["x_val"], bits=2, include_output=True)
    assert "output" in r2
    aq = activation_quantizer(r2)
    assert list(aq) == ["fc1", "fc2"]
    h = aq["fc2"](model.forward(digits["x_val"], act_quant={"fc2": lambda h: h}).astype(np.float32))
    assert len(np.unique(h)) <= 4
    assert "ActivationRanges" in repr(r2)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


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
        (lambda: train(m, x, y, epochs=0, rng=rng), ValueError, "epochs"),
        (lambda: train(m, x, y, epochs=1, rng=1), TypeError, "rng"),
        (lambda: train(m, x, y, epochs=1, rng=rng, lr=-1), ValueError, "lr"),
        (lambda: train(m, x, y, epochs=1, rng=rng, batch_size=0), ValueError, "batch_size"),
        (lambda: train(m, x, y, epochs=1, rng=rng, weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda: train("m", x, y, epochs=1, rng=rng), TypeError, "model"),
        (lambda: train(m, x, y[:-1], epochs=1, rng=rng), ValueError, "y"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc1.weight": np.ones((8, 64))}), TypeError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc1.weight": np.ones((2, 2), bool)}), ValueError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc7.weight": np.ones((8, 64), bool)}), ValueError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, teacher_logits=np.zeros((3, 10))), ValueError, "teacher_logits"),
        (lambda: train(m, x, None, epochs=1, rng=rng, teacher_logits=np.zeros((len(y), 10))), ValueError, "y"),
        (lambda: train(m, x, y, epochs=1, rng=rng, teacher_logits=np.zeros((len(y), 10)), alpha=2), ValueError, "alpha"),
        (lambda: train(m, x, y, epochs=1, rng=rng, x_val=x), ValueError, "y_val"),
        (lambda: calibrate_activations(m, x[:, :3]), ValueError, "x"),
        (lambda: calibrate_activations("m", x), TypeError, "model"),
        (lambda: activation_quantizer([1, 2]), TypeError, "ranges"),
        (lambda: activation_quantizer({"fc1": 0.5}), TypeError, "ranges"),
        (lambda: fake_quantize_weights(m.params, bits=1), ValueError, "bits"),
        (lambda: fake_quantize_weights(m.params, per_channel=1), TypeError, "per_channel"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()
