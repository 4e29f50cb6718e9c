"""Tests for qlib.packing: pack / unpack of 1-, 2-, 4- and 8-bit codes."""

import numpy as np
import pytest

import qlib
from qlib import integer_range
from qlib.core.packing import pack, unpack

BITS = (1, 2, 4, 8)


def test_exported_from_package():
    assert qlib.pack is pack and qlib.unpack is unpack


def test_article_example_2bit():
    out = pack([1, 0, 3, 2], bits=2)
    assert out.dtype == np.uint8
    assert out.tolist() == [1 + (0 << 2) + (3 << 4) + (2 << 6)] == [177]
    assert unpack(out, bits=2, count=4).tolist() == [1, 0, 3, 2]


def test_onnx_int4_low_nibble_first():
    # ONNX INT4: element 0 in bits 0-3, element 1 in bits 4-7.
    q = np.array([1, -2, 7, -8, 3], dtype=np.int8)
    out = pack(q, bits=4)
    assert out.tolist() == [0x01 | (0xE << 4), 0x07 | (0x8 << 4), 0x03]
    np.testing.assert_array_equal(unpack(out, 4, 5, signed=True), q)
    # unsigned 4-bit (ONNX UINT4)
    u = np.array([0x0, 0xF, 0xA, 0x5], dtype=np.uint8)
    assert pack(u, 4).tolist() == [0xF0, 0x5A]


def test_1bit_and_8bit_layouts():
    assert pack([1, 0, 0, 0, 0, 0, 0, 1, 1], bits=1).tolist() == [0b10000001, 1]
    assert pack(np.array([-1, 0, 127, -128]), bits=8).tolist() == [255, 0, 127, 128]
    assert unpack([255, 0, 127, 128], 8, 4, signed=True).tolist() == [-1, 0, 127, -128]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_round_trip_every_length(bits, signed):
    rng = np.random.default_rng(bits * 2 + signed)
    qmin, qmax = integer_range(bits, signed)
    per = 8 // bits
    for n in range(65):
        q = rng.integers(qmin, qmax + 1, size=n)
        if n >= 2:  # always include both extremes
            q[0], q[-1] = qmin, qmax
        p = pack(q, bits, signed=signed)
        assert p.dtype == np.uint8 and p.shape == (-(-n // per),)
        u = unpack(p, bits, n, signed=signed)
        assert u.dtype == (np.int8 if signed else np.uint8)
        assert u.shape == (n,)
        np.testing.assert_array_equal(u, q)
        # unpacking fewer codes returns exactly the prefix
        if n:
            np.testing.assert_array_equal(unpack(p, bits, n - 1, signed=signed), q[: n - 1])


@pytest.mark.parametrize("bits", (1, 2, 4))
def test_padding_bits_are_zero(bits):
    p = pack(np.ones(1, dtype=np.uint8), bits)
    assert p.tolist() == [1]


def test_multidimensional_input_is_flattened_in_c_order():
    q = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(pack(q, 4), pack(q.ravel(), 4))
    np.testing.assert_array_equal(unpack(pack(q, 4), 4, 4).reshape(2, 2), q)


def test_any_integer_dtype_and_lists():
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint64):
        assert pack(np.array([1, 0, 3, 2], dtype=dt), 2).tolist() == [177]
    # unpack accepts a list of bytes or another integer dtype
    assert unpack([177], 2, 4).tolist() == [1, 0, 3, 2]
    assert unpack(np.array([177], dtype=np.int64), 2, 4).tolist() == [1, 0, 3, 2]


def test_empty():
    for empty in ([], np.array([], dtype=np.int8), np.zeros((0, 3), dtype=np.int32)):
        out = pack(empty, 4)
        assert out.dtype == np.uint8 and out.shape == (0,)
    assert unpack(np.zeros(0, dtype=np.uint8), 4, 0).shape == (0,)
    assert unpack(np.zeros(0, dtype=np.uint8), 4, 0, signed=True).dtype == np.int8
    assert unpack(np.array([255], dtype=np.uint8), 4, 0).shape == (0,)


def test_signed_inference_and_explicit_signed():
    # no negative value: unsigned range allowed
    assert pack([3], bits=2).tolist() == [3]
    # a negative value: whole array must fit the signed range
    with pytest.raises(ValueError, match="q must hold signed 2-bit codes in \\[-2, 1\\]"):
        pack([-1, 3], bits=2)
    with pytest.raises(ValueError, match="q must hold signed"):
        pack([2], bits=2, signed=True)
    with pytest.raises(ValueError, match="q must hold unsigned"):
        pack([-1], bits=2, signed=False)


def test_out_of_range_values():
    with pytest.raises(ValueError, match="q .* got a value 4"):
        pack([0, 4], bits=2)
    with pytest.raises(ValueError, match="q .* got a value -3"):
        pack([-3], bits=2)
    with pytest.raises(ValueError, match="q"):
        pack([2], bits=1, signed=False)
    with pytest.raises(ValueError, match="q"):
        pack(np.array([256], dtype=np.int16), bits=8)
    with pytest.raises(ValueError, match="q"):
        pack(np.array([-129], dtype=np.int16), bits=8)


def test_bad_bits():
    for b in (0, 3, 5, 16, -4):
        with pytest.raises(ValueError, match="bits must be one of 1, 2, 4 or 8"):
            pack([0], b)
        with pytest.raises(ValueError, match="bits"):
            unpack([0], b, 1)
    with pytest.raises(TypeError, match="bits"):
        pack([0], 4.0)
    with pytest.raises(TypeError, match="bits"):
        unpack([0], True, 1)


def test_type_errors():
    with pytest.raises(TypeError, match="q must be an array of integers.*float"):
        pack([1.0, 2.0], 4)
    with pytest.raises(TypeError, match="q"):
        pack(np.array([1, 2], dtype=np.float32), 4)
    with pytest.raises(TypeError, match="q"):
        pack(np.array([True, False]), 1)
    with pytest.raises(TypeError, match="q"):
        pack(["a"], 4)
    with pytest.raises(TypeError, match="signed"):
        pack([1], 4, signed="yes")
    with pytest.raises(TypeError, match="packed"):
        unpack(np.array([1.0]), 4, 2)
    with pytest.raises(TypeError, match="count"):
        unpack(np.array([1], dtype=np.uint8), 4, 2.0)
    with pytest.raises(TypeError, match="signed"):
        unpack(np.array([1], dtype=np.uint8), 4, 2, signed=1)


def test_unpack_value_errors():
    p = np.array([1, 2, 3], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"count must be at most .* 6, got 7"):
        unpack(p, 4, 7)
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        unpack(p, 4, -1)
    with pytest.raises(ValueError, match="packed must be a 1-D"):
        unpack(p.reshape(3, 1), 4, 2)
    with pytest.raises(ValueError, match="packed must hold bytes"):
        unpack([256], 4, 2)
    with pytest.raises(ValueError, match="packed must hold bytes"):
        unpack([-1], 4, 2)


def test_pack_does_not_alias_input():
    q = np.array([1, 2, 3], dtype=np.uint8)
    p = pack(q, 8)
    p[0] = 99
    assert q[0] == 1


def test_size_of_packed_int4():
    q = np.zeros(1001, dtype=np.int8)
    assert qlib.size_bytes(pack(q, 4)) == 501
    assert qlib.size_bytes(pack(q, 2)) == 251
    assert qlib.size_bytes(pack(q, 1)) == 126
