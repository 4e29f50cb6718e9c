"""Tests of qlib.methods.layerwise: quantize_layers (RTN or GPTQ on every linear layer) and replace_weights."""

import numpy as np
import pytest

import qlib
from qlib.methods.gptq import QuantizedWeight
from qlib.methods.layerwise import quantize_layers, replace_weights


@pytest.fixture
def params():
    """A three-layer model plus tensors that are not linear weights (1-D, 3-D, a non-weight name)."""
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": rng.normal(0, 0.3, (8, 16)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.1, 8).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.3, (6, 8)).astype(np.float32),
        "fc2.bias": rng.normal(0, 0.1, 6).astype(np.float32),
        "fc3.weight": rng.normal(0, 0.3, (4, 6)).astype(np.float32),
        "fc3.bias": rng.normal(0, 0.1, 4).astype(np.float32),
        "conv.weight": rng.normal(size=(2, 3, 3)).astype(np.float32),   # not 2-D: not a linear layer
        "norm.scale": np.ones(4, np.float32),
    }


@pytest.fixture
def inputs():
    """Calibration inputs per layer, with a nonzero mean (so bias correction has work to do)."""
    rng = np.random.default_rng(1)
    return {"fc1": rng.normal(0.5, 1.0, (64, 16)).astype(np.float32),
            "fc2": np.abs(rng.normal(0, 1.0, (64, 8))).astype(np.float32),
            "fc3": np.abs(rng.normal(0, 1.0, (64, 6))).astype(np.float32)}


def assert_same_quantized(a: QuantizedWeight, b: QuantizedWeight):
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.quantizer.scale, b.quantizer.scale)
    np.testing.assert_array_equal(a.quantizer.zero_point, b.quantizer.zero_point)


# -- quantize_layers ------------------------------------------------------------


def test_default_layers_are_the_2d_weights_in_order(params):
    q = quantize_layers(params)
    assert list(q) == ["fc1", "fc2", "fc3"]          # conv.weight (3-D) and norm.scale left out
    assert all(isinstance(r, QuantizedWeight) for r in q.values())


@pytest.mark.parametrize("grid", [dict(bits=4), dict(bits=3, symmetric=False), dict(bits=4, group_size=4),
                                  dict(bits=8, calibration="mse")])
def test_rtn_equals_round_to_nearest_per_layer(params, grid):
    q = quantize_layers(params, method="rtn", **grid)
    rtn_grid = dict(grid)
    rtn_grid["method"] = rtn_grid.pop("calibration", "minmax")
    for layer, r in q.items():
        assert_same_quantized(r, qlib.round_to_nearest(params[f"{layer}.weight"], **rtn_grid))
        assert r.proxy_loss is None


@pytest.mark.parametrize("grid", [dict(bits=4), dict(bits=3, symmetric=False, group_size=8),
                                  dict(bits=4, damp=0.1, act_order=True, block_size=3)])
def test_gptq_equals_gptq_quantize_on_the_given_inputs(params, inputs, grid):
    q = quantize_layers(params, inputs, method="gptq", **grid)
    assert list(q) == ["fc1", "fc2", "fc3"]
    for layer, r in q.items():
        expected = qlib.gptq_quantize(params[f"{layer}.weight"], inputs[layer], **grid)
        assert_same_quantized(r, expected)
        assert r.proxy_loss == expected.proxy_loss
    # the inputs matter: GPTQ on other inputs gives other codes than RTN somewhere
    rtn = quantize_layers(params, bits=grid["bits"])
    assert any(not np.array_equal(q[k].codes, rtn[k].codes) for k in q)


def test_layers_subset_and_order(params, inputs):
    q = quantize_layers(params, layers=["fc3", "fc1"])
    assert list(q) == ["fc3", "fc1"]
    assert_same_quantized(q["fc1"], qlib.round_to_nearest(params["fc1.weight"]))
    # GPTQ needs inputs only for the chosen layers
    g = quantize_layers(params, {"fc2": inputs["fc2"]}, layers=("fc2",), method="gptq")
    assert list(g) == ["fc2"]
    assert_same_quantized(g["fc2"], qlib.gptq_quantize(params["fc2.weight"], inputs["fc2"]))


def test_rtn_ignores_inputs(params, inputs):
    a, b = quantize_layers(params, inputs), quantize_layers(params)
    for k in a:
        assert_same_quantized(a[k], b[k])


def test_a_model_with_params_is_accepted():
    model = qlib.MLP.init((12, 8, 5), np.random.default_rng(0))
    x = np.random.default_rng(1).random((40, 12), dtype=np.float32)
    q = quantize_layers(model, model.layer_inputs(x), method="gptq", bits=4)
    assert list(q) == model.layers
    for layer in model.layers:
        expected = qlib.gptq_quantize(model.params[f"{layer}.weight"], model.layer_inputs(x)[layer], bits=4)
        assert_same_quantized(q[layer], expected)
    p = replace_weights(model, q)
    np.testing.assert_array_equal(p["fc2.weight"], q["fc2"].weight)


def test_nbytes_of_all_layers_by_hand():
    params = {"fc1.weight": np.linspace(-1, 1, 128).reshape(8, 16), "fc1.bias": np.zeros(8),
              "fc2.weight": np.linspace(-1, 2, 32).reshape(4, 8), "fc2.bias": np.zeros(4)}
    # 4-bit symmetric per channel: fc1 128 codes -> 64 bytes + 8 scales * 4; fc2 32 codes -> 16 + 4 * 4
    q = quantize_layers(params, bits=4)
    assert {k: r.nbytes for k, r in q.items()} == {"fc1": 96, "fc2": 32}
    assert sum(r.nbytes for r in q.values()) == 128
    # asymmetric: plus one int8 zero point per row (8 + 4)
    assert sum(r.nbytes for r in quantize_layers(params, bits=4, symmetric=False).values()) == 140
    # groups of 8 columns: fc1 has 8 x 2 scales (64 bytes), fc2 4 x 1 (16)
    assert sum(r.nbytes for r in quantize_layers(params, bits=4, group_size=8).values()) == 64 + 64 + 16 + 16


def test_quantize_layers_errors(params, inputs):
    with pytest.raises(ValueError, match="awq"):
        quantize_layers(params, method="awq")
    with pytest.raises(TypeError, match="needs inputs"):
        quantize_layers(params, method="gptq")
    with pytest.raises(TypeError, match="needs inputs"):
        quantize_layers(params, [inputs["fc1"]], method="gptq")
    with pytest.raises(ValueError, match="fc3"):
        quantize_layers(params, {"fc1": inputs["fc1"], "fc2": inputs["fc2"]}, method="gptq")
    with pytest.raises(TypeError, match="damp"):
        quantize_layers(params, method="rtn", damp=0.1)
    with pytest.raises(TypeError, match="act_order"):
        quantize_layers(params, act_order=True)           # rtn is the default
    with pytest.raises(ValueError, match="fc9"):
        quantize_layers(params, layers=["fc1", "fc9"])
    with pytest.raises(ValueError, match="norm"):
        quantize_layers(params, layers=["norm"])            # norm.scale but no norm.weight
    with pytest.raises(TypeError, match="layers must be a sequence"):
        quantize_layers(params, layers="fc1")
    with pytest.raises(TypeError, match="mapping"):
        quantize_layers([params["fc1.weight"]])
    with pytest.raises(TypeError, match="mapping"):
        quantize_layers(params["fc1.weight"])
    with pytest.raises(ValueError, match="bits"):
        quantize_layers(params, bits=1)


# -- replace_weights ------------------------------------------------------------


def test_replace_weights_puts_the_quantized_weights_in(params):
    original = {k: v.copy() for k, v in params.items()}
    q = quantize_layers(params, layers=["fc1", "fc3"], bits=3)
    out = replace_weights(params, q)
    assert list(out) == list(params) and out is not params
    for layer in ("fc1", "fc3"):
        assert out[f"{layer}.weight"].dtype == np.float32
        np.testing.assert_array_equal(out[f"{layer}.weight"], q[layer].weight)
        assert not np.array_equal(out[f"{layer}.weight"], params[f"{layer}.weight"])
    for name in ("fc1.bias", "fc2.weight", "fc2.bias", "fc3.bias", "conv.weight", "norm.scale"):
        assert out[name] is params[name]
    for k, v in original.items():                         # the input is not modified
        np.testing.assert_array_equal(params[k], v)


def test_replace_weights_keeps_the_dtype_and_takes_plain_arrays():
    params = {"fc.weight": np.array([[0.3, -0.7], [0.1, 0.9]], dtype=np.float64), "fc.bias": np.zeros(2)}
    q = quantize_layers(params, bits=4)
    out = replace_weights(params, q)
    assert out["fc.weight"].dtype == np.float64
    np.testing.assert_array_equal(out["fc.weight"], q["fc"].weight.astype(np.float64))
    half = {"fc.weight": params["fc.weight"].astype(np.float16), "fc.bias": np.zeros(2, np.float16)}
    assert replace_weights(half, quantize_layers(half, bits=4))["fc.weight"].dtype == np.float16
    w_hat = np.array([[0.25, -0.75], [0.0, 1.0]])
    out = replace_weights(params, {"fc": w_hat})
    np.testing.assert_array_equal(out["fc.weight"], w_hat)


def test_bias_correction_restores_the_mean_output(params, inputs):
    q = quantize_layers(params, bits=3)
    out = replace_weights(params, q, bias_inputs=inputs)
    for layer, x in inputs.items():
        w, b = params[f"{layer}.weight"], params[f"{layer}.bias"]
        expected = qlib.bias_correction(w, q[layer].weight, b, x)
        assert out[f"{layer}.bias"].dtype == np.float32
        np.testing.assert_array_equal(out[f"{layer}.bias"], expected.astype(np.float32))
        assert not np.allclose(out[f"{layer}.bias"], b)   # the correction did something
        x64 = x.astype(np.float64)
        float_mean = (x64 @ w.T.astype(np.float64) + b).mean(axis=0)
        corrected = (x64 @ out[f"{layer}.weight"].T.astype(np.float64) + out[f"{layer}.bias"]).mean(axis=0)
        uncorrected = (x64 @ out[f"{layer}.weight"].T.astype(np.float64) + b).mean(axis=0)
        np.testing.assert_allclose(corrected, float_mean, rtol=0, atol=1e-5)
        assert np.max(np.abs(uncorrected - float_mean)) > 1e-3   # without correction the mean is off


def test_bias_correction_by_hand():
    params = {"fc.weight": np.array([[1.0, 2.0]]), "fc.bias": np.array([0.25])}
    out = replace_weights(params, {"fc": np.array([[1.5, 2.0]])},
                          bias_inputs={"fc": np.array([[1.0, 3.0], [3.0, 1.0]])})
    # mean input (2, 2), weight error (0.5, 0): the bias loses 1
    np.testing.assert_array_equal(out["fc.bias"], [-0.75])


def test_replace_weights_errors(params, inputs):
    q = quantize_layers(params, layers=["fc1"])
    with pytest.raises(ValueError, match="shape"):
        replace_weights(params, {"fc1": np.zeros((16, 8), np.float32)})
    with pytest.raises(ValueError, match="fc9"):
        replace_weights(params, {"fc9": np.zeros((8, 16), np.float32)})
    no_bias = {k: v for k, v in params.items() if k != "fc1.bias"}
    replace_weights(no_bias, q)                                   # fine without bias correction
    with pytest.raises(ValueError, match="fc1.bias"):
        replace_weights(no_bias, q, bias_inputs=inputs)
    with pytest.raises(ValueError, match="bias_inputs has no inputs"):
        replace_weights(params, q, bias_inputs={"fc2": inputs["fc2"]})
    with pytest.raises(TypeError, match="QuantizedWeight or an array"):
        replace_weights(params, {"fc1": params["fc1.weight"].tolist()})
    with pytest.raises(TypeError, match="quantized must be a mapping"):
        replace_weights(params, [q["fc1"]])
    with pytest.raises(TypeError, match="bias_inputs must be a mapping"):
        replace_weights(params, q, bias_inputs=inputs["fc1"])
    with pytest.raises(TypeError, match="params must be a mapping"):
        replace_weights(42, q)


def test_repeated_layers_are_refused():
    params = {"fc1.weight": np.ones((2, 3)), "fc1.bias": np.zeros(2)}
    with pytest.raises(ValueError, match="distinct"):
        qlib.quantize_layers(params, layers=["fc1", "fc1"])
