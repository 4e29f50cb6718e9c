"""Tests for qlib.models.simulate: fake-quantized weights and activations of an MLP."""

import numpy as np
import pytest

import qlib
from qlib.models.mlp import MLP
from qlib.models.simulate import (
    ActivationRanges,
    activation_quantizer,
    calibrate_activations,
    fake_quantize_weights,
)

# fixtures `digits` and `trained` (model, history): tests/conftest.py


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


@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_fake_quantize_weights_uses_the_calibrated_narrow_grid(trained, method):
    model = trained[0]
    wq = fake_quantize_weights(model.params, bits=4, method=method)
    for name in qlib.weight_names(model.params):
        w = model.params[name]
        quantizer = qlib.calibrate(w, bits=4, symmetric=True, axis=0, method=method)
        assert quantizer.narrow_range
        np.testing.assert_array_equal(wq[name], qlib.fake_quantize(w, quantizer))
        codes = np.rint(wq[name] / quantizer.scale[:, None])
        assert codes.min() >= -7 and codes.max() <= 7  # never the code -8 of the full grid


def test_int8_weights_and_activations_within_one_point(digits, trained):
    model = trained[0]
    ranges = calibrate_activations(model, digits["x_val"], bits=8)
    assert isinstance(ranges, ActivationRanges) and list(ranges) == ["fc1", "fc2"]
    assert ranges.bits == 8 and ranges.signed is True
    s, z = ranges["fc1"]
    assert s == np.float32(1 / 255) and z == -128  # the pixels span [0, 1]
    assert isinstance(ranges["fc1"], qlib.Quantizer) and not ranges["fc1"].narrow_range
    aq = activation_quantizer(ranges)
    wq = fake_quantize_weights(model.params, bits=8)
    acc_f = model.accuracy(digits["x_test"], digits["y_test"])
    acc_q = model.accuracy(digits["x_test"], digits["y_test"], params=wq, act_quant=aq)
    assert abs(acc_q - acc_f) <= 0.01


def test_calibration_sees_the_layer_inputs(digits, trained):
    model = trained[0]
    r = calibrate_activations(model, digits["x_val"], include_output=True)
    trace = model.trace(digits["x_val"])
    for layer, h in zip(model.layers, trace.inputs):
        q = qlib.calibrate(h)
        assert r[layer].scale == q.scale and r[layer].zero_point == q.zero_point
    assert r["output"].scale == qlib.calibrate(trace.logits).scale


def test_activation_quantizer_uses_the_calibrated_grid(digits, trained):
    model = trained[0]
    r2 = calibrate_activations(model, digits["x_val"], bits=2, include_output=True)
    assert "output" in r2
    aq = activation_quantizer(r2)
    assert list(aq) == ["fc1", "fc2"]
    h = aq["fc2"](model.forward(digits["x_val"], act_quant={"fc2": lambda h: h}).astype(np.float32))
    assert len(np.unique(h)) <= 4
    assert "ActivationRanges" in repr(r2)


def test_activation_quantizer_on_pairs_and_grid_override():
    h = np.array([0.2, 0.3, 0.9, 3.0], dtype=np.float32)
    plain = activation_quantizer({"fc1": (np.float32(0.5), np.int8(0))})["fc1"]
    np.testing.assert_array_equal(plain(h), qlib.fake_quantize(h, 0.5, 0))
    q4 = qlib.Quantizer(0.5, 0, bits=4)
    np.testing.assert_array_equal(activation_quantizer({"fc1": q4})["fc1"](h), q4.fake_quantize(h))
    wide = activation_quantizer({"fc1": q4}, bits=2)["fc1"]
    np.testing.assert_array_equal(wide(h), qlib.fake_quantize(h, 0.5, 0, bits=2))
    unsigned = activation_quantizer(ActivationRanges({"fc1": (0.5, 0)}, bits=3, signed=False))["fc1"]
    np.testing.assert_array_equal(unsigned(h), qlib.fake_quantize(h, 0.5, 0, bits=3, signed=False))


def test_bad_inputs(digits):
    m = MLP.init((64, 8, 10), np.random.default_rng(0))
    x = digits["x_val"]
    cases = [
        (lambda: calibrate_activations(m, x[:, :3]), ValueError, "x"),
        (lambda: calibrate_activations("m", x), TypeError, "model"),
        (lambda: calibrate_activations(m, x, include_output=1), TypeError, "include_output"),
        (lambda: activation_quantizer([1, 2]), TypeError, "ranges"),
        (lambda: activation_quantizer({"fc1": 0.5}), TypeError, "ranges"),
        (lambda: activation_quantizer({"fc1": (0.5, 0)}, bits=1), ValueError, "bits"),
        (lambda: fake_quantize_weights(m.params, bits=1), ValueError, "bits"),
        (lambda: fake_quantize_weights(m.params, per_channel=1), TypeError, "per_channel"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()


# -- running_average_ranges -----------------------------------------------------------


def assert_same_ranges(a, b):
    assert list(a) == list(b)
    for layer in a:
        assert a[layer].scale == b[layer].scale and a[layer].zero_point == b[layer].zero_point
        assert a[layer].bits == b[layer].bits and a[layer].signed == b[layer].signed


@pytest.fixture
def small():
    model = MLP.init((6, 5, 4, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(0.3, 1.0, (10, 6)).astype(np.float32)
    return model, x


def test_running_average_with_one_batch_is_calibrate_activations(small, digits, trained):
    model, x = small
    for bits, signed in ((8, True), (4, False)):
        for batch_size in (10, 32):
            r = qlib.running_average_ranges(model, x, bits=bits, signed=signed, batch_size=batch_size)
            assert_same_ranges(r, calibrate_activations(model, x, bits=bits, signed=signed))
            assert isinstance(r, ActivationRanges) and r.bits == bits and r.signed is signed
    # on the digits with the trained model too (the default batch_size 32 >= 20 rows)
    big = trained[0]
    assert_same_ranges(qlib.running_average_ranges(big, digits["x_val"][:20]),
                       calibrate_activations(big, digits["x_val"][:20]))


def test_running_average_with_momentum_0_is_the_last_batch(small):
    model, x = small
    r = qlib.running_average_ranges(model, x, batch_size=4, momentum=0.0)   # batches 0:4, 4:8, 8:10
    last = calibrate_activations(model, x[8:])
    assert_same_ranges(r, last)
    # ... which is not the range of the whole set here
    whole = calibrate_activations(model, x)
    assert any(r[layer].scale != whole[layer].scale for layer in r)


def test_running_average_by_hand():
    model = MLP.init((6, 5, 3), np.random.default_rng(0))
    x = np.zeros((3, 6), dtype=np.float32)
    x[0, :2] = (-1, 1)      # min -1, max 1
    x[1, :2] = (-3, 1)      # min -3, max 1
    x[2, :2] = (-1, 3)      # min -1, max 3
    r = qlib.running_average_ranges(model, x, batch_size=1, momentum=0.5)
    # fc1's input is x: min -1 -> (-1 - 3)/2 = -2 -> (-2 - 1)/2 = -1.5, max 1 -> 1 -> (1 + 3)/2 = 2
    # int8 asymmetric on [-1.5, 2]: s = 3.5 / 255, z = -128 - round(-1.5 / s) = -128 + 109
    assert r["fc1"].scale == np.float32(3.5 / 255)
    assert int(r["fc1"].zero_point) == -19
    # fc2's input: the same average of each row's ReLU output range
    h = [model.trace(x[i:i + 1]).inputs[1] for i in range(3)]
    lo, hi = float(h[0].min()), float(h[0].max())
    for hi_row in h[1:]:
        lo, hi = 0.5 * lo + 0.5 * float(hi_row.min()), 0.5 * hi + 0.5 * float(hi_row.max())
    assert lo >= 0 and hi > 0
    expected = qlib.calibrate(np.array([lo, hi], dtype=np.float32))
    assert r["fc2"].scale == expected.scale and r["fc2"].zero_point == expected.zero_point
    np.testing.assert_allclose(float(r["fc2"].scale), hi / 255, rtol=1e-6)    # ReLU outputs: lo is 0 or more
    # with momentum 0.9 the first batch weighs more:
    # min -1 -> -0.9 - 0.3 = -1.2 -> -1.08 - 0.1 = -1.18, max 1 -> 1 -> 0.9 + 0.3 = 1.2
    r9 = qlib.running_average_ranges(model, x, batch_size=1, momentum=0.9)
    np.testing.assert_allclose(float(r9["fc1"].scale), (1.2 + 1.18) / 255, rtol=1e-6)


def test_running_average_errors(small):
    model, x = small
    with pytest.raises(ValueError, match="momentum"):
        qlib.running_average_ranges(model, x, momentum=1.0)
    with pytest.raises(ValueError, match="momentum"):
        qlib.running_average_ranges(model, x, momentum=-0.1)
    with pytest.raises(ValueError, match="batch_size"):
        qlib.running_average_ranges(model, x, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        qlib.running_average_ranges(model, x, batch_size=2.5)
    with pytest.raises(TypeError, match="model"):
        qlib.running_average_ranges(model.params, x)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        qlib.running_average_ranges(model, x[:, :4])
    with pytest.raises(ValueError, match="bits"):
        qlib.running_average_ranges(model, x, bits=1)


# -- dynamic_quantizer ------------------------------------------------------------------


@pytest.fixture
def rows():
    rng = np.random.default_rng(2)
    h = rng.normal(0, 1, (5, 12)).astype(np.float32)
    h[1] *= 20.0                                  # rows of very different ranges
    h[3] = np.abs(h[3]) * 0.01
    return h


def test_dynamic_per_token_is_row_by_row(rows):
    for bits, signed in ((8, True), (4, False), (3, True)):
        q = qlib.dynamic_quantizer(bits, per="token", signed=signed)
        out = q(rows)
        assert out.dtype == np.float32 and out.shape == rows.shape
        for i, row in enumerate(rows):
            expected = qlib.calibrate(row, bits=bits, signed=signed).fake_quantize(row)
            np.testing.assert_array_equal(out[i], expected)


def test_dynamic_per_tensor(rows):
    for bits in (8, 4):
        out = qlib.dynamic_quantizer(bits, per="tensor")(rows)
        np.testing.assert_array_equal(out, qlib.calibrate(rows, bits=bits).fake_quantize(rows))
    np.testing.assert_array_equal(qlib.dynamic_quantizer()(rows), qlib.calibrate(rows).fake_quantize(rows))


def test_dynamic_per_batch_is_blockwise(rows):
    out = qlib.dynamic_quantizer(4, per="batch", batch_size=2)(rows)
    assert out.shape == rows.shape
    for lo, hi in ((0, 2), (2, 4), (4, 5)):            # blocks of 2, 2 and 1 rows
        block = rows[lo:hi]
        np.testing.assert_array_equal(out[lo:hi], qlib.calibrate(block, bits=4).fake_quantize(block))
    # a block as large as the tensor is per tensor; blocks of one row are per token
    np.testing.assert_array_equal(qlib.dynamic_quantizer(4, per="batch", batch_size=5)(rows),
                                  qlib.dynamic_quantizer(4, per="tensor")(rows))
    np.testing.assert_array_equal(qlib.dynamic_quantizer(4, per="batch", batch_size=1)(rows),
                                  qlib.dynamic_quantizer(4, per="token")(rows))


def test_a_small_row_keeps_its_precision_per_token_only(rows):
    small = rows[3]
    token = qlib.dynamic_quantizer(8, per="token")(rows)[3]
    tensor = qlib.dynamic_quantizer(8, per="tensor")(rows)[3]
    err_token, err_tensor = np.max(np.abs(token - small)), np.max(np.abs(tensor - small))
    assert err_token <= (small.max() - min(small.min(), 0)) / 255 / 2 * 1.001   # half its own step
    assert err_tensor > 10 * err_token
    # per tensor the step is set by the large row: the small row collapses to a few levels
    assert len(np.unique(tensor)) < len(np.unique(token))


def test_dynamic_quantizer_in_a_model():
    model = MLP.init((6, 8, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).random((7, 6), dtype=np.float32)
    x[2] *= 50                                          # one input far larger than the others
    token, tensor = qlib.dynamic_quantizer(8, per="token"), qlib.dynamic_quantizer(8, per="tensor")
    y = model.forward(x)
    y_token, y_tensor = model.forward(x, act_quant=token), model.forward(x, act_quant=tensor)
    # per token, each row's result depends on that row only
    for i in range(len(x)):
        np.testing.assert_array_equal(y_token[i], model.forward(x[i:i + 1], act_quant=token)[0])
    # per tensor it does not: the large row coarsens the others
    assert not all(np.array_equal(y_tensor[i], model.forward(x[i:i + 1], act_quant=tensor)[0])
                   for i in range(len(x)))
    others = np.arange(len(x)) != 2
    assert np.abs(y_token - y)[others].max() < np.abs(y_tensor - y)[others].max()


def test_dynamic_quantizer_errors(rows):
    with pytest.raises(ValueError, match="per"):
        qlib.dynamic_quantizer(8, per="channel")
    with pytest.raises(TypeError, match="per"):
        qlib.dynamic_quantizer(8, per=None)
    with pytest.raises(ValueError, match="bits"):
        qlib.dynamic_quantizer(1)
    with pytest.raises(ValueError, match="bits"):
        qlib.dynamic_quantizer(17)
    with pytest.raises(TypeError, match="bits"):
        qlib.dynamic_quantizer(8.0)
    with pytest.raises(ValueError, match="batch_size"):
        qlib.dynamic_quantizer(8, per="batch", batch_size=0)
    with pytest.raises(TypeError, match="signed"):
        qlib.dynamic_quantizer(8, signed=1)
    for per in ("tensor", "batch", "token"):
        q = qlib.dynamic_quantizer(8, per=per)
        with pytest.raises(ValueError, match="2-D"):
            q(rows[0])
        with pytest.raises(ValueError, match="2-D"):
            q(rows[None])
