"""Tests for qlib.models.qat: quantization-aware training by composition with fit."""

import math

import numpy as np
import pytest

import qlib
from qlib.models.losses import CrossEntropyLoss, DistillationLoss
from qlib.models.mlp import MLP
from qlib.models.qat import QuantizationAwareLoss, RecordQuantizedAccuracy, qat_finetune
from qlib.models.training import fit

# fixtures `digits` and `trained` (model, history): tests/conftest.py


def _batch(digits, n=64, dtype=np.float64):
    return {"x": digits["x_train"][:n].astype(dtype), "y": digits["y_train"][:n]}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- (a) a 16-bit grid changes (almost) nothing ---------------------------------


def test_16_bits_gives_the_base_gradients(digits):
    model = MLP.init((64, 32, 10), np.random.default_rng(0)).astype(np.float64)
    batch = _batch(digits)
    value0, grads0 = CrossEntropyLoss()(model, batch)
    loss = QuantizationAwareLoss(bits=16)
    value, grads = loss(model, batch)
    assert value == pytest.approx(value0, rel=1e-6)
    # the 16-bit grid moves each weight by at most max|w| / 65534: the gradients by ~2e-5 relative
    for name in grads0:
        assert _rel(grads[name], grads0[name]) < 1e-4, name
    # and exactly: min-max clips nothing, so the STE passes the gradient at the quantized weights unchanged
    reference = MLP(loss.quantized_params(model))
    value_q, grads_q = CrossEntropyLoss()(reference, batch)
    assert value == value_q
    for name in grads_q:
        np.testing.assert_array_equal(grads[name], grads_q[name])


def test_minmax_scales_keep_every_weight_inside_the_range(trained):
    """calibrate rounds max|w|/qmax to the nearest float32; the loss rounds it up, so no channel's top is cut."""
    for dtype in (np.float32, np.float64):
        model = trained[0].astype(dtype)
        for bits in (2, 4, 8, 16):
            loss = QuantizationAwareLoss(bits=bits)
            loss.initialize(model)
            for name, q in loss.quantizers.items():
                w = model.params[name]
                gx, _ = qlib.fake_quantize_backward(w, q, np.ones_like(w))
                assert np.all(gx == 1), (bits, name)
                ref = qlib.calibrate(w, bits=bits, symmetric=True, axis=0)
                ulps = (q.scale.view(np.int32) - ref.scale.view(np.int32))
                assert ulps.min() >= 0 and ulps.max() <= 2


# -- (b) the straight-through estimator ------------------------------------------


def test_ste_cuts_the_gradient_of_a_weight_outside_the_fixed_range(digits):
    model = MLP.init((64, 16, 10), np.random.default_rng(3)).astype(np.float64)
    batch = _batch(digits)
    loss = QuantizationAwareLoss(bits=3)
    loss.initialize(model)
    s = loss.quantizers["fc2.weight"].scale.astype(np.float64)
    w = model.params["fc2.weight"]
    w[4, 7] = 3.9 * s[4]     # beyond the end 3 s of the narrow 3-bit grid, rounds to code 4: clipped
    w[2, 5] = -3.4 * s[2]    # within half a step past the end: rounds onto -3 but is outside the range
    w[1, 1] = 3.0 * s[1]     # exactly at the end: inside (closed range)
    value, grads = loss(model, batch)
    # the reference: the base loss on the fake-quantized weights, its gradient masked by hand
    qp = {k: v.copy() for k, v in model.params.items()}
    for name, q in loss.quantizers.items():
        qp[name] = qlib.fake_quantize(model.params[name], q)
    assert qp["fc2.weight"][4, 7] == pytest.approx(3 * s[4])
    value_q, grads_q = CrossEntropyLoss()(MLP(qp), batch)
    assert value == value_q
    assert grads["fc2.weight"][4, 7] == 0 and grads["fc2.weight"][2, 5] == 0
    assert grads_q["fc2.weight"][4, 7] != 0 and grads_q["fc2.weight"][2, 5] != 0
    expected = grads_q["fc2.weight"].copy()
    expected[4, 7] = expected[2, 5] = 0
    np.testing.assert_array_equal(grads["fc2.weight"], expected)
    for name in ("fc1.weight", "fc1.bias", "fc2.bias"):
        np.testing.assert_array_equal(grads[name], grads_q[name])
    # recalibrated scales follow the weights: nothing is outside, every gradient passes
    recal = QuantizationAwareLoss(bits=3, recalibrate=True)
    recal.initialize(model)
    _, grads_r = recal(model, batch)
    assert grads_r["fc2.weight"][4, 7] != 0 and grads_r["fc2.weight"][2, 5] != 0
    top = np.max(np.abs(w), axis=1)
    np.testing.assert_allclose(recal.quantizers["fc2.weight"].scale, top / 3, rtol=2e-7)


# -- (c) LSQ: the scale gradient against finite differences ------------------------


def test_scale_gradient_matches_finite_differences_of_the_ste_surrogate(digits):
    """dL/ds of the loss equals the central difference of L(s') on the STE surrogate
    w_hat(s') = s' (clip(w/s', lo, hi) + c), with c = round(w/s) - w/s frozen at s (0 where clipped),
    all other weights fake-quantized at their scales: the chain rule through the whole network."""
    model = MLP.init((64, 16, 10), np.random.default_rng(5)).astype(np.float64)
    batch = _batch(digits, 48)
    loss = QuantizationAwareLoss(bits=2, learn_scale=True, scale_init="lsq")  # LSQ's init clips ~1/10
    value, _, scale_grads = loss.gradients(model, batch)
    base = loss.quantized_params(model)

    def surrogate(name, channel, s_new):
        q = loss.quantizers[name]
        w = model.params[name][channel]
        s = float(q.scale[channel])
        v = w / s
        c = np.where((v >= q.qmin) & (v <= q.qmax), np.rint(v) - v, 0.0)
        params = {k: t.copy() for k, t in base.items()}
        params[name][channel] = s_new * (np.clip(w / s_new, q.qmin, q.qmax) + c)
        return CrossEntropyLoss()(MLP(params), batch)[0]

    checked = 0
    for name, channel in [("fc1.weight", 0), ("fc1.weight", 9), ("fc2.weight", 3), ("fc2.weight", 8)]:
        q = loss.quantizers[name]
        s = float(q.scale[channel])
        v = model.params[name][channel] / s
        assert np.all(np.abs(np.abs(v) - q.qmax) > 1e-3)  # no weight at an end: the surrogate is smooth
        clipped = np.abs(v) > q.qmax
        checked += int(clipped.any())
        assert surrogate(name, channel, s) == pytest.approx(value, rel=1e-12)
        h = s * 1e-6
        fd = (surrogate(name, channel, s + h) - surrogate(name, channel, s - h)) / (2 * h)
        assert scale_grads[name][channel] == pytest.approx(fd, rel=1e-5, abs=1e-9), (name, channel)
    assert checked >= 2  # the clipped branch (qmax per clipped weight) is exercised
    assert scale_grads["fc1.weight"].shape == (16,) and scale_grads["fc2.weight"].shape == (10,)


def test_one_lsq_step_moves_each_scale_by_scale_lr_against_its_gradient(digits):
    model = MLP.init((64, 16, 10), np.random.default_rng(5)).astype(np.float64)
    batch = _batch(digits)
    loss = QuantizationAwareLoss(bits=4, learn_scale=True, scale_lr=1e-4)
    loss.initialize(model)
    assert loss.gradient_scale == {"fc1.weight": 1 / math.sqrt(64 * 7), "fc2.weight": 1 / math.sqrt(16 * 7)}
    before = {k: q.scale.astype(np.float64) for k, q in loss.quantizers.items()}
    _, _, scale_grads = loss.gradients(model, batch)
    assert all(q.scale is loss.quantizers[k].scale for k, q in loss.quantizers.items())  # gradients(): no update
    loss(model, batch)
    for name, g in scale_grads.items():
        step = loss.quantizers[name].scale.astype(np.float64) - before[name]
        big = np.abs(g * loss.gradient_scale[name]) > 1e-5  # Adam's first step: lr * g / (|g| + eps)
        assert big.sum() >= 3
        np.testing.assert_allclose(step[big], -1e-4 * np.sign(g[big]), rtol=2e-3)
        np.testing.assert_allclose(loss.scales[name], loss.quantizers[name].scale, rtol=1e-7)
    # a huge step would make scales negative: they are clamped at 2**-23
    crash = QuantizationAwareLoss(bits=4, learn_scale=True, scale_lr=10.0)
    crash(model, batch)
    floor = np.float32(2.0**-23)
    for name, g in scale_grads.items():
        s = crash.quantizers[name].scale
        assert np.all(s >= floor)
        np.testing.assert_array_equal(s[g > 1e-3], floor)


def test_lsq_initialisation_and_per_tensor_asymmetric(trained):
    model = trained[0]
    loss = QuantizationAwareLoss(bits=3, learn_scale=True, scale_init="lsq")
    loss.initialize(model)
    w = model.params["fc1.weight"].astype(np.float64)
    np.testing.assert_allclose(loss.quantizers["fc1.weight"].scale, 2 * np.abs(w).mean(axis=1) / math.sqrt(3),
                               rtol=1e-7)
    tensor = QuantizationAwareLoss(bits=4, per_channel=False, symmetric=False, learn_scale=True)
    tensor.initialize(model)
    q = tensor.quantizers["fc1.weight"]
    assert q.axis is None and np.ndim(q.scale) == 0 and not q.narrow_range
    assert tensor.gradient_scale["fc1.weight"] == 1 / math.sqrt(64 * 64 * 15)  # N_w: the tensor; Q_P: 2**4 - 1
    ref = qlib.calibrate(w.astype(np.float32), bits=4, axis=None)
    assert q.scale == ref.scale and q.zero_point == ref.zero_point


# -- (d) end to end on the digits ----------------------------------------------------


def test_qat_recovers_the_accuracy_that_2_bit_ptq_loses(digits, trained):
    model = trained[0]
    data = {"x": digits["x_train"], "y": digits["y_train"]}
    x_val, y_val = digits["x_val"], digits["y_val"]
    ptq_params = qlib.fake_quantize_weights(model.params, bits=2)
    ptq = model.accuracy(x_val, y_val, params=ptq_params)
    assert ptq < model.accuracy(x_val, y_val) - 0.3      # 2-bit PTQ is a disaster (0.33 here)
    start = QuantizationAwareLoss(bits=2)
    start.initialize(model)
    assert model.accuracy(x_val, y_val, params=start.quantized_params(model)) == ptq  # QAT starts at PTQ
    for kw in ({}, {"learn_scale": True}):
        student = model.copy()
        params, quantizers, hist = qat_finetune(student, data, bits=2, epochs=3, rng=np.random.default_rng(2),
                                                x_val=x_val, y_val=y_val, **kw)
        qat = student.accuracy(x_val, y_val, params=params)
        assert qat > ptq + 0.4 and qat > 0.85, kw     # measured: 0.88 fixed, 0.92 learned
        assert len(hist["loss"]) == len(hist["val_accuracy"]) == 3
        assert abs(hist["val_accuracy"][-1] - qat) < 0.01
        for name, q in quantizers.items():
            assert q.bits == 2 and q.narrow_range and q.axis == 0
            codes = qlib.quantize(student.params[name], q)
            assert set(np.unique(codes)) <= {-1, 0, 1}
            np.testing.assert_array_equal(qlib.dequantize(codes, q), params[name])
        np.testing.assert_array_equal(params["fc1.bias"], student.params["fc1.bias"])


def test_qat_finetune_is_fit_with_the_loss(digits, trained):
    """The convenience adds nothing to fit + the loss: the same parameters bit for bit."""
    data = {"x": digits["x_train"][:300], "y": digits["y_train"][:300]}
    a, b = trained[0].copy(), trained[0].copy()
    params, _, hist = qat_finetune(a, data, bits=3, learn_scale=True, epochs=2, lr=2e-3,
                                   rng=np.random.default_rng(7))
    loss = QuantizationAwareLoss(bits=3, learn_scale=True)
    loss.initialize(b, data["x"])
    hist_b = fit(b, data, epochs=2, rng=np.random.default_rng(7), loss=loss, optimizer=qlib.Adam(2e-3))
    assert hist == hist_b
    for name, p in loss.quantized_params(b).items():
        np.testing.assert_array_equal(params[name], p)


def test_quantized_params_and_nbytes(trained):
    model = trained[0]
    loss = QuantizationAwareLoss(bits=4)
    loss.initialize(model)
    qp = loss.quantized_params(model)
    ref = qlib.fake_quantize_weights(model.params, bits=4)
    for name in ref:
        assert qp[name].dtype == np.float32
        np.testing.assert_allclose(qp[name], ref[name], rtol=1e-6, atol=0)
    # 4096 + 640 codes at 4 bits, 64 + 10 float32 scales, 74 float32 biases
    assert loss.nbytes(model) == (4096 + 640) // 2 + 4 * (64 + 10) + 4 * (64 + 10) == 2960
    assert loss.nbytes(model) == qlib.quantize_params(model.params, "uniform", 4, per_channel=True).nbytes
    wide = QuantizationAwareLoss(bits=12)
    wide.initialize(model)
    assert wide.nbytes(model) == 2 * (4096 + 640) + 8 * (64 + 10)


# -- activations, other base losses ---------------------------------------------------


def test_activation_quantization(digits, trained):
    model = trained[0].astype(np.float64)
    batch = _batch(digits)
    loss = QuantizationAwareLoss(bits=4, act_bits=8)
    loss.initialize(model, digits["x_val"])
    ranges = qlib.calibrate_activations(model, digits["x_val"], bits=8, params=loss.quantized_params(model))
    assert list(loss.act_ranges) == ["fc1", "fc2"] and loss.act_ranges.bits == 8
    for layer, q in ranges.items():
        assert loss.act_ranges[layer].scale == q.scale and loss.act_ranges[layer].zero_point == q.zero_point
    value, grads = loss(model, batch)
    trace = model.trace(batch["x"], params=loss.quantized_params(model), act_quant=loss.act_quant)
    ref_value, grad_logits = CrossEntropyLoss().logit_loss(trace.logits, batch)
    assert value == ref_value
    np.testing.assert_array_equal(grads["fc2.bias"], model.backward(trace, grad_logits)["fc2.bias"])
    weights_only = QuantizationAwareLoss(bits=4)
    assert weights_only(model, batch)[0] != value
    # lazily initialised on the first minibatch
    lazy = QuantizationAwareLoss(bits=4, act_bits=8)
    lazy(model, batch)
    assert lazy.act_ranges is not None
    params, quantizers, _ = qat_finetune(trained[0].copy(), {"x": digits["x_train"], "y": digits["y_train"]},
                                         bits=4, act_bits=8, epochs=1, rng=np.random.default_rng(0))
    assert set(quantizers) == {"fc1.weight", "fc2.weight", "fc1", "fc2"}
    act = qlib.activation_quantizer({k: quantizers[k] for k in ("fc1", "fc2")})
    assert trained[0].accuracy(digits["x_val"], digits["y_val"], params=params, act_quant=act) > 0.9


def test_distillation_and_plain_callable_base_losses(digits, trained):
    model = trained[0].astype(np.float64)
    batch = _batch(digits)
    batch["teacher_logits"] = model.forward(batch["x"]) * 1.5
    kd = QuantizationAwareLoss(DistillationLoss(alpha=0.5), bits=3)
    value, grads = kd(model, batch)
    qp = kd.quantized_params(model)
    ref_value, ref_grads = DistillationLoss(alpha=0.5)(MLP(qp), batch)
    assert value == ref_value

    def plain(m, b):  # any loss(model, batch): run on an MLP holding the quantized weights
        return DistillationLoss(alpha=0.5)(m, b)

    value_p, grads_p = QuantizationAwareLoss(plain, bits=3)(model, batch)
    assert value_p == value
    for name in grads:
        np.testing.assert_array_equal(grads_p[name], grads[name])
    hist = fit(model.copy(), batch, epochs=1, rng=np.random.default_rng(0), loss=kd)
    assert np.isfinite(hist["loss"][0])


# -- (e) bad input ---------------------------------------------------------------------


def test_bad_arguments(digits, trained):
    model = trained[0]
    with pytest.raises(TypeError, match="base_loss must be a loss"):
        QuantizationAwareLoss(3)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        QuantizationAwareLoss(bits=1)
    with pytest.raises(TypeError, match="bits must be an integer"):
        QuantizationAwareLoss(bits=4.0)
    with pytest.raises(TypeError, match="learn_scale must be True or False"):
        QuantizationAwareLoss(learn_scale="yes")
    with pytest.raises(ValueError, match="learn_scale and recalibrate exclude each other"):
        QuantizationAwareLoss(learn_scale=True, recalibrate=True)
    with pytest.raises(ValueError, match="scale_init must be one of"):
        QuantizationAwareLoss(scale_init="zeros")
    with pytest.raises(ValueError, match="scale_init='lsq' needs a symmetric grid"):
        QuantizationAwareLoss(learn_scale=True, scale_init="lsq", symmetric=False)
    with pytest.raises(ValueError, match="method must be one of"):
        QuantizationAwareLoss(method="max")
    with pytest.raises(ValueError, match="scale_lr must be a finite real number in"):
        QuantizationAwareLoss(scale_lr=0)
    with pytest.raises(ValueError, match=r"act_bits must be an integer in \[2, 16\]"):
        QuantizationAwareLoss(act_bits=32)
    with pytest.raises(ValueError, match="act_bits needs a base loss with logit_loss"):
        QuantizationAwareLoss(lambda m, b: (0.0, {}), act_bits=8)
    loss = QuantizationAwareLoss(act_bits=8)
    with pytest.raises(ValueError, match="x .calibration inputs. must be given"):
        loss.initialize(model)
    with pytest.raises(TypeError, match="model must be a qlib.MLP"):
        loss.initialize(model.params, digits["x_val"])
    with pytest.raises(ValueError, match="x must have shape"):
        loss.initialize(model, digits["x_val"][:, :10])
    fresh = QuantizationAwareLoss()
    with pytest.raises(ValueError, match="the loss has no quantizers yet"):
        fresh.quantized_params(model)
    with pytest.raises(TypeError, match="batch must be a mapping"):
        fresh(model, [digits["x_val"]])
    with pytest.raises(ValueError, match="batch must hold 'x'"):
        fresh(model, {"y": digits["y_val"]})
    with pytest.raises(TypeError, match="model must be a qlib.MLP"):
        fresh(model.params, _batch(digits))
    fresh.initialize(model)
    other = MLP.init((64, 16, 10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="initialised on another model"):
        fresh(other, _batch(digits, dtype=np.float32))
    fresh.reset()
    fresh(other, _batch(digits, dtype=np.float32))  # after reset: initialised on the new model
    data = {"x": digits["x_train"], "y": digits["y_train"]}
    with pytest.raises(ValueError, match="x_val and y_val must be given together"):
        qat_finetune(model.copy(), data, epochs=1, rng=np.random.default_rng(0), x_val=digits["x_val"])
    with pytest.raises(TypeError, match="data must be a mapping"):
        qat_finetune(model.copy(), digits["x_train"], epochs=1, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        qat_finetune(model.copy(), data, epochs=1, rng=0)
    with pytest.raises(ValueError, match="y must be given"):
        qat_finetune(model.copy(), {"x": digits["x_train"]}, epochs=1, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="loss must be a QuantizationAwareLoss"):
        RecordQuantizedAccuracy(CrossEntropyLoss(), digits["x_val"], digits["y_val"])


def test_a_model_of_other_shapes_is_refused(trained):
    loss = QuantizationAwareLoss(bits=4)
    loss.initialize(trained[0])                      # (64, 64, 10)
    same_rows = MLP.init((32, 64, 10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="initialised on another model"):
        loss.quantized_params(same_rows)
    assert repr(loss) == ("QuantizationAwareLoss(CrossEntropyLoss(), bits=4, per_channel=True, symmetric=True, "
                          "method='minmax', scales=fixed, act_bits=None)")


def test_identity_ste_passes_the_gradient_of_clipped_weights():
    # row 0's range is [-1, 1] (max |w| = 1 at calibration); w = 2 is then clipped
    m = MLP({"fc1.weight": np.array([[1.0, -0.25], [0.5, 0.5]]), "fc1.bias": np.zeros(2)})
    batch = {"x": np.array([[1.0, 2.0]]), "y": np.array([1])}
    grads = {}
    for ste in ("clipped", "identity"):
        loss = QuantizationAwareLoss(bits=2, ste=ste)
        loss.initialize(m)
        tuned = m.copy()
        tuned.params["fc1.weight"][0, 0] = 2.0
        _, grads[ste] = loss(tuned, batch)
    # the gradient with respect to the quantized weight, what the identity STE passes on unchanged
    q = QuantizationAwareLoss(bits=2)
    q.initialize(m)
    moved = m.copy()
    moved.params["fc1.weight"][0, 0] = 2.0
    expected = CrossEntropyLoss()(MLP(q.quantized_params(moved)), batch)[1]["fc1.weight"]
    assert grads["clipped"]["fc1.weight"][0, 0] == 0.0
    assert grads["identity"]["fc1.weight"][0, 0] != 0.0
    np.testing.assert_allclose(grads["identity"]["fc1.weight"], expected)
    np.testing.assert_allclose(grads["clipped"]["fc1.weight"][1], grads["identity"]["fc1.weight"][1])


def test_ste_must_be_known():
    with pytest.raises(ValueError, match="ste"):
        QuantizationAwareLoss(ste="masked")
