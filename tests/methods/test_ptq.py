"""Tests of qlib.ptq: whole-model post-training quantization and its storage counts."""

import numpy as np
import pytest

import qlib
from qlib import ptq


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": rng.normal(0, 0.2, (16, 12)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.3, (5, 16)).astype(np.float32),
        "fc2.bias": rng.normal(0, 0.1, 5).astype(np.float32),
    }


def test_storage_bits():
    assert [ptq.storage_bits(b) for b in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="bits"):
        ptq.storage_bits(9)
    with pytest.raises(TypeError, match="bits"):
        ptq.storage_bits(4.0)


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
                s, z = qlib.calibrate(t, bits=bits, symmetric=True, axis=axis, method=calibration)
                np.testing.assert_array_equal(r.params[name], qlib.fake_quantize(t, s, z, bits=bits, axis=axis))
                slot = ptq.storage_bits(bits)
                n_scales = t.shape[0] if per_channel else 1
                assert r.storage[name] == -(-t.size * slot // 8) + 4 * n_scales


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
        assert r.storage[name] == -(-t.size * ptq.storage_bits(bits) // 8) + 8
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
        ptq.quantize_params(params, "kmeans", 4)
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


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_sparse_round_trip_and_size(bits):
    rng = np.random.default_rng(bits)
    lo, hi = qlib.integer_range(bits)
    q = rng.integers(lo, hi + 1, size=(7, 13)).astype(np.int8)
    q[rng.random(q.shape) < 0.7] = 0
    mask, values = ptq.pack_sparse(q, bits)
    nnz = int(np.count_nonzero(q))
    assert mask.dtype == values.dtype == np.uint8
    assert mask.size == -(-q.size // 8)
    assert values.size == -(-nnz * ptq.storage_bits(bits) // 8)
    np.testing.assert_array_equal(ptq.unpack_sparse(mask, values, bits, q.shape), q)


def test_pack_sparse_edge_cases():
    z = np.zeros((3, 5), dtype=np.int8)
    mask, values = ptq.pack_sparse(z, 4)
    assert values.size == 0 and mask.size == 2
    np.testing.assert_array_equal(ptq.unpack_sparse(mask, values, 4, (3, 5)), z)
    with pytest.raises(ValueError, match="4-bit"):
        ptq.pack_sparse(np.array([8, 0], dtype=np.int8), 4)
    with pytest.raises(TypeError, match="integers"):
        ptq.pack_sparse(np.array([1.0, 0.0]), 4)
    with pytest.raises(ValueError, match="mask"):
        ptq.unpack_sparse(np.zeros(1, dtype=np.uint8), np.zeros(0, dtype=np.uint8), 4, (3, 5))


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
