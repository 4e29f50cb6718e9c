"""Tests for qlib.models.onnx_export: the MLP exported to ONNX (float and int8 QDQ) and run in ONNX Runtime.

ONNX Runtime fuses each quantized layer into one integer kernel that requantizes
with a *float* multiplier, rounding half to even: its codes equal qlib's
fake-quantized simulation except, possibly, on values within float32 rounding of
a half-way point (one code), and differ from the integer-only IntegerMLP
(TensorFlow Lite's fixed-point multiplier, which rounds twice) by one code on
rare values. The tests count both kinds of difference and bound them.
"""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import qlib
from qlib.models.integer_mlp import IntegerMLP
from qlib.models.onnx_export import (
    ONNX_VERSION,
    ONNXRUNTIME_VERSION,
    export_onnx,
    onnx_session,
    optimized_op_types,
    run_onnx,
)
from qlib.models.simulate import activation_quantizer, calibrate_activations, fake_quantize_weights


def importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


needs_onnx = pytest.mark.skipif(not (importable("onnx") and importable("onnxruntime")),
                                reason=f"needs pip install onnx=={ONNX_VERSION} onnxruntime=={ONNXRUNTIME_VERSION}")


@pytest.fixture(scope="module")
def model(trained):
    return trained[0]  # `digits` and `trained`: tests/conftest.py


@pytest.fixture(scope="module")
def imodel(model, digits):
    return IntegerMLP.from_float(model, digits["x_val"])


@pytest.fixture(scope="module")
def x_all(digits):
    """All 1797 images (train, validation, test): more activations to count differences on."""
    return np.concatenate([digits["x_train"], digits["x_val"], digits["x_test"]]).astype(np.float32)


def code_differences(a, b):
    """(number of codes that differ, largest difference in codes)."""
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return int(np.count_nonzero(diff)), int(diff.max())


# -- the float graph ----------------------------------------------------------------


@needs_onnx
def test_float_graph_computes_the_model(model, x_all, tmp_path):
    import onnx

    proto = export_onnx(model, tmp_path / "mlp.onnx")
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    onnx.checker.check_model(onnx.load(tmp_path / "mlp.onnx"), full_check=True)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(weights["fc1.weight_t"], model.params["fc1.weight"].T)
    for threads in (1, 2):
        out = run_onnx(proto, x_all, threads=threads)
        assert list(out) == ["logits"] and out["logits"].dtype == np.float32
        np.testing.assert_allclose(out["logits"], model.forward(x_all), rtol=1e-5, atol=1e-5)


@needs_onnx
def test_float64_model_is_exported_in_float32(model, digits):
    m64 = model.astype(np.float64)
    logits = run_onnx(export_onnx(m64), digits["x_test"])["logits"]
    np.testing.assert_allclose(logits, m64.forward(digits["x_test"]), rtol=1e-5, atol=1e-5)


# -- the int8 QDQ graph of an IntegerMLP ---------------------------------------------


@needs_onnx
def test_qdq_graph_stores_the_integer_models_parameters(imodel, model):
    import onnx

    proto = export_onnx(model, quantized=imodel)
    ops = [n.op_type for n in proto.graph.node]
    assert set(ops) == {"QuantizeLinear", "DequantizeLinear", "MatMul", "Add", "Relu"}
    assert ops.count("QuantizeLinear") == 3 and ops.count("Relu") == 1  # two layer inputs and the logits
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = {n.output[0]: n for n in proto.graph.node}
    for L in imodel.layers:
        codes = init[f"{L.name}.weight_codes"]
        assert codes.dtype == np.int8 and codes.shape == L.weight.T.shape   # W^T: (in, out)
        np.testing.assert_array_equal(codes, L.weight.T)
        np.testing.assert_array_equal(init[f"{L.name}.weight.scale"], L.weight_scale)
        assert not init[f"{L.name}.weight.zero_point"].any()
        axis = [a.i for a in nodes[f"{L.name}.weight_t"].attribute if a.name == "axis"]
        assert axis == [1]                                                  # one scale per column of W^T
        assert init[f"{L.name}.bias_codes"].dtype == np.int32
        np.testing.assert_array_equal(init[f"{L.name}.bias_codes"], L.bias)
        np.testing.assert_array_equal(init[f"{L.name}.bias.scale"],
                                      (np.float64(L.input_scale) * L.weight_scale).astype(np.float32))
        assert init[f"{L.name}.input.scale"] == L.input_scale
        assert init[f"{L.name}.input.zero_point"] == L.input_zero_point


@needs_onnx
@pytest.mark.parametrize("bias", ["int32", "float"])
def test_ort_codes_follow_the_fake_quantized_simulation(model, imodel, x_all, bias):
    """ORT's codes against IntegerMLP.forward_simulated(rounding="half_even"): the same quantizers and codes,
    the real product rounded once, half to even. ORT requantizes with a float32 multiplier, so a value within
    float32 rounding of a half-way point may round the other way: at most one code, on very few values."""
    proto = export_onnx(model, quantized=imodel, bias=bias, code_outputs=True)
    out = run_onnx(proto, x_all)
    assert list(out) == ["logits", "fc1.input_codes", "fc2.input_codes", "logits_codes"]
    ort_codes = list(out.values())[1:]
    sim = imodel.forward_simulated(x_all, rounding="half_even", return_all=True)
    assert [c.dtype for c in ort_codes] == [np.int8] * 3
    np.testing.assert_array_equal(ort_codes[0], sim[0])                # the input: the same QuantizeLinear
    total = sum(c.size for c in ort_codes[1:])
    n_diff, worst = zip(*(code_differences(a, b) for a, b in zip(ort_codes[1:], sim[1:])))
    assert sum(n_diff) < 0.01 * total and max(worst) <= 1, (n_diff, worst)
    np.testing.assert_array_equal(out["logits"], qlib.dequantize(out["logits_codes"], imodel.output_scale,
                                                                 imodel.output_zero_point))


@needs_onnx
def test_ort_codes_against_the_integer_only_path(model, imodel, x_all):
    """Against IntegerMLP.forward_int (TFLite's fixed-point requantization, rounding twice): one code, rarely."""
    out = run_onnx(export_onnx(model, quantized=imodel, code_outputs=True), x_all)
    ort_codes = list(out.values())[1:]
    int_codes = imodel.forward_int(x_all, return_all=True)
    np.testing.assert_array_equal(ort_codes[0], int_codes[0])
    total = sum(c.size for c in ort_codes[1:])
    n_diff, worst = zip(*(code_differences(a, b) for a, b in zip(ort_codes[1:], int_codes[1:])))
    assert 0 < sum(n_diff) < 0.01 * total and max(worst) <= 1, (n_diff, worst)  # this model has some
    agree = np.mean(np.argmax(ort_codes[-1], axis=1) == imodel.predict(x_all))
    assert agree > 0.99


# -- the int8 QDQ graph from calibrated quantizers --------------------------------------


@needs_onnx
@pytest.mark.parametrize("bias", ["int32", "float"])
def test_quantizers_mapping_matches_mlp_forward_simulation(model, digits, x_all, bias):
    """With calibrate_activations' quantizers, ORT's codes are qlib.quantize of the inputs of every layer of
    MLP.forward(params=fake_quantize_weights(...), act_quant=activation_quantizer(...)), up to one code.

    Besides the float32 multiplier, a second source of one-code differences here: the simulation adds the bias
    in float, ORT as int32 codes rounded to the step s_in * s_w (with bias="float" ORT rounds it itself)."""
    ranges = calibrate_activations(model, digits["x_val"], include_output=True)
    proto = export_onnx(model, quantized=ranges, bias=bias, code_outputs=True)
    out = run_onnx(proto, x_all)
    trace = model.trace(x_all, params=fake_quantize_weights(model.params), act_quant=activation_quantizer(ranges))
    expected = [qlib.quantize(h, ranges[ln]) for h, ln in zip(trace.inputs, model.layers)]
    expected.append(qlib.quantize(trace.logits, ranges["output"]))
    got = [out[f"{ln}.input_codes"] for ln in model.layers] + [out["logits_codes"]]
    np.testing.assert_array_equal(got[0], expected[0])
    n_diff, worst = zip(*(code_differences(a, b) for a, b in zip(got[1:], expected[1:])))
    assert sum(n_diff) < 0.01 * sum(c.size for c in got[1:]) and max(worst) <= 1, (n_diff, worst)


@needs_onnx
@pytest.mark.parametrize("bias", ["int32", "float"])
def test_without_output_quantizer_the_logits_stay_float(model, digits, bias):
    """Logits in float: where the hidden codes agree, they agree to float32 rounding (and the int32 rounding of
    the bias, at most half a step s_in * s_w per layer); a hidden code one off moves its row's logits more."""
    ranges = calibrate_activations(model, digits["x_val"])  # no "output"
    out = run_onnx(export_onnx(model, quantized=dict(ranges), bias=bias, code_outputs=True), digits["x_test"])
    assert list(out) == ["logits", "fc1.input_codes", "fc2.input_codes"] and out["logits"].dtype == np.float32
    trace = model.trace(digits["x_test"], params=fake_quantize_weights(model.params),
                        act_quant=activation_quantizer(ranges))
    hidden = qlib.quantize(trace.inputs[1], ranges["fc2"])
    n_diff, worst = code_differences(out["fc2.input_codes"], hidden)
    assert n_diff < 0.01 * hidden.size and worst <= 1
    same = np.all(out["fc2.input_codes"] == hidden, axis=1)
    np.testing.assert_allclose(out["logits"][same], trace.logits[same], rtol=0, atol=1e-3 if bias == "int32" else 1e-4)


@needs_onnx
def test_weight_quantizers_and_uint8_activations(model, digits):
    """Given weight quantizers (here per tensor, 7 bits) and unsigned activations, the graph uses them.

    7-bit weights, as ONNX Runtime's ``reduce_range``: with uint8 activations and 8-bit weights, ORT's
    U8S8 kernel on x86-64 without VNNI (vpmaddubsw) saturates the int16 sum of two products
    (2 * 255 * 127 > 32767), and codes then differ by tens of codes; 2 * 255 * 63 fits.
    """
    import onnx

    ranges = calibrate_activations(model, digits["x_val"], signed=False, include_output=True)
    wq = {f"{ln}.weight": qlib.calibrate(model.params[f"{ln}.weight"], bits=7, symmetric=True)
          for ln in model.layers}
    proto = export_onnx(model, quantized={**ranges, **wq}, code_outputs=True)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert init["fc1.weight.scale"].shape == () and init["fc1.input.scale"].shape == ()
    assert init["fc1.input.zero_point"].dtype == np.uint8 and init["fc1.weight_codes"].max() <= 63
    out = run_onnx(proto, digits["x_test"])
    assert out["fc2.input_codes"].dtype == np.uint8
    params = {k: (qlib.fake_quantize(v, wq[k]) if k in wq else v) for k, v in model.params.items()}
    trace = model.trace(digits["x_test"], params=params, act_quant=activation_quantizer(ranges))
    n_diff, worst = code_differences(out["fc2.input_codes"], qlib.quantize(trace.inputs[1], ranges["fc2"]))
    assert n_diff < 0.01 * out["fc2.input_codes"].size and worst <= 1


@needs_onnx
def test_ort_fuses_the_qdq_groups_into_integer_kernels(model, imodel):
    ops = optimized_op_types(export_onnx(model, quantized=imodel))
    assert "MatMul" not in ops and "Relu" not in ops
    assert ops.count("com.microsoft.QGemm") == 2, ops  # onnxruntime 1.32 on x86-64


@needs_onnx
@pytest.mark.parametrize("opset", [13, 21])
def test_opsets(model, imodel, digits, opset):
    proto = export_onnx(model, quantized=imodel, opset=opset)
    assert proto.opset_import[0].version == opset
    logits = run_onnx(proto, digits["x_test"])["logits"]
    assert np.mean(np.argmax(logits, axis=1) == digits["y_test"]) > 0.9


@needs_onnx
def test_session_reuse_and_optimized_model_path(model, digits, tmp_path):
    proto = export_onnx(model)
    session = onnx_session(proto, threads=2, optimized_model_path=tmp_path / "opt.onnx")
    assert (tmp_path / "opt.onnx").exists()
    a = run_onnx(session, digits["x_test"])["logits"]
    b = run_onnx(proto.SerializeToString(), digits["x_test"])["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="threads"):
        run_onnx(session, digits["x_test"], threads=2)


# -- errors ------------------------------------------------------------------------------


@needs_onnx
def test_argument_errors(model, imodel, digits):
    small = qlib.MLP.init((64, 8, 10), np.random.default_rng(0))
    ranges = calibrate_activations(model, digits["x_val"])
    cases = [
        (TypeError, "model", dict(model=imodel)),
        (TypeError, "path", dict(path=3)),
        (TypeError, "quantized", dict(quantized=[1, 2])),
        (ValueError, "sizes", dict(model=small, quantized=imodel)),
        (ValueError, "fc2", dict(quantized={"fc1": ranges["fc1"]})),
        (ValueError, "fc3", dict(quantized={**ranges, "fc3": ranges["fc1"]})),
        (TypeError, "quantized\\['fc1'\\]", dict(quantized={**ranges, "fc1": 0.5})),
        (ValueError, "8-bit grid", dict(quantized={**ranges, "fc1": qlib.Quantizer(0.1, bits=4)})),
        (ValueError, "per-tensor", dict(quantized={**ranges, "fc1": qlib.Quantizer(np.ones(64), axis=0)})),
        (ValueError, "axis=0", dict(quantized={**ranges, "fc1.weight": qlib.calibrate(
            model.params["fc1.weight"], symmetric=True, axis=1, group_size=16)})),
        (TypeError, "fc1.weight", dict(quantized={**ranges, "fc1.weight": (0.1, 0)})),
        (ValueError, "opset", dict(opset=12)),
        (ValueError, "bias", dict(quantized=imodel, bias="int8")),
        (TypeError, "code_outputs", dict(code_outputs="yes")),
    ]
    for error, match, kwargs in cases:
        with pytest.raises(error, match=match):
            export_onnx(kwargs.pop("model", model), **kwargs)
    proto = export_onnx(model)
    for error, match, call in [
        (ValueError, "x must have shape", lambda: run_onnx(proto, np.ones((2, 63), np.float32))),
        (ValueError, "x", lambda: run_onnx(proto, np.full((2, 64), np.nan, np.float32))),
        (ValueError, "threads", lambda: run_onnx(proto, digits["x_test"], threads=0)),
        (TypeError, "model_proto", lambda: run_onnx("model.onnx", digits["x_test"])),
        (TypeError, "optimized_model_path", lambda: onnx_session(proto, optimized_model_path=1)),
    ]:
        with pytest.raises(error, match=match):
            call()


def test_integer_model_with_narrow_activations_is_refused(model, digits):
    im4 = IntegerMLP.from_float(model, digits["x_val"], act_bits=4)
    with pytest.raises(ValueError, match="act_bits=8"):
        export_onnx(model, quantized=im4)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_packages_say_how_to_install_them(model, digits, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    install = f"pip install onnx=={ONNX_VERSION} onnxruntime=={ONNXRUNTIME_VERSION}"
    calls = [lambda: run_onnx(b"", digits["x_test"]), lambda: onnx_session(b"")]
    if missing == "onnx":
        calls.append(lambda: export_onnx(model))
    for call in calls:
        with pytest.raises(ImportError, match="is missing") as info:
            call()
        assert install in str(info.value)


def test_qlib_does_not_import_onnx():
    """qlib stays numpy-only: onnx and onnxruntime are imported only when a function needs them."""
    code = "import sys, qlib; print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
