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
