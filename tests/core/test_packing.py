"""Tests for qlib.packing: pack / unpack of 1- to 8-bit codes as one LSB-first bitstream."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qlib
from qlib import integer_range
from qlib.core.packing import pack, packed_nbytes, unpack

BITS = tuple(range(1, 9))


def test_exported_from_package():
    assert qlib.pack is pack and qlib.unpack is unpack and qlib.packed_nbytes is packed_nbytes


# ---------------------------------------------------------------------------
# reference oracles
# ---------------------------------------------------------------------------


def old_pack(q, bits):
    """qlib's pack before it handled every width: 1, 2, 4 or 8 bits, first code in the low bits."""
    codes = np.asarray(q).ravel().astype(np.uint8, casting="unsafe")
    if bits == 8:
        return codes
    codes &= np.uint8((1 << bits) - 1)
    per = 8 // bits
    pad = (-codes.size) % per
    if pad:
        codes = np.concatenate([codes, np.zeros(pad, dtype=np.uint8)])
    groups = codes.reshape(-1, per)
    out = groups[:, 0].copy()
    for i in range(1, per):
        out |= groups[:, i] << np.uint8(i * bits)
    return out


def bitstream_pack(q, bits):
    """The definition, bit by bit: bit j of code i is stream bit i * bits + j, LSB first."""
    q = [int(v) % (1 << bits) for v in np.asarray(q).ravel().tolist()]
    out = bytearray(-(-len(q) * bits // 8))
    for i, v in enumerate(q):
        for j in range(bits):
            if v >> j & 1:
                k = i * bits + j
                out[k // 8] |= 1 << (k % 8)
    return np.frombuffer(bytes(out), dtype=np.uint8)


@pytest.mark.parametrize("bits", (1, 2, 4, 8))
@pytest.mark.parametrize("signed", [False, True])
def test_same_bytes_as_the_old_layout_at_1_2_4_8_bits(bits, signed):
    rng = np.random.default_rng(100 + bits * 2 + signed)
    qmin, qmax = integer_range(bits, signed)
    for n in (*range(40), 1000, 4097, 100_003, 3 * 2**15 * 8 + 5):  # the last spans several blocks
        q = rng.integers(qmin, qmax + 1, size=n).astype(np.int8 if signed else np.uint8)
        np.testing.assert_array_equal(pack(q, bits, signed=signed), old_pack(q, bits))


def test_bytes_computed_by_the_old_implementation():
    # computed with qlib's pack before this change, for a fixed seed
    q4 = np.array([-8, 7, -1, 0, 3, -5, 6], dtype=np.int8)
    assert pack(q4, 4).tolist() == [0x78, 0x0F, 0xB3, 0x06]
    q2 = np.array([1, 0, 3, 2, 2, 1, 0], dtype=np.uint8)
    assert pack(q2, 2).tolist() == [177, 6]
    q1 = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0, 1], dtype=np.uint8)
    assert pack(q1, 1).tolist() == [0b10001011, 0b10]
    # 13 codes each, drawn with np.random.default_rng(2024)
    cases = {
        1: ([0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1], [194, 19]),
        2: ([-2, -2, -2, 1, -1, -1, -2, -1, 0, 1, 0, 1, -2], [106, 239, 68, 2]),
        4: ([-1, 1, 3, -8, -5, -1, -7, 7, 2, 4, 0, 1, -3], [31, 131, 251, 121, 66, 16, 13]),
        8: ([-45, -95, -76, 68, -15, 83, -57, 56, 95, 84, -74, -34, -58],
            [211, 161, 180, 68, 241, 83, 199, 56, 95, 84, 182, 222, 198]),
    }
    for bits, (q, packed) in cases.items():
        assert pack(q, bits).tolist() == packed
        assert unpack(packed, bits, len(q), signed=min(q) < 0).tolist() == q


@pytest.mark.parametrize("bits", BITS)
def test_matches_the_bit_by_bit_definition(bits):
    rng = np.random.default_rng(200 + bits)
    for n in (*range(25), 64, 65, 333):
        q = rng.integers(0, 1 << bits, size=n)
        np.testing.assert_array_equal(pack(q, bits), bitstream_pack(q, bits))
        s = q - (1 << (bits - 1))  # signed codes
        np.testing.assert_array_equal(pack(s, bits, signed=True), bitstream_pack(s, bits))


def test_odd_widths_straddle_bytes():
    assert pack([5, 1, 6], 3).tolist() == [0b10001101, 0b1]
    # 8 codes of 3 bits: exactly 3 bytes; 7 codes of 7 bits: 49 bits, 7 bytes
    assert pack(np.full(8, 7), 3).tolist() == [255, 255, 255]
    assert pack(np.full(7, 127), 7).tolist() == [255] * 6 + [1]
    assert pack([31, 0, 31], 5).tolist() == [0x1F, 0x7C]  # 15 bits
    assert pack([-1, 0, -32, 31], 6).tolist() == [0x3F, 0x00, 0x7E]
    for bits in (3, 5, 6, 7):
        assert pack(np.zeros(1000, dtype=np.int8), bits).size == -(-1000 * bits // 8)


def test_packed_nbytes():
    for bits in BITS:
        for n in (0, 1, 7, 8, 9, 1001):
            assert packed_nbytes(n, bits) == pack(np.zeros(n, dtype=np.uint8), bits).size
    assert packed_nbytes(np.int64(10), np.uint8(3)) == 4
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        packed_nbytes(-1, 4)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 8\]"):
        packed_nbytes(10, 9)
    with pytest.raises(TypeError, match="count"):
        packed_nbytes(1.0, 4)
    with pytest.raises(TypeError, match="bits"):
        packed_nbytes(1, True)


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(1, 8), signed=st.booleans(), data=st.data())
def test_round_trip_property(bits, signed, data):
    qmin, qmax = integer_range(bits, signed)
    q = np.array(data.draw(st.lists(st.integers(qmin, qmax), max_size=80)), dtype=np.int16)
    p = pack(q, bits, signed=signed)
    assert p.dtype == np.uint8 and p.shape == (packed_nbytes(q.size, bits),)
    u = unpack(p, bits, q.size, signed=signed)
    assert u.dtype == (np.int8 if signed else np.uint8)
    np.testing.assert_array_equal(u, q)
    np.testing.assert_array_equal(p, bitstream_pack(q, bits))
    # a prefix of the codes
    m = data.draw(st.integers(0, q.size))
    np.testing.assert_array_equal(unpack(p, bits, m, signed=signed), q[:m])


@pytest.mark.parametrize("bits", BITS)
def test_round_trip_large_across_blocks(bits):
    rng = np.random.default_rng(300 + bits)
    n = 2**15 * 8 * 2 + 13  # more than two blocks of words, a partial group at the end
    for signed in (False, True):
        qmin, qmax = integer_range(bits, signed)
        q = rng.integers(qmin, qmax + 1, size=n)
        p = pack(q, bits, signed=signed)
        np.testing.assert_array_equal(unpack(p, bits, n, signed=signed), q)
        head = q[:1000]
        np.testing.assert_array_equal(p[: packed_nbytes(1000, bits) - 1], pack(head, bits, signed=signed)[:-1])


def test_unpack_ignores_bits_beyond_count():
    for bits in (3, 5, 7):
        p = np.full(20, 255, dtype=np.uint8)  # every bit set, including padding
        np.testing.assert_array_equal(unpack(p, bits, 9), np.full(9, (1 << bits) - 1))
        np.testing.assert_array_equal(unpack(p, bits, 9, signed=True), np.full(9, -1))


def test_ml_dtypes_input():
    q = np.array([-8, 7, -1, 0, 3], dtype=ml_dtypes.int4)
    np.testing.assert_array_equal(pack(q, 4), pack(np.array([-8, 7, -1, 0, 3]), 4))
    u = np.array([0, 3, 1, 2], dtype=ml_dtypes.uint2)
    assert pack(u, 2).tolist() == [0 | 3 << 2 | 1 << 4 | 2 << 6]


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
    for n in range(65):
        q = rng.integers(qmin, qmax + 1, size=n)
        if n >= 2:  # always include both extremes
            q[0], q[-1] = qmin, qmax
        p = pack(q, bits, signed=signed)
        assert p.dtype == np.uint8 and p.shape == (-(-n * bits // 8),)
        u = unpack(p, bits, n, signed=signed)
        assert u.dtype == (np.int8 if signed else np.uint8)
        assert u.shape == (n,)
        np.testing.assert_array_equal(u, q)
        # unpacking fewer codes returns exactly the prefix
        if n:
            np.testing.assert_array_equal(unpack(p, bits, n - 1, signed=signed), q[: n - 1])


@pytest.mark.parametrize("bits", range(1, 8))
def test_padding_bits_are_zero(bits):
    p = pack(np.ones(1, dtype=np.uint8), bits)
    assert p.tolist() == [1]
    p = pack(np.full(9, -1), bits, signed=True)  # 9 * bits bits of ones, then zeros
    assert int.from_bytes(p.tobytes(), "little") == (1 << (9 * bits)) - 1


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
    for b in (0, 9, 16, -4):
        with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 8\], got"):
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
    with pytest.raises(ValueError, match=r"count must be at most len\(packed\) \* 8 // bits = 3 \* 8 // 3 = 8, got 9"):
        unpack(p, 3, 9)
    assert unpack(p, 3, 8).size == 8
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
    assert qlib.size_bytes(pack(q, 3)) == 376 == packed_nbytes(1001, 3)
