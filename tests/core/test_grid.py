"""Tests of qlib.core.grid: integer_range (narrow_range), smallest_int_dtype and Quantizer."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest

import qlib
from qlib import Quantizer, dequantize, fake_quantize, integer_range, quantize


def test_exported_from_package():
    assert qlib.Quantizer is Quantizer
    assert set(qlib.core.grid.__all__) == {"integer_range", "smallest_int_dtype", "Quantizer"}


@pytest.mark.parametrize("bits", range(2, 17))
def test_integer_range_narrow(bits):
    h = 2 ** (bits - 1)
    assert integer_range(bits) == (-h, h - 1)
    assert integer_range(bits, narrow_range=True) == (-(h - 1), h - 1)
    assert integer_range(bits, signed=False) == (0, 2**bits - 1)
    assert integer_range(bits, signed=False, narrow_range=True) == (1, 2**bits - 1)
    assert integer_range(bits, True, True) == integer_range(bits, narrow_range=True)


def test_two_bit_narrow_grid_is_ternary():
    assert integer_range(2, narrow_range=True) == (-1, 1)
    q = Quantizer(1.0, bits=2, narrow_range=True)
    assert (q.qmin, q.qmax, q.levels) == (-1, 1, 3)
    np.testing.assert_array_equal(q.quantize(np.array([-5.0, -0.4, 0.6, 5.0])), [-1, 0, 1, 1])


# --------------------------------------------------------------------------
# Quantizer: construction, fields, properties
# --------------------------------------------------------------------------


def test_fields_are_normalized():
    q = Quantizer(0.1, 3, bits=4, signed=False)
    assert isinstance(q.scale, np.float32) and q.scale == np.float32(0.1)
    assert isinstance(q.zero_point, np.uint8) and q.zero_point == 3
    assert (q.bits, q.signed, q.narrow_range, q.axis, q.group_size) == (4, False, False, None, None)
    assert (q.qmin, q.qmax, q.levels, q.granularity) == (0, 15, 16, "tensor")
    q16 = Quantizer(np.array([0.5, 0.25]), np.array([-300, 7]), bits=12, axis=1)
    assert q16.scale.dtype == np.float32 and q16.zero_point.dtype == np.int16
    assert q16.granularity == "channel"
    g = Quantizer(np.ones((2, 3)), axis=1, group_size=4)
    assert g.granularity == "group" and g.zero_point == 0
    # a one-element scale per tensor becomes a scalar
    assert Quantizer(np.array([0.5])).scale.shape == ()


def test_frozen_read_only_and_identity_equality():
    s = np.array([0.5, 0.25], dtype=np.float32)
    q = Quantizer(s, axis=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bits = 4
    with pytest.raises(ValueError):
        q.scale[0] = 1.0  # read-only copy
    s[0] = 9.0
    assert q.scale[0] == 0.5  # the caller's array was copied
    assert q == q and q != Quantizer(s, axis=0)
    assert len({q, q}) == 1  # hashable by identity
    assert dataclasses.is_dataclass(q)


def test_unpacks_and_indexes_as_the_old_pair():
    q = Quantizer(0.25, -3)
    s, z = q
    assert s is q.scale and z is q.zero_point
    assert q[0] == s and q[1] == z and len(q) == 2 and isinstance(q, tuple)


def test_pickle_copy_and_replace_round_trip():
    q = Quantizer(np.array([0.5, 0.25]), np.array([200, 100]), bits=9, signed=False, narrow_range=True, axis=-1)
    for r in (pickle.loads(pickle.dumps(q)), copy.copy(q), copy.deepcopy(q)):
        assert repr(r) == repr(q)
        np.testing.assert_array_equal(r.scale, q.scale)
        assert (r.bits, r.signed, r.narrow_range, r.axis) == (9, False, True, -1)
    r = dataclasses.replace(q, bits=10)
    assert r.bits == 10 and r.zero_point.dtype == np.uint16


def test_repr():
    q = Quantizer(0.015686275, -64)
    assert repr(q) == "Quantizer(8-bit signed [-128, 127], per-tensor, scale 0.015686275, zero point -64)"
    s = np.linspace(0.0012, 0.031, 64)
    q = Quantizer(s, bits=4, narrow_range=True, axis=0)
    assert repr(q) == ("Quantizer(4-bit signed narrow [-7, 7], per-channel axis=0, 64 scales in "
                       "[0.0012, 0.031], zero point 0)")
    q = Quantizer(np.ones((2, 2)), np.array([[1, 2], [3, 4]]), signed=False, axis=1, group_size=32)
    assert repr(q) == ("Quantizer(8-bit unsigned [0, 255], per-group axis=1 group_size=32, 4 scales in "
                       "[1, 1], zero points in [1, 4])")


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((0.0,), {}, ValueError, "scale must be positive"),
        ((np.nan,), {}, ValueError, "scale must be finite"),
        ((1e39,), {}, ValueError, "scale must be positive and finite in float32"),
        (("0.1",), {}, TypeError, "scale must be a real number"),
        ((np.array([]),), {}, ValueError, "scale must not be empty"),
        ((0.1, 0.5), {}, TypeError, "zero_point must be an integer"),
        ((0.1, 128), {}, ValueError, r"zero_point must lie in the 8-bit signed grid \[-128, 127\]"),
        ((0.1, -128), dict(narrow_range=True), ValueError, r"8-bit signed narrow grid \[-127, 127\]"),
        ((0.1, 0), dict(signed=False, narrow_range=True), ValueError, r"unsigned narrow grid \[1, 255\]"),
        ((0.1, 8), dict(bits=4), ValueError, "zero_point must lie in"),
        ((0.1,), dict(bits=1), ValueError, "bits"),
        ((0.1,), dict(bits=4.0), TypeError, "bits"),
        ((0.1,), dict(signed=1), TypeError, "signed"),
        ((0.1,), dict(narrow_range=None), TypeError, "narrow_range"),
        ((0.1,), dict(axis=1.0), TypeError, "axis"),
        ((0.1,), dict(axis=0, group_size=0), ValueError, "group_size"),
        ((0.1,), dict(group_size=4), ValueError, "group_size needs an axis"),
        ((np.ones(3),), {}, ValueError, "scale must be a scalar for a per-tensor quantizer"),
        ((0.1, np.array([1, 2])), {}, ValueError, "zero_point must be a scalar for a per-tensor"),
        ((np.ones(3), np.array([1, 2])), dict(axis=0), ValueError, "zero_point must be a scalar or have the shape"),
        ((0.1, np.array([1, 2])), dict(axis=0), ValueError, "zero_point must be a scalar when scale is"),
        ((np.ones((2, 3)),), dict(axis=0), ValueError, "scale must be a scalar or 1-D per channel"),
        ((np.ones((2, 3)),), dict(axis=2, group_size=2), ValueError, "axis"),
    ],
)
def test_bad_construction(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Quantizer(*args, **kwargs)


# --------------------------------------------------------------------------
# Quantizer path == explicit path
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bits, signed, narrow", [(2, True, True), (4, False, True), (8, True, False),
                                                  (8, True, True), (12, False, False), (16, True, True)])
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_quantizer_path_equals_explicit_call(bits, signed, narrow, gran):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((6, 10)).astype(np.float32) * 3
    lo, hi = integer_range(bits, signed, narrow)
    kw = {"tensor": {}, "channel": dict(axis=0), "group": dict(axis=1, group_size=4)}[gran]
    pshape = {"tensor": (), "channel": (6,), "group": (6, 3)}[gran]
    s = rng.uniform(0.01, 0.2, pshape).astype(np.float32)
    z = rng.integers(lo, hi + 1, pshape)
    q = Quantizer(s, z, bits=bits, signed=signed, narrow_range=narrow, **kw)
    codes = quantize(x, s, z, bits=bits, signed=signed, narrow_range=narrow, **kw)
    assert codes.min() >= lo and codes.max() <= hi
    np.testing.assert_array_equal(quantize(x, q), codes)
    np.testing.assert_array_equal(q.quantize(x), codes)
    assert quantize(x, q).dtype == codes.dtype
    np.testing.assert_array_equal(dequantize(codes, q), dequantize(codes, s, z, **kw))
    np.testing.assert_array_equal(q.dequantize(codes), dequantize(codes, s, z, **kw))
    f = fake_quantize(x, s, z, bits=bits, signed=signed, narrow_range=narrow, **kw)
    np.testing.assert_array_equal(fake_quantize(x, q), f)
    np.testing.assert_array_equal(q.fake_quantize(x), f)


GRID_KW = [dict(zero_point=0), dict(bits=8), dict(signed=True), dict(axis=None), dict(group_size=None),
           dict(narrow_range=False)]


@pytest.mark.parametrize("func, extra", [(f, kw) for f in (quantize, fake_quantize) for kw in GRID_KW]
                         + [(dequantize, kw) for kw in GRID_KW if set(kw) <= {"zero_point", "axis", "group_size"}])
def test_quantizer_with_grid_arguments_is_a_type_error(func, extra):
    x = np.array([0.5, -1.0], dtype=np.float32)
    arg = quantize(x, 0.5) if func is dequantize else x
    with pytest.raises(TypeError, match="the quantizer carries its grid"):
        func(arg, Quantizer(0.5), **extra)
    with pytest.raises(TypeError, match="zero_point"):
        func(arg, Quantizer(0.5), 0)  # positionally too


def test_signatures_show_the_usual_defaults():
    import inspect

    sig = str(inspect.signature(quantize))
    assert sig == ("(x, scale, zero_point=0, *, bits=8, signed=True, narrow_range=False, axis=None, "
                   "group_size=None)")
    assert str(inspect.signature(dequantize)) == "(q, scale, zero_point=0, *, axis=None, group_size=None)"


def test_quantizer_shapes_are_checked_against_x():
    q = Quantizer(np.array([0.5, 0.25, 1.0]), axis=0)
    with pytest.raises(ValueError, match=r"scale must be a scalar or have shape \(2,\)"):
        quantize(np.ones((2, 3)), q)
    np.testing.assert_array_equal(quantize(np.ones((3, 2)), q), [[2, 2], [4, 4], [1, 1]])
