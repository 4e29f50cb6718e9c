"""Tests for qlib.models.integer_mlp: integer-only inference of the MLP and its float simulation."""

import numpy as np
import pytest

import qlib
from qlib.models.integer_mlp import IntegerLinear, IntegerMLP


@pytest.fixture(scope="module")
def model(trained):
    return trained[0]  # `digits` and `trained`: tests/conftest.py


@pytest.fixture(scope="module")
def imodel(model, digits):
    return IntegerMLP.from_float(model, digits["x_val"])


def test_dtypes_and_ranges(imodel, digits):
    assert len(imodel.layers) == 2 and imodel.sizes == (64, 64, 10)
    for L in imodel.layers:
        assert isinstance(L, IntegerLinear)
        assert L.weight.dtype == np.int8 and L.weight.min() >= -127 and L.weight.max() <= 127
        assert L.bias.dtype == np.int32 and L.folded_bias.dtype == np.int32
        assert L.multiplier.dtype == np.int32 and L.shift.dtype == np.int32
        assert np.all(L.multiplier >= 2**30)  # Q0.31 significands in [0.5, 1)
        assert L.weight_scale.dtype == np.float32 and L.weight_scale.shape == (L.weight.shape[0],)
        assert L.acc_bound < 2**31
    codes = imodel.forward_int(digits["x_test"], return_all=True)
    assert [c.dtype for c in codes] == [np.int8] * 3
    acc = imodel.layers[0].accumulate(codes[0])
    assert acc.dtype == np.int32 and np.abs(acc).max() <= imodel.layers[0].acc_bound
    assert imodel.forward(digits["x_test"]).dtype == np.float64


def test_chain_of_scales(imodel):
    """Each layer's output grid is the next layer's input grid; the input is the pixel grid."""
    assert imodel.input_scale == np.float32(1 / 255) and imodel.input_zero_point == -128
    for a, b in zip(imodel.layers[:-1], imodel.layers[1:]):
        assert a.output_scale == b.input_scale and a.output_zero_point == b.input_zero_point
    assert [L.relu for L in imodel.layers] == [True, False]


def test_parameters_are_the_documented_quantization(model, imodel):
    for L in imodel.layers:
        w = model.params[f"{L.name}.weight"]
        b = model.params[f"{L.name}.bias"].astype(np.float64)
        quantizer = qlib.calibrate(w, symmetric=True, axis=0)
        assert quantizer.narrow_range
        np.testing.assert_array_equal(L.weight_scale, quantizer.scale)
        np.testing.assert_array_equal(L.weight, qlib.quantize(w, quantizer))
        bias_scale = np.float64(L.input_scale) * L.weight_scale.astype(np.float64)
        assert np.all(np.abs(L.bias * bias_scale - b) <= bias_scale / 2 + 1e-12)
        m = bias_scale / np.float64(L.output_scale)
        m0, shift = qlib.quantize_multiplier(m)
        np.testing.assert_array_equal(L.multiplier, m0)
        np.testing.assert_array_equal(L.shift, shift)
        np.testing.assert_array_equal(L.folded_bias, L.bias - L.input_zero_point * L.weight.astype(np.int64).sum(1))


def test_accumulators_are_the_exact_integer_product(imodel, digits):
    q = imodel.quantize_input(digits["x_test"])
    L = imodel.layers[0]
    exact = (q.astype(np.int64) - L.input_zero_point) @ L.weight.T.astype(np.int64) + L.bias
    np.testing.assert_array_equal(L.accumulate(q), exact)


def test_relu_is_fused_into_the_clamp(imodel, digits):
    codes = imodel.forward_int(digits["x_test"], return_all=True)
    h = imodel.layers[0]
    assert codes[1].min() == h.output_zero_point  # real 0 is the code z_out
    acc = h.accumulate(codes[0])
    no_relu = qlib.requantize(acc, h.multiplier, h.shift, h.output_zero_point)
    np.testing.assert_array_equal(codes[1], np.maximum(no_relu, h.output_zero_point))


def test_integer_path_equals_fixed_point_simulation_bit_for_bit(imodel, digits):
    for x in (digits["x_test"], digits["x_val"], digits["x_train"]):
        ints = imodel.forward_int(x, return_all=True)
        sims = imodel.forward_simulated(x, return_all=True)
        for a, b in zip(ints, sims):
            assert a.dtype == b.dtype == np.int8
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(imodel.forward_int(digits["x_test"]), imodel.forward_simulated(digits["x_test"]))


def test_integer_path_vs_half_even_simulation(imodel, digits):
    """Plain fake quantization differs by at most one code per activation (same inputs), rarely."""
    x = digits["x_test"]
    ints = imodel.forward_int(x, return_all=True)
    n_diff = n_total = 0
    for i, L in enumerate(imodel.layers):
        h_in = (ints[i].astype(np.float64) - L.input_zero_point) * np.float64(L.input_scale)
        h_out, codes = L.simulate(h_in, rounding="half_even")
        d = np.abs(codes.astype(np.int64) - ints[i + 1])
        assert d.max() <= 1
        n_diff += int(np.count_nonzero(d))
        n_total += d.size
        np.testing.assert_array_equal(h_out, (codes - np.float64(L.output_zero_point)) * np.float64(L.output_scale))
    assert 0 < n_diff < 0.01 * n_total  # the double rounding of TFLite shows, rarely
    end = imodel.forward_simulated(x, rounding="half_even")
    assert np.count_nonzero(end != ints[-1]) < 0.01 * end.size
    np.testing.assert_array_equal(np.argmax(end, axis=1), imodel.predict(x))


def test_accuracy_within_one_point_of_float(model, imodel, digits):
    acc_float = model.accuracy(digits["x_test"], digits["y_test"])
    acc_int = imodel.accuracy(digits["x_test"], digits["y_test"])
    assert acc_float >= 0.95
    assert abs(acc_int - acc_float) <= 0.01
    np.testing.assert_allclose(imodel.forward(digits["x_test"]), model.forward(digits["x_test"]),
                               atol=4 * float(imodel.output_scale) + 0.5)


def test_low_bits_and_other_calibration_stay_exact(model, digits):
    im = IntegerMLP.from_float(model, digits["x_val"], weight_bits=4, act_bits=6, act_method="mse")
    assert im.layers[0].weight.min() >= -7 and im.layers[0].weight.max() <= 7
    codes = im.forward_int(digits["x_test"], return_all=True)
    assert all(c.min() >= -32 and c.max() <= 31 for c in codes)
    for a, b in zip(codes, im.forward_simulated(digits["x_test"], return_all=True)):
        np.testing.assert_array_equal(a, b)


def test_mse_weights_stay_on_the_narrow_grid(model, digits):
    """MSE calibration clips the range; the codes still never reach -128 (the narrow grid [-127, 127])."""
    im = IntegerMLP.from_float(model, digits["x_val"], weight_method="mse")
    for L in im.layers:
        w = model.params[f"{L.name}.weight"]
        quantizer = qlib.calibrate(w, symmetric=True, axis=0, method="mse")
        np.testing.assert_array_equal(L.weight, qlib.quantize(w, quantizer))
        assert L.weight.min() >= -127 and L.weight.max() <= 127
    assert max(int(np.abs(L.weight).max()) for L in im.layers) == 127  # clipped weights saturate at +-127
    for a, b in zip(im.forward_int(digits["x_test"], return_all=True),
                    im.forward_simulated(digits["x_test"], return_all=True)):
        np.testing.assert_array_equal(a, b)
    for bits in (2, 3):
        low = IntegerMLP.from_float(model, digits["x_val"], weight_bits=bits, weight_method="mse")
        top = 2 ** (bits - 1) - 1
        assert all(L.weight.min() >= -top and L.weight.max() <= top for L in low.layers)


def test_pruned_neuron_with_large_bias(model, digits):
    m = model.copy()
    m.params["fc1.weight"][3] = 0.0  # a dead row: its weight scale would be the float32 epsilon
    m.params["fc1.bias"][3] = 5.0
    im = IntegerMLP.from_float(m, digits["x_val"])
    L = im.layers[0]
    assert abs(int(L.bias[3])) <= 2**30
    np.testing.assert_array_equal(im.forward_int(digits["x_test"]), im.forward_simulated(digits["x_test"]))


def test_size_bytes(imodel):
    n_w = 64 * 64 + 10 * 64
    n_c = 64 + 10
    assert imodel.size_bytes() == n_w + 3 * 4 * n_c + 3 * (4 + 1)


def test_bad_inputs(model, imodel, digits):
    x = digits["x_val"]
    cases = [
        (lambda: IntegerMLP.from_float("model", x), TypeError, "model"),
        (lambda: IntegerMLP.from_float(model, x[:, :5]), ValueError, "calib_x"),
        (lambda: IntegerMLP.from_float(model, x, weight_bits=9), ValueError, "weight_bits"),
        (lambda: IntegerMLP.from_float(model, x, act_bits=1), ValueError, "act_bits"),
        (lambda: IntegerMLP.from_float(model, x, act_bits=8.0), TypeError, "act_bits"),
        (lambda: IntegerMLP.from_float(model, x, act_method="max"), ValueError, "method"),
        (lambda: imodel.forward_int(x[:, :5]), ValueError, "x"),
        (lambda: imodel.forward_int(np.full((2, 64), np.nan)), ValueError, "x"),
        (lambda: imodel.forward_simulated(x, rounding="up"), ValueError, "rounding"),
        (lambda: imodel.forward_simulated(x, rounding=1), TypeError, "rounding"),
        (lambda: imodel.accuracy(x, digits["y_val"][:3]), ValueError, "y"),
        (lambda: imodel.layers[0].forward(x), TypeError, "q"),
        (lambda: imodel.layers[0].forward(np.zeros((2, 3), np.int8)), ValueError, "q"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()


def test_float64_high_mul_is_exact_over_the_int32_range():
    from qlib.models.integer_mlp import _srdhm_float64

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-2**31, 2**31, 20000), [-2**31, 2**31 - 1, 0, 1, -1]])
    m0 = np.concatenate([rng.integers(0, 2**31, 20000), [2**31 - 1, 2**31 - 1, 2**30, 2**30, 2**30]])
    # ties: x * m0 + 2**30 a multiple of 2**31
    x = np.concatenate([x, [1, -1, 3, -3]])
    m0 = np.concatenate([m0, [2**30, 2**30, 2**30, 2**30]])
    got = _srdhm_float64(x.astype(np.float64), m0.astype(np.int32))
    ref = qlib.saturating_rounding_doubling_high_mul(x, m0)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("shift", [1, 0, -1, -20, -31])
def test_simulation_exact_for_any_shift(imodel, digits, shift):
    """Multipliers >= 1/2 (left shifts, saturation) and tiny ones: still bit for bit."""
    import dataclasses

    L = dataclasses.replace(imodel.layers[1], shift=np.full(10, shift, dtype=np.int32))
    q = imodel.forward_int(digits["x_test"], return_all=True)[1]
    h = (q.astype(np.float64) - L.input_zero_point) * np.float64(L.input_scale)
    np.testing.assert_array_equal(L.simulate(h)[1], L.forward(q))
