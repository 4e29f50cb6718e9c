r"""Sub-byte bit packing: store integer codes of any width from 1 to 8 bits as one bitstream.

numpy's smallest integer is one byte, so a 3-bit code held in an ``int8``
array wastes five eighths of its storage. Packing writes the codes one after
another into a single **LSB-first bitstream** of ``uint8`` bytes: code
:math:`i` of width :math:`b` occupies stream bits :math:`[i b, (i + 1) b)`,
its least significant bit first, and stream bit :math:`k` is bit
:math:`k \bmod 8` of byte :math:`\lfloor k / 8 \rfloor`:

.. math::

    \text{bit } j \text{ of } (q_i \bmod 2^b) = \text{bit } (i b + j) \bmod 8
    \text{ of byte } \lfloor (i b + j) / 8 \rfloor .

``n`` codes take :func:`~qlib.packed_nbytes` ``(n, b)`` :math:`= \lceil n b / 8 \rceil`
bytes, their true size: 3-, 5-, 6- and 7-bit codes straddle byte
boundaries. When :math:`b` divides 8 (1, 2, 4 or 8 bits) no code straddles,
and the stream is ``8 // b`` codes per byte, **first code in the lowest
bits**:

.. math::

    \text{byte}_j = \sum_{i=0}^{8/b - 1} (q_{j\,8/b + i} \bmod 2^b) \, 2^{i b}

This is the layout of ONNX ``INT4``/``UINT4`` tensors ("the first element is
stored in the 4 least significant bits") and of PyTorch's ``quint4x2``. For
example, ``pack([1, 0, 3, 2], bits=2)`` is ``[1 + (0 << 2) + (3 << 4) + (2 << 6)]``
``= [177]``.

Signed codes are stored as their ``bits``-wide two's complement
(``q mod 2**bits``: -1 in 4 bits is ``0b1111``), so the bytes alone do not say
whether the codes were signed: :func:`~qlib.unpack` is told, and sign-extends.
The unused high bits of the last byte are zero; :func:`~qlib.unpack` is told
how many codes to return.

Both directions are vectorized numpy: eight codes of ``b`` bits fill exactly
``b`` bytes, so the codes are processed as 64-bit words of eight byte-sized
codes, squeezed together (or spread apart) in three mask-multiply-add steps,
block by cache-sized block. 1- and 8-bit codes take ``np.packbits`` and a
plain copy.
"""

from __future__ import annotations

import numpy as np

from qlib.core.grid import integer_range
from qlib.core.validation import as_int_array, check_bool, check_int

__all__ = ["pack", "unpack", "packed_nbytes"]

#: Eight codes in a little-endian 64-bit word, one per byte, whatever the machine's byte order.
_WORD = np.dtype("<u8")


def _check_bits(bits) -> int:
    return check_int(bits, "bits", 1, 8)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of the bitstream holding ``count`` codes of ``bits`` bits: ``ceil(count * bits / 8)``.

    This is the size of ``pack(q, bits)`` for ``q.size == count``, so a
    model's storage can be counted without packing it.

    Parameters
    ----------
    count : int
        Number of codes, ``>= 0``.
    bits : int
        Width of each code, 1 to 8.

    Returns
    -------
    int
        The number of bytes.

    Raises
    ------
    TypeError
        If ``count`` or ``bits`` is not an integer.
    ValueError
        If ``count`` is negative or ``bits`` outside ``[1, 8]``.

    Examples
    --------
    >>> packed_nbytes(1000, 4), packed_nbytes(1000, 3), packed_nbytes(3, 3)
    (500, 375, 2)
    """
    b = _check_bits(bits)
    n = check_int(count, "count", 0)
    return -(-n * b // 8)


def _field_mask(width: int, period: int, offset: int = 0) -> np.uint64:
    """The 64-bit word with ``width`` one bits from bit ``offset`` of every ``period`` bits."""
    unit = ((1 << width) - 1) << offset
    return _WORD.type(sum(unit << s for s in range(0, 64, period)))


# Eight b-bit codes, one per byte of a 64-bit word, are squeezed into 8b
# contiguous bits (and spread back) in three steps: pairs of bytes, then of
# 16-bit fields, then of 32-bit halves. In a field of 2F bits whose low half
# holds a value `lo` and whose high half a value `hi`, each W bits wide,
#     w + (w & lo_mask) * (2**(F - W) - 1)  moves lo up by F - W, next to hi;
#     w + (w & hi_mask) * (2**(F - W) - 1)  moves hi (at bit W) up to bit F.
# The products never leave their field, so one 64-bit multiply moves every
# field of the word at once: three operations a step.


def _squeeze_steps(b: int) -> tuple[list[tuple[np.uint64, np.uint64]], np.uint64]:
    """(mask, multiplier) per squeeze step, and the final right shift."""
    steps, offset = [], 0
    for field, width in ((8, b), (16, 2 * b), (32, 4 * b)):
        steps.append((_field_mask(width, 2 * field, offset), _WORD.type((1 << (field - width)) - 1)))
        offset += field - width  # the content moves up, towards the top of the field
    return steps, _WORD.type(offset)


def _spread_steps(b: int) -> list[tuple[np.uint64, np.uint64]]:
    """(mask, multiplier) per spread step: the inverse of the squeeze."""
    return [(_field_mask(width, 2 * field, width), _WORD.type((1 << (field - width)) - 1))
            for field, width in ((32, 4 * b), (16, 2 * b), (8, b))]


def _apply_steps(words: np.ndarray, steps, tmp: np.ndarray) -> None:
    for mask, mult in steps:
        np.bitwise_and(words, mask, out=tmp)
        np.multiply(tmp, mult, out=tmp)
        np.add(words, tmp, out=words)


#: Words processed per block: the ten passes over a block stay in the CPU cache.
_BLOCK = 1 << 15


def _stream_slots(buffer: np.ndarray, b: int, groups: int) -> tuple[list[np.ndarray], int, int]:
    """Integer views of the stream ``buffer`` through which each group of 8 codes is written.

    Group ``j`` (codes ``8j`` to ``8j + 7``) owns bytes ``[j b, (j + 1) b)``
    of the stream. Its *slot* is the little-endian integer of ``size`` bytes
    (4 if ``b <= 4``, else 8) at byte ``j b``: its ``b`` bytes and a few of
    the next group's. Neighbouring slots overlap, but those of groups ``per``
    apart do not (``per * b >= size``), so the slots are returned as ``per``
    views, view ``c`` holding groups ``c, c + per, ...``; a group's slot
    bytes beyond its ``b`` are zero, so OR-ing the views into a zeroed
    buffer writes the stream. Returns ``(views, per, size)``.
    """
    size = 4 if b <= 4 else 8
    per = -(-size // b)
    views = []
    for c in range(per):
        count = len(range(c, groups, per))
        views.append(np.ndarray((count,), dtype=f"<u{size}", buffer=buffer, offset=c * b,
                                strides=(per * b,)))
    return views, per, size


def pack(q, bits: int, *, signed: bool | None = None) -> np.ndarray:
    """Pack integer codes of width ``bits`` (1 to 8) into an LSB-first bitstream of ``uint8`` bytes.

    Parameters
    ----------
    q : array_like of int
        The codes, any integer dtype (including ``ml_dtypes``' ``int4``,
        ``uint4``, ``int2`` and ``uint2``) and any shape (flattened in C
        order). May be empty.
    bits : int
        Width of each code, 1 to 8. Widths that divide 8 store ``8 // bits``
        codes per byte; the others let codes straddle bytes.
    signed : bool, optional
        Whether the codes are signed (stored as ``bits``-wide two's
        complement) or unsigned. By default it is inferred: signed if any
        code is negative, unsigned otherwise. Every code must fit the range
        ``qlib.integer_range(bits, signed)``.

    Returns
    -------
    numpy.ndarray of uint8, shape ``(packed_nbytes(q.size, bits),)``
        The bitstream: code ``i`` occupies stream bits ``[i * bits, (i + 1) *
        bits)``, stream bit ``k`` being bit ``k % 8`` of byte ``k // 8``.
        Unused high bits of the last byte are zero.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array (floats and bools are refused),
        ``bits`` is not an integer, or ``signed`` is not a bool or None.
    ValueError
        If ``bits`` is outside ``[1, 8]``, or a code of ``q`` does not fit in
        ``bits`` bits.

    See Also
    --------
    unpack : the inverse.
    packed_nbytes : the size of the result.

    Examples
    --------
    >>> pack([1, 0, 3, 2], bits=2)          # 1 + (0 << 2) + (3 << 4) + (2 << 6)
    array([177], dtype=uint8)

    4-bit codes, low nibble first (ONNX INT4 layout); -1 is stored as 0xF and
    the odd last code gets a zero high nibble:

    >>> [hex(b) for b in pack(np.array([-1, 2, 7], dtype=np.int8), bits=4)]
    ['0x2f', '0x7']

    Three 3-bit codes take 9 bits: code 2 straddles bytes 0 and 1.

    >>> [bin(b) for b in pack([5, 1, 6], bits=3)]    # 0b110_001_101, LSB first
    ['0b10001101', '0b1']
    """
    b = _check_bits(bits)
    arr = as_int_array(q, "q").ravel()
    if signed is not None and not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True, False or None, got {type(signed).__name__} {signed!r}")
    n = arr.size
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    lo_val, hi_val = int(arr.min()), int(arr.max())
    is_signed = (lo_val < 0) if signed is None else bool(signed)
    qmin, qmax = integer_range(b, is_signed)
    if lo_val < qmin or hi_val > qmax:
        kind = "signed" if is_signed else "unsigned"
        bad = lo_val if lo_val < qmin else hi_val
        raise ValueError(
            f"q must hold {kind} {b}-bit codes in [{qmin}, {qmax}], got a value {bad}"
        )
    if b == 8:  # the cast takes each code mod 256: its two's complement byte
        return arr.astype(np.uint8, casting="unsafe")  # always a copy, never q itself
    if b == 1:
        return np.packbits(arr, bitorder="little")  # a nonzero code (1, or -1 if signed) is bit 1
    return _pack_stream(arr, b)


def _pack_stream(arr: np.ndarray, b: int) -> np.ndarray:
    """The bitstream of the validated flat codes ``arr``, for ``2 <= b <= 7``."""
    n = arr.size
    groups = -(-n // 8)
    stream = np.zeros(groups * b + 8, dtype=np.uint8)  # + room for the last slot
    slots, per, size = _stream_slots(stream, b, groups)
    steps, final_shift = _squeeze_steps(b)
    mask = np.uint8((1 << b) - 1)
    codes = np.empty(8 * min(_BLOCK, groups), dtype=np.uint8)
    tmp = np.empty(min(_BLOCK, groups), dtype=_WORD)
    for start in range(0, groups, _BLOCK):  # _BLOCK is a multiple of per
        k = min(_BLOCK, groups - start)
        block = codes[: 8 * k]
        src = arr[8 * start: 8 * (start + k)]
        # Two's complement in b bits: the cast to uint8 takes the value mod 256
        # (wrap-around is what we want), then the mask keeps its low b bits.
        np.copyto(block[: src.size], src, casting="unsafe")
        block[src.size:] = 0
        block &= mask
        words = block.view(_WORD)
        _apply_steps(words, steps, tmp[:k])
        words >>= final_shift  # the group's 8b bits, at the bottom of its word
        values = words.view(f"<u{size}")[:: 8 // size]  # the low `size` bytes of each word
        for c, slot in enumerate(slots):
            slot[start // per: start // per + len(range(c, k, per))] |= values[c::per]
    return stream[: -(-n * b // 8)]


def unpack(packed, bits: int, count: int, signed: bool = False) -> np.ndarray:
    """Unpack the first ``count`` codes of width ``bits`` from a bitstream made by :func:`~qlib.pack`.

    Parameters
    ----------
    packed : array_like of int, 1-D
        The packed bytes: a ``uint8`` array, or integers in ``[0, 255]``.
    bits : int
        Width of each code, 1 to 8.
    count : int
        How many codes to return, from ``0`` to the capacity
        ``len(packed) * 8 // bits``. Bits beyond the first ``count`` codes
        are ignored.
    signed : bool, default False
        Read each code as ``bits``-wide two's complement (sign-extended) or
        as unsigned.

    Returns
    -------
    numpy.ndarray of shape ``(count,)``
        ``int8`` if ``signed`` else ``uint8`` (the smallest numpy dtypes
        holding any 1- to 8-bit code). Reshape it to the tensor's shape.

    Raises
    ------
    TypeError
        If ``packed`` is not an integer array, or ``bits``/``count`` are not
        integers, or ``signed`` is not a bool.
    ValueError
        If ``bits`` is outside ``[1, 8]``, ``packed`` is not 1-D or holds a
        value outside ``[0, 255]``, or ``count`` is negative or exceeds the
        capacity ``len(packed) * 8 // bits``.

    See Also
    --------
    pack : the inverse.

    Examples
    --------
    >>> unpack(np.array([177], dtype=np.uint8), bits=2, count=4)
    array([1, 0, 3, 2], dtype=uint8)
    >>> unpack(np.array([177], dtype=np.uint8), bits=2, count=3, signed=True)
    array([ 1,  0, -1], dtype=int8)
    >>> unpack([0b10001101, 0b1], bits=3, count=3)
    array([5, 1, 6], dtype=uint8)
    """
    b = _check_bits(bits)
    arr = as_int_array(packed, "packed")
    signed = check_bool(signed, "signed")
    if arr.ndim != 1:
        raise ValueError(f"packed must be a 1-D array of bytes, got shape {arr.shape}")
    n = check_int(count, "count", 0)
    capacity = arr.size * 8 // b
    if n > capacity:
        raise ValueError(
            f"count must be at most len(packed) * 8 // bits = {arr.size} * 8 // {b} = "
            f"{capacity}, got {n}"
        )
    if arr.dtype != np.uint8:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(
                f"packed must hold bytes, i.e. integers in [0, 255], got values in "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
        arr = arr.astype(np.uint8)
    used = arr[: -(-n * b // 8)]
    if b == 8:
        out = used.copy()
    elif b == 1:
        out = np.unpackbits(used, count=n, bitorder="little")
    else:
        out = _unpack_stream(used, b, n)
    if signed and b == 8:
        return out.view(np.int8)
    if signed:
        # Sign-extend: u XOR 2**(b-1), minus 2**(b-1), maps the unsigned b-bit
        # u in [0, 2**b) to its two's complement value in [-2**(b-1), 2**(b-1)).
        half = 1 << (b - 1)
        ext = (out ^ np.uint8(half)).view(np.int8)
        ext -= np.int8(half)
        return ext
    return out


def _unpack_stream(used: np.ndarray, b: int, n: int) -> np.ndarray:
    """The ``n`` unsigned codes of the bitstream ``used`` (``uint8``), for ``2 <= b <= 7``."""
    groups = -(-n // 8)
    stream = np.zeros(groups * b + 8, dtype=np.uint8)  # zero padding, + room for the last read
    stream[: used.size] = used
    # Group j's b bytes start at byte j * b: read the 8 bytes there and keep the low 8b bits.
    reads = np.ndarray((groups,), dtype=_WORD, buffer=stream, strides=(b,))
    low = _WORD.type((1 << (8 * b)) - 1)
    steps = _spread_steps(b)
    words = np.empty(groups, dtype=_WORD)
    tmp = np.empty(min(_BLOCK, groups), dtype=_WORD)
    for start in range(0, groups, _BLOCK):
        block = words[start: start + _BLOCK]
        np.bitwise_and(reads[start: start + _BLOCK], low, out=block)
        _apply_steps(block, steps, tmp[: block.size])
    return words.view(np.uint8)[:n]
