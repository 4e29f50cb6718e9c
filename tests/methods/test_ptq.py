"""Tests of qlib.methods.ptq: whole-model post-training quantization and its storage counts."""

import numpy as np
import pytest

import qlib
from qlib.methods import ptq


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": rng.normal(0, 0.2, (16, 12)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.3, (5, 16)).astype(np.float32),
        "fc2.bias": rng.normal(0, 0.1, 5).astype(np.float32),
    }


def test_best_frac_bits_is_the_argmin_of_the_error():
    x = np.random.default_rng(1).standard_normal(2000)
    for bits in (2, 3, 5, 8):
        f = ptq.best_frac_bits(x, bits)
        errors = [qlib.mse(x, qlib.subinteger_quantize(x, frac_bits=k, bits=bits).dequantize()) for k in range(bits)]
        assert f == int(np.argmin(errors)) and 0 <= f < bits


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_uniform_matches_calibrate_and_fake_quantize(params, bits):
    for per_channel in (False, True):
        for calibration in ("minmax", "mse"):
            r = ptq.quantize_params(params, "uniform", bits, per_channel=per_channel, calibration=calibration)
            for name, t in params.items():
                assert r.params[name].dtype == np.float32 and r.params[name].shape == t.shape
                if t.ndim == 1:
                    np.testing.assert_array_equal(r.params[name], t)
                    assert name not in r.codes and r.storage[name] == t.nbytes
                    continue
                axis = 0 if per_channel else None
                quantizer = qlib.calibrate(t, bits=bits, symmetric=True, axis=axis, method=calibration)
                np.testing.assert_array_equal(r.params[name], qlib.fake_quantize(t, quantizer))
                top = 2 ** (bits - 1) - 1  # the narrow grid of a symmetric calibration
                assert -top <= r.codes[name].min() and r.codes[name].max() <= top
                n_scales = t.shape[0] if per_channel else 1
                assert r.storage[name] == -(-t.size * bits // 8) + 4 * n_scales  # codes at their true width


@pytest.mark.parametrize("method", ["integer", "subinteger", "mixed"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_article_methods(params, method, bits):
    r = ptq.quantize_params(params, method, bits)
    lo, hi = qlib.integer_range(bits)
    for name, t in params.items():
        is_int = method == "integer" or (method == "mixed" and t.ndim == 1)
        f = 0 if is_int else ptq.best_frac_bits(t, bits)
        expected = qlib.subinteger_quantize(t, frac_bits=f, bits=bits)
        np.testing.assert_array_equal(r.codes[name], expected.codes)
        np.testing.assert_allclose(r.params[name], expected.dequantize())
        assert r.params[name].dtype == np.float32
        assert lo <= r.codes[name].min() and r.codes[name].max() <= hi
        # packed codes + mean and std as float32
        assert r.storage[name] == -(-t.size * bits // 8) + 8
    assert r.nbytes == sum(r.storage.values())


def test_more_bits_never_hurt_the_uniform_quantizer(params):
    w = params["fc1.weight"]
    errs = [qlib.mse(w, ptq.quantize_params(params, "uniform", b, per_channel=True).params["fc1.weight"])
            for b in (2, 3, 4, 6, 8)]
    assert errs == sorted(errs, reverse=True)


def test_mse_calibration_no_worse_than_minmax_on_the_weights(params):
    for bits in (2, 3, 4):
        e = {c: qlib.mse(params["fc2.weight"],
                         ptq.quantize_params(params, "uniform", bits, calibration=c).params["fc2.weight"])
             for c in ("minmax", "mse")}
        assert e["mse"] <= e["minmax"]


def test_bad_input(params):
    with pytest.raises(ValueError, match="method"):
        ptq.quantize_params(params, "huffman", 4)
    with pytest.raises(TypeError, match="method"):
        ptq.quantize_params(params, 4, 4)
    with pytest.raises(ValueError, match="bits"):
        ptq.quantize_params(params, "uniform", 9)
    with pytest.raises(ValueError, match="bits"):
        ptq.quantize_params(params, "uniform", 1)
    with pytest.raises(ValueError, match="calibration"):
        ptq.quantize_params(params, "uniform", 4, calibration="percentile")
    with pytest.raises(ValueError, match="uniform"):
        ptq.quantize_params(params, "integer", 4, per_channel=True)
    with pytest.raises(TypeError, match="per_channel"):
        ptq.quantize_params(params, "uniform", 4, per_channel=1)
    with pytest.raises(TypeError, match="params"):
        ptq.quantize_params([1, 2], "uniform", 4)
    with pytest.raises(ValueError, match="params"):
        ptq.quantize_params({}, "uniform", 4)
    with pytest.raises(TypeError, match="fc1.weight"):
        ptq.quantize_params({"fc1.weight": np.ones((2, 2), dtype=np.int8)}, "uniform", 4)
    with pytest.raises(ValueError, match="fc1.weight"):
        ptq.quantize_params({"fc1.weight": np.full((2, 2), np.nan)}, "uniform", 4)


def test_names_with_glob_characters_are_matched_literally():
    rng = np.random.default_rng(2)
    p = {"layer[0].weight": rng.standard_normal((3, 3)), "layer[0].bias": rng.standard_normal(3)}
    r = ptq.quantize_params(p, "mixed", 4)
    assert r.codes["layer[0].bias"].max() <= 2  # integer quantization: about +-2 standard deviations


def test_sparse_storage_counts_mask_nonzeros_and_scales(params):
    pruned, masks = qlib.global_magnitude_prune({k: v for k, v in params.items() if v.ndim == 2}, 0.8)
    p = dict(params, **pruned)
    dense = ptq.quantize_params(p, "uniform", 4, per_channel=True)
    sp = ptq.quantize_params(p, "uniform", 4, per_channel=True, sparse=True)
    for name, t in p.items():
        if t.ndim == 1:
            assert sp.storage[name] == dense.storage[name] == t.nbytes
            continue
        np.testing.assert_array_equal(sp.params[name], dense.params[name])
        q = sp.codes[name]
        assert np.all(q[~masks[name]] == 0)  # pruned weights stay zero
        nnz = int(np.count_nonzero(q))
        assert sp.storage[name] == -(-t.size // 8) + -(-nnz * 4 // 8) + 4 * t.shape[0]
    assert sp.nbytes < dense.nbytes
    with pytest.raises(ValueError, match="sparse"):
        ptq.quantize_params(p, "mixed", 4, sparse=True)
    with pytest.raises(TypeError, match="sparse"):
        ptq.quantize_params(p, "uniform", 4, sparse="yes")


def test_detail_names_the_scheme(params):
    sub2 = ptq.quantize_params(params, "subinteger", 2)
    assert all(d.startswith("subinteger, frac_bits=") for d in sub2.detail.values())
    mixed = ptq.quantize_params(params, "mixed", 4)
    assert mixed.detail["fc1.bias"].startswith("integer,")
    assert mixed.detail["fc1.weight"].startswith("subinteger, frac_bits=")


def test_weights_are_told_apart_by_is_weight(params):
    """A bias stored as a column (out, 1) is not a weight: kept in float by "uniform", integer in "mixed"."""
    p = dict(params, **{"fc1.bias": params["fc1.bias"].reshape(-1, 1)})
    uniform = ptq.quantize_params(p, "uniform", 4)
    assert "fc1.bias" not in uniform.codes and uniform.detail["fc1.bias"] == "kept in float32"
    mixed = ptq.quantize_params(p, "mixed", 4)
    assert mixed.detail["fc1.bias"].startswith("integer,")
    assert [n for n in p if n in uniform.codes] == qlib.weight_names(p)


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_odd_widths_are_counted_at_their_true_size(params, bits):
    r = ptq.quantize_params(params, "uniform", bits, per_channel=True)
    n_w = params["fc1.weight"].size
    assert r.storage["fc1.weight"] == -(-n_w * bits // 8) + 4 * 16
    assert r.detail["fc1.weight"].endswith(f"{bits}-bit slots, float32 scale(s)")
    packed = qlib.pack(r.codes["fc1.weight"], bits, signed=True)
    assert packed.size == qlib.packed_nbytes(n_w, bits)
    np.testing.assert_array_equal(qlib.unpack(packed, bits, n_w, signed=True).reshape(16, 12), r.codes["fc1.weight"])
    sub = ptq.quantize_params(params, "subinteger", bits)
    assert sub.storage["fc2.weight"] == -(-params["fc2.weight"].size * bits // 8) + 8


def notebook_quantize_per_layer(model, widths):
    """Chapter 4's quantize_per_layer(model, widths), verbatim."""
    params, nbytes = {}, 0
    for layer, bits in widths.items():
        tensors = {n: t for n, t in model.params.items() if n.startswith(layer + ".")}
        r = qlib.quantize_params(tensors, "uniform", bits, per_channel=True, calibration="mse")
        params.update(r.params)
        nbytes += r.nbytes
    return params, nbytes


@pytest.mark.parametrize("widths", [{"fc1": 2, "fc2": 8}, {"fc1": 4, "fc2": 4}, {"fc2": 3, "fc1": 8}])
def test_quantize_per_layer_reproduces_chapter_4(params, widths):
    model = qlib.MLP(params)
    expected, expected_bytes = notebook_quantize_per_layer(model, widths)
    got, nbytes = ptq.quantize_per_layer(model.params, widths, per_channel=True, calibration="mse")
    assert nbytes == expected_bytes and list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert qlib.quantize_per_layer is ptq.quantize_per_layer


def test_quantize_per_layer_other_methods_and_bad_input(params):
    p, nbytes = ptq.quantize_per_layer(params, {"fc1": 4, "fc2": 8}, method="mixed")

    def layer(name):
        return {k: v for k, v in params.items() if k.startswith(name + ".")}

    expected = [ptq.quantize_params(layer("fc1"), "mixed", 4), ptq.quantize_params(layer("fc2"), "mixed", 8)]
    assert nbytes == sum(r.nbytes for r in expected)
    assert list(p) == list(params)
    with pytest.raises(TypeError, match="widths"):
        ptq.quantize_per_layer(params, [4, 8])
    with pytest.raises(ValueError, match="widths"):
        ptq.quantize_per_layer(params, {})
    with pytest.raises(ValueError, match="fc9"):
        ptq.quantize_per_layer(params, {"fc9": 4})
    with pytest.raises(ValueError, match="bits"):
        ptq.quantize_per_layer(params, {"fc1": 9})
    with pytest.raises(TypeError, match="params"):
        ptq.quantize_per_layer([1], {"fc1": 4})
    with pytest.raises(ValueError, match="overlapping"):
        ptq.quantize_per_layer({"a.b.weight": np.ones((2, 2)), "a.bias": np.ones(2)}, {"a": 4, "a.b": 4})


def test_quantize_per_layer_accepts_a_model(params):
    model = qlib.MLP(params)
    a = ptq.quantize_per_layer(model, {"fc1": 4, "fc2": 2})
    b = ptq.quantize_per_layer(model.params, {"fc1": 4, "fc2": 2})
    assert a[1] == b[1] and all(np.array_equal(a[0][k], b[0][k]) for k in b[0])


def test_asymmetric_and_kmeans_methods_store_what_they_say():
    import qlib

    rng = np.random.default_rng(0)
    params = {"fc.weight": rng.normal(0.3, 0.1, (8, 16)).astype(np.float32),
              "fc.bias": rng.normal(0, 0.1, 8).astype(np.float32)}
    w = params["fc.weight"]
    asym = qlib.quantize_params(params, "uniform", 4, symmetric=False, calibration="mse")
    qz = qlib.calibrate(w, bits=4, method="mse")
    np.testing.assert_array_equal(asym.params["fc.weight"], qlib.fake_quantize(w, qz))
    assert asym.storage["fc.weight"] == 64 + 4 + 1 and asym.weight_nbytes == 69
    assert asym.nbytes == 69 + 32
    km = qlib.quantize_params(params, "kmeans", 3)
    ref = qlib.kmeans_quantize(w, 3, iters=200)
    np.testing.assert_array_equal(km.params["fc.weight"], ref.dequantize())
    assert km.storage["fc.weight"] == ref.nbytes == 48 + 32 and "converged" in km.detail["fc.weight"]
    np.testing.assert_array_equal(km.params["fc.bias"], params["fc.bias"])
    with pytest.raises(ValueError, match="symmetric grid"):
        qlib.quantize_params(params, "uniform", 4, symmetric=False, sparse=True)
    with pytest.raises(ValueError, match="'uniform' only"):
        qlib.quantize_params(params, "kmeans", 4, symmetric=False)


# -- FP8 and NF4 -------------------------------------------------------------------------


FP8 = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


def row_scale(w, fmt):
    """The row absmax mapped to the format's largest finite value, as a float32 scale per row."""
    return (np.abs(w).max(axis=1, keepdims=True) / qlib.float_format(fmt).max_finite).astype(np.float32)


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_weights_are_round_to_float_with_a_row_scale(params, fmt):
    r = qlib.quantize_params(params, fmt, 8)
    assert r.method == fmt and r.bits == 8
    for name in ("fc1.weight", "fc2.weight"):
        w = params[name]
        expected = qlib.round_to_float(w, fmt, scale=row_scale(w, fmt))
        assert r.params[name].dtype == np.float32
        np.testing.assert_array_equal(r.params[name], expected)
        assert not np.array_equal(r.params[name], w)
        # each row's largest magnitude is the format's largest value times the scale: kept exactly
        i = np.argmax(np.abs(w), axis=1)
        np.testing.assert_allclose(np.abs(r.params[name][np.arange(len(w)), i]), np.abs(w).max(axis=1), rtol=1e-6)
    rel = np.abs(r.params["fc1.weight"] - params["fc1.weight"]) / np.abs(params["fc1.weight"]).max(axis=1)[:, None]
    # 3 (e4m3) or 2 (e5m2) mantissa bits: the relative error of a normal value is at most 2^-4 or 2^-3
    assert rel.max() <= (2.0 ** -4 if fmt == "fp8_e4m3" else 2.0 ** -3)


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_codes_decode_to_the_weights(params, fmt):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    r = qlib.quantize_params(params, fmt, 8)
    for name in ("fc1.weight", "fc2.weight"):
        codes = r.codes[name]
        assert codes.dtype == np.uint8 and codes.shape == params[name].shape
        decoded = codes.view(getattr(ml_dtypes, FP8[fmt])).astype(np.float32) * row_scale(params[name], fmt)
        np.testing.assert_array_equal(decoded, r.params[name])
        assert len(np.unique(codes)) > 20                  # real codes, not a constant


def test_fp8_storage_is_that_of_int8_per_channel(params):
    int8 = qlib.quantize_params(params, "uniform", 8, per_channel=True)
    for fmt in ("fp8_e4m3", "fp8_e5m2"):
        r = qlib.quantize_params(params, fmt, 8)
        assert r.storage == int8.storage
        # by hand: fc1 16 x 12 bytes + 16 float32 scales, fc2 5 x 16 + 5 scales, biases float32
        assert r.storage == {"fc1.weight": 192 + 64, "fc1.bias": 64, "fc2.weight": 80 + 20, "fc2.bias": 20}
        assert r.nbytes == sum(r.storage.values())


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_all_zero_row(params, fmt):
    p = dict(params)
    w = params["fc1.weight"].copy()
    w[3] = 0
    p["fc1.weight"] = w
    r = qlib.quantize_params(p, fmt, 8)
    out = r.params["fc1.weight"]
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[3], 0)
    others = np.arange(len(w)) != 3
    np.testing.assert_array_equal(out[others], qlib.round_to_float(w[others], fmt, scale=row_scale(w[others], fmt)))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert np.all(r.codes["fc1.weight"][3].view(getattr(ml_dtypes, FP8[fmt])).astype(np.float32) == 0)


def test_nf4_is_nf4_quantize(params):
    r = qlib.quantize_params(params, "nf4", 4)
    assert r.method == "nf4" and r.bits == 4
    for name in ("fc1.weight", "fc2.weight"):
        nq = qlib.nf4_quantize(params[name])
        assert r.params[name].dtype == np.float32
        np.testing.assert_array_equal(r.params[name], nq.dequantize())
        np.testing.assert_array_equal(r.codes[name], nq.codes)
        assert r.storage[name] == nq.nbytes
    # by hand: fc1 192 values -> 96 bytes + 3 blocks of 64 (12 bytes); fc2 80 -> 40 + 2 blocks (8)
    assert r.storage["fc1.weight"] == 96 + 12 and r.storage["fc2.weight"] == 40 + 8


@pytest.mark.parametrize("method, bits", [("fp8_e4m3", 8), ("fp8_e5m2", 8), ("nf4", 4)])
def test_float_formats_keep_the_biases(params, method, bits):
    r = qlib.quantize_params(params, method, bits)
    assert list(r.params) == list(params)
    for name in ("fc1.bias", "fc2.bias"):
        np.testing.assert_array_equal(r.params[name], params[name])
        assert r.params[name].dtype == params[name].dtype
        assert r.storage[name] == params[name].nbytes
        assert name not in r.codes
    assert r.nbytes == sum(r.storage.values())


def test_float_formats_errors(params):
    with pytest.raises(ValueError, match="bits must be 8"):
        qlib.quantize_params(params, "fp8_e4m3", 4)
    with pytest.raises(ValueError, match="bits must be 8"):
        qlib.quantize_params(params, "fp8_e5m2", 6)
    with pytest.raises(ValueError, match="bits must be 4"):
        qlib.quantize_params(params, "nf4", 8)
    with pytest.raises(ValueError, match="'uniform' only"):
        qlib.quantize_params(params, "fp8_e4m3", 8, per_channel=True)
    with pytest.raises(ValueError, match="'uniform' only"):
        qlib.quantize_params(params, "nf4", 4, calibration="mse")
