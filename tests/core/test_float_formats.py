"""Tests for qlib.core.float_formats: rounding to fp16/bf16/fp8/fp6/fp4 against ml_dtypes, and NF4."""

import dataclasses

import numpy as np
import pytest

import qlib
from qlib.core.float_formats import (
    FLOAT_FORMATS,
    FloatFormat,
    NF4Quantized,
    float_format,
    nf4_codebook,
    nf4_quantize,
    representable_values,
    round_to_float,
    step_at,
)

ml_dtypes = pytest.importorskip("ml_dtypes")

#: qlib's format -> the numpy / ml_dtypes type whose cast it must reproduce.
CASTS = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}

#: QLoRA's NF4 table (bitsandbytes), as printed in the paper's appendix E.
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def bits_of(a):
    return np.asarray(a, np.float32).view(np.uint32)


def ml_cast(x, name):
    return np.asarray(x, np.float32).astype(CASTS[name]).astype(np.float32)


def random_in_range(name, n, seed):
    """float32 values log-uniform over every binade of the format, subnormals included, both signs."""
    f = float_format(name)
    rng = np.random.default_rng(seed)
    lo, hi = np.log2(f.min_subnormal) - 3, np.log2(f.max_finite)
    return (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(lo, hi, n)).astype(np.float32)


# --------------------------------------------------------------------------- the formats

@pytest.mark.parametrize("name", CASTS)
def test_properties_equal_ml_dtypes_finfo(name):
    f, fi = float_format(name), ml_dtypes.finfo(CASTS[name])
    assert f.max_finite == float(fi.max)
    assert f.min_normal == float(fi.smallest_normal)
    assert f.min_subnormal == float(fi.smallest_subnormal)
    assert f.mantissa_bits == fi.nmant and f.exponent_bits == fi.nexp
    assert f.bits == fi.bits
    assert f.emin == fi.minexp


def test_fp32_properties_equal_numpy_finfo():
    f, fi = float_format("fp32"), np.finfo(np.float32)
    expected = (float(fi.max), float(fi.tiny), float(fi.smallest_subnormal))
    assert (f.max_finite, f.min_normal, f.min_subnormal) == expected


def test_headline_numbers():
    assert float_format("fp8_e4m3").max_finite == 448.0 and not float_format("fp8_e4m3").has_inf
    assert float_format("fp8_e5m2").max_finite == 57344.0 and float_format("fp8_e5m2").has_inf
    assert float_format("fp4_e2m1").max_finite == 6.0
    assert float_format("fp16").max_finite == 65504.0


@pytest.mark.parametrize("name", CASTS)
def test_representable_values_are_ml_dtypes_finite_values(name):
    t = CASTS[name]
    width = ml_dtypes.finfo(t).bits  # fp4 / fp6 occupy the low bits of a byte
    patterns = np.arange(1 << width, dtype=np.uint16 if width == 16 else np.uint8)
    with np.errstate(invalid="ignore"):  # the NaN patterns
        every = patterns.view(t).astype(np.float64)
    expected = np.unique(every[np.isfinite(every)])  # +0 and -0 merge
    np.testing.assert_array_equal(representable_values(name), expected.astype(np.float32))


def test_representable_values_refuses_fp32():
    with pytest.raises(ValueError, match="at most 16 bits"):
        representable_values("fp32")


# --------------------------------------------------------------------------- rounding

@pytest.mark.parametrize("name", CASTS)
def test_round_to_float_agrees_bit_for_bit_with_ml_dtypes_in_range(name):
    x = random_in_range(name, 100_000, seed=len(name))
    np.testing.assert_array_equal(bits_of(round_to_float(x, name)), bits_of(ml_cast(x, name)))


@pytest.mark.parametrize("name", CASTS)
def test_ties_round_to_even_as_ml_dtypes(name):
    v = representable_values(name).astype(np.float64)
    mids = (v[1:] + v[:-1]) / 2
    mids32 = mids.astype(np.float32)
    assert np.array_equal(mids32.astype(np.float64), mids)  # exact ties
    got = round_to_float(mids32, name)
    np.testing.assert_array_equal(bits_of(got), bits_of(ml_cast(mids32, name)))
    # and by hand: of the two neighbours, the one with an even mantissa field
    m = float_format(name).mantissa_bits
    lo, hi = v[:-1], v[1:]
    pick = np.where(got == lo.astype(np.float32), lo, hi)
    steps = step_at(pick, name)
    units = np.abs(pick) / steps  # 2**m + mantissa field (normal) or the field (subnormal)
    field = np.where(np.abs(pick) >= float_format(name).min_normal, units - 2.0 ** m, units)
    assert np.all(field % 2 == 0)


def test_fp32_agrees_with_numpy_float64_to_float32_cast():
    rng = np.random.default_rng(0)
    x = rng.normal(size=100_000) * 10.0 ** rng.uniform(-44, 38, size=100_000)
    x = x[np.abs(x) < float(np.finfo(np.float32).max)]
    np.testing.assert_array_equal(bits_of(round_to_float(x, "fp32")), bits_of(x.astype(np.float32)))


@pytest.mark.parametrize("name", CASTS)
def test_saturation_beyond_max(name):
    f = float_format(name)
    big = np.array([1.01, 1.5, 4.0, 1e3]) * f.max_finite
    big = np.concatenate([big, -big])  # float64: beyond float32's range too, for bf16
    got = round_to_float(big, name)
    np.testing.assert_array_equal(got, np.sign(big) * np.float32(f.max_finite))


@pytest.mark.parametrize("name", CASTS)
def test_saturate_false_reproduces_ml_dtypes_overflow(name):
    f = float_format(name)
    vals = representable_values(name).astype(np.float64)
    top, below = vals[-1], vals[-2]
    step = top - below
    x = np.array([top + 0.49 * step, top + 0.5 * step, top + 0.51 * step, 2 * top, 4 * top])
    x = np.concatenate([x, -x])
    x = x[np.abs(x) < float(np.finfo(np.float32).max)].astype(np.float32)  # bf16: drops 2 and 4 * top
    with np.errstate(over="ignore"):
        expected = ml_cast(x, name)
    got = round_to_float(x, name, saturate=False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_array_equal(got[ok], expected[ok])
    if name == "fp8_e4m3":
        assert np.isnan(got[2]) and got[0] == got[1] == 448  # 464 is a tie, to the even 448
    if f.has_inf:
        assert np.isinf(got[2])


def test_scale_maps_absmax_to_the_format_max():
    x = np.array([0.1, -3.0, 2.0])
    f = float_format("fp8_e4m3")
    s = np.abs(x).max() / f.max_finite
    got = round_to_float(x, "fp8_e4m3", scale=s)
    assert got[1] == np.float32(-3.0)
    np.testing.assert_array_equal(got, (round_to_float(x / s, "fp8_e4m3").astype(np.float64) * s).astype(np.float32))
    per_row = round_to_float(np.ones((2, 3)), "fp4_e2m1", scale=np.array([[1.0], [0.25]]))
    np.testing.assert_array_equal(per_row, np.ones((2, 3)))


def test_output_dtype_shape_and_scalars():
    assert round_to_float(np.float16(1.5), "bf16") == 1.5
    assert isinstance(round_to_float(1.0, "fp16"), np.float32)
    out = round_to_float(np.zeros((2, 3), np.float64), "fp8_e5m2")
    assert out.dtype == np.float32 and out.shape == (2, 3)
    assert round_to_float([3], "fp4_e2m1").tolist() == [3.0]  # integers accepted
    assert np.signbit(round_to_float(-1e-30, "fp8_e4m3"))  # underflow keeps the sign, as ml_dtypes


def test_float_format_accepts_instances_and_custom_formats():
    f = FloatFormat("e3m0", 3, 0, 3, False, False)
    assert float_format(f) is f
    assert f.max_finite == 16.0
    np.testing.assert_array_equal(round_to_float([5.0, 6.0, 7.0, 100.0], f), [4.0, 8.0, 8.0, 16.0])
    assert set(FLOAT_FORMATS) >= {"fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"}
    with pytest.raises(TypeError):
        FLOAT_FORMATS["x"] = f
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.bias = 1


# --------------------------------------------------------------------------- steps

@pytest.mark.parametrize("name", list(CASTS) + ["fp32"])
def test_step_at_one_is_two_to_minus_mantissa_bits(name):
    assert step_at(1.0, name) == 2.0 ** -float_format(name).mantissa_bits


@pytest.mark.parametrize("name", CASTS)
def test_step_at_is_the_gap_to_the_next_value(name):
    v = representable_values(name).astype(np.float64)
    pos = v[v >= 0]
    np.testing.assert_array_equal(step_at(pos[:-1], name), np.diff(pos))


def test_step_near_the_maximum():
    assert step_at(448.0, "fp8_e4m3") == 32.0
    assert step_at(57344.0, "fp8_e5m2") == 8192.0
    assert step_at(65504.0, "fp16") == 32.0
    assert step_at(6.0, "fp4_e2m1") == 2.0
    with pytest.raises(ValueError, match="at most fp8_e4m3's largest finite value 448.0"):
        step_at(500.0, "fp8_e4m3")


@pytest.mark.parametrize("call", [
    lambda: round_to_float([1.0], "fp7"),
    lambda: round_to_float([1.0], 8),
    lambda: round_to_float([np.nan], "fp16"),
    lambda: round_to_float([1.0], "fp16", scale=0.0),
    lambda: round_to_float([1.0], "fp16", scale=np.inf),
    lambda: round_to_float(np.ones(3), "fp16", scale=np.ones(2)),
    lambda: round_to_float(np.ones(3), "fp16", scale=np.ones((2, 3))),
    lambda: round_to_float([1.0], "fp16", saturate=1),
    lambda: step_at([np.inf], "fp16"),
])
def test_errors(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert any(word in str(info.value) for word in ("fmt", "x must", "scale", "saturate"))


# --------------------------------------------------------------------------- NF4

def test_nf4_codebook_matches_the_published_table():
    cb = nf4_codebook()
    assert cb.dtype == np.float32 and cb.shape == (16,)
    np.testing.assert_allclose(cb, NF4_PUBLISHED, atol=1e-6)
    assert cb[7] == 0.0 and cb[0] == -1.0 and cb[15] == 1.0


def test_nf4_codebook_is_normal_quantiles():
    from statistics import NormalDist
    cb = nf4_codebook().astype(np.float64)
    delta = 0.5 * (1 / 30 + 1 / 32)
    z = NormalDist().inv_cdf(1 - delta)
    # 8 positive levels at evenly spaced probabilities from 1 - delta down to 1/2
    probs = [NormalDist().cdf(v * z) for v in cb[8:][::-1]]
    np.testing.assert_allclose(np.diff(probs), -(0.5 - delta) / 8, rtol=1e-5)


def test_nf4_round_trip_error_bound():
    rng = np.random.default_rng(0)
    x = (rng.standard_t(3, size=(37, 50)) * 0.02).astype(np.float32)  # 1850 values: a short last block
    nq = nf4_quantize(x)
    assert isinstance(nq, NF4Quantized)
    assert nq.codes.shape == x.shape and nq.codes.dtype == np.uint8 and nq.codes.max() <= 15
    assert nq.scales.shape == (29,) and nq.scales.dtype == np.float32
    flat = x.ravel()
    absmax = np.array([np.abs(flat[i:i + 64]).max() for i in range(0, flat.size, 64)])
    np.testing.assert_array_equal(nq.scales, absmax)
    half_gap = np.diff(nf4_codebook().astype(np.float64)).max() / 2
    bound = np.repeat(absmax, 64)[: flat.size] * half_gap * (1 + 1e-6)
    err = np.abs(nq.dequantize().ravel().astype(np.float64) - flat)
    assert np.all(err <= bound)
    # the maximum of each block is exact
    deq = nq.dequantize().ravel()
    for i in range(0, flat.size, 64):
        j = i + int(np.argmax(np.abs(flat[i:i + 64])))
        assert deq[j] == flat[j]


def test_nf4_codes_are_nearest_levels_slow_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=640)
    nq = nf4_quantize(x, block_size=32)
    cb = nf4_codebook().astype(np.float64)
    blocks = x.reshape(-1, 32)
    ref = np.argmin(np.abs((blocks / np.abs(blocks).max(axis=1, keepdims=True))[..., None] - cb), axis=-1)
    np.testing.assert_array_equal(nq.codes, ref.ravel())


def test_nf4_zero_block_size_and_nbytes():
    x = np.zeros(130)
    x[64:] = np.linspace(-1, 1, 66)
    nq = nf4_quantize(x)
    assert nq.scales[0] == 0.0 and np.all(nq.codes[:64] == 7)
    np.testing.assert_array_equal(nq.dequantize()[:64], 0.0)
    assert nq.nbytes == qlib.packed_nbytes(130, 4) + 3 * 4 == 65 + 12
    assert nf4_quantize(np.ones(6400)).nbytes * 8 / 6400 == 4.5
    with pytest.raises(ValueError, match="block_size"):
        nf4_quantize(x, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        nf4_quantize(x, block_size=64.0)
    with pytest.raises(ValueError, match="finite"):
        nf4_quantize([np.nan])
