"""Tests of qlib.models.per_layer: PerLayerQuantized, a model with a mix of layers quantized, cached."""

import numpy as np
import pytest

import qlib
from qlib.models.per_layer import PerLayerQuantized

# fixture `digits`: tests/conftest.py

QUANT = dict(per_channel=True)


@pytest.fixture(scope="module")
def model(digits):
    m = qlib.MLP.init((64, 16, 10), np.random.default_rng(0))
    qlib.train(m, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(1))
    return m


@pytest.fixture
def pq(model, digits):
    return PerLayerQuantized(model, digits, bits=(2, 4, 8), **QUANT)


def merged(model, widths, **quant):
    p = dict(model.params)
    p.update(qlib.quantize_per_layer(model, widths, **quant)[0])
    return p


def assert_params_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_no_layer_quantized_is_the_float_model(pq, model):
    p = pq.params({})
    assert_params_equal(p, model.params)
    assert pq.nbytes({}) == 0


@pytest.mark.parametrize("widths", [{"fc1": 4}, {"fc2": 2}, {"fc1": 8, "fc2": 2}, {"fc2": 4, "fc1": 2}])
def test_params_are_quantize_per_layer_merged_into_the_float_params(pq, model, widths):
    before = {k: v.copy() for k, v in model.params.items()}
    p = pq.params(widths)
    assert_params_equal(p, merged(model, widths, **QUANT))
    for layer in model.layers:
        changed = not np.array_equal(p[f"{layer}.weight"], model.params[f"{layer}.weight"])
        assert changed == (layer in widths)              # quantized layers changed, the others float
    assert_params_equal(model.params, before)            # the model itself is untouched


def test_sizes_are_quantize_per_layer_bytes(pq, model):
    assert set(pq.sizes) == {"fc1", "fc2"}
    for layer in model.layers:
        assert set(pq.sizes[layer]) == {2, 4, 8}
        for b in (2, 4, 8):
            assert pq.sizes[layer][b] == qlib.quantize_per_layer(model, {layer: b}, **QUANT)[1]
    # by hand, per channel: fc1 is 16 x 64 codes, 16 float32 scales, 16 float32 biases
    assert pq.sizes["fc1"] == {2: 256 + 64 + 64, 4: 512 + 64 + 64, 8: 1024 + 64 + 64}
    # fc2: 10 x 16 codes, 10 scales, 10 biases
    assert pq.sizes["fc2"][4] == 80 + 40 + 40
    assert pq.nbytes({"fc1": 2, "fc2": 8}) == pq.sizes["fc1"][2] + pq.sizes["fc2"][8]
    assert pq.nbytes({"fc2": 4}) == 160


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_loss_and_accuracy(pq, model, digits, part):
    for widths in ({}, {"fc1": 2}, {"fc1": 4, "fc2": 8}):
        x, y = digits[f"x_{part}"], digits[f"y_{part}"]
        logits = model.forward(x, params=merged(model, widths, **QUANT) if widths else None)
        assert pq.loss(widths, part) == qlib.cross_entropy(logits, y)
        assert pq.accuracy(widths, part) == float(np.mean(np.argmax(logits, axis=1) == y))
        assert pq.accuracy(widths, part) == model.accuracy(x, y, params=pq.params(widths))
    # 2-bit weights hurt more than 8-bit ones
    assert pq.loss({"fc1": 2, "fc2": 2}, part) > pq.loss({"fc1": 8, "fc2": 8}, part)


def test_default_part_is_val(pq, model, digits):
    logits = model.forward(digits["x_val"], params=pq.params({"fc2": 2}))
    assert pq.loss({"fc2": 2}) == qlib.cross_entropy(logits, digits["y_val"])
    assert pq.accuracy({"fc2": 2}) == pq.accuracy({"fc2": 2}, "val")


def test_evaluations_are_cached(model, digits, monkeypatch):
    pq = PerLayerQuantized(model, digits, bits=(3, 6))
    calls = []
    forward = model.forward

    def counting(x, **kwargs):
        calls.append(len(x))
        return forward(x, **kwargs)
    monkeypatch.setattr(model, "forward", counting)
    first = pq.loss({"fc1": 3})
    assert len(calls) == 1
    assert pq.loss({"fc1": 3}) == first                 # the same value, no second forward pass
    assert pq.accuracy({"fc1": 3}) == pq.accuracy({"fc1": 3})  # accuracy comes with the loss
    assert len(calls) == 1
    pq.loss({"fc1": 3}, "test")                          # another part: one more pass
    pq.loss({"fc1": 6})                                  # another mix: one more
    assert calls == [len(digits["x_val"]), len(digits["x_test"]), len(digits["x_val"])]
    pq.loss({"fc2": 3, "fc1": 6})
    pq.loss({"fc1": 6, "fc2": 3})                        # the same mix in another order: cached
    assert len(calls) == 4


def test_options_go_to_quantize_per_layer(model, digits):
    for quant in (dict(), dict(per_channel=True, calibration="mse"), dict(method="nf4")):
        bits = (4,)
        pq = PerLayerQuantized(model, digits, bits=bits, **quant)
        assert_params_equal(pq.params({"fc1": 4}), merged(model, {"fc1": 4}, **quant))
        assert pq.sizes["fc1"][4] == qlib.quantize_per_layer(model, {"fc1": 4}, **quant)[1]
    # the options change the result: per channel stores more scales than per tensor
    per_tensor = PerLayerQuantized(model, digits, bits=(4,))
    per_channel = PerLayerQuantized(model, digits, bits=(4,), per_channel=True)
    assert per_channel.sizes["fc1"][4] - per_tensor.sizes["fc1"][4] == 4 * 15


def test_layers_restricts_the_quantizable_layers(model, digits):
    pq = PerLayerQuantized(model, digits, bits=(4,), layers=["fc2"])
    assert list(pq.sizes) == ["fc2"]
    assert_params_equal(pq.params({"fc2": 4}), merged(model, {"fc2": 4}))
    with pytest.raises(ValueError, match="fc1"):
        pq.params({"fc1": 4})


def test_errors(pq, model, digits):
    with pytest.raises(ValueError, match="fc3"):
        pq.params({"fc3": 4})
    with pytest.raises(ValueError, match="fc1"):
        pq.loss({"fc1": 3})                              # not one of the widths (2, 4, 8)
    with pytest.raises(ValueError, match="fc2"):
        pq.nbytes({"fc2": 16})
    with pytest.raises(TypeError, match="mapping"):
        pq.params([("fc1", 4)])
    with pytest.raises(TypeError, match="mapping"):
        pq.accuracy(4)
    with pytest.raises(ValueError, match="part"):
        pq.loss({"fc1": 4}, "x_val")
    with pytest.raises(ValueError, match="part"):
        pq.accuracy({}, "validation")
    with pytest.raises(TypeError, match="MLP"):
        PerLayerQuantized(model.params, digits, bits=(4,))
    with pytest.raises(TypeError, match="split"):
        PerLayerQuantized(model, [digits["x_val"], digits["y_val"]], bits=(4,))
    with pytest.raises(ValueError, match="fc9"):
        PerLayerQuantized(model, digits, bits=(4,), layers=["fc1", "fc9"])
    with pytest.raises(ValueError, match="distinct"):
        PerLayerQuantized(model, digits, bits=(4, 4))
    with pytest.raises(ValueError, match="non-empty"):
        PerLayerQuantized(model, digits, bits=())
    with pytest.raises(ValueError, match="bits"):
        PerLayerQuantized(model, digits, bits=(1,))
