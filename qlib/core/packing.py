r"""Sub-byte bit packing: store 1-, 2- or 4-bit integer codes several to a byte.

numpy's smallest integer is one byte, so a 4-bit code held in an ``int8``
array wastes half of its storage. Packing puts ``8 // bits`` codes in each
``uint8`` byte, **first code in the lowest bits**:

.. math::

    \text{byte}_j = \sum_{i=0}^{8/b - 1} (q_{j\,8/b + i} \bmod 2^b) \, 2^{i b}

This is the layout of ONNX ``INT4``/``UINT4`` tensors ("the first element is
stored in the 4 least significant bits") and of PyTorch's ``quint4x2``. For
example, ``pack([1, 0, 3, 2], bits=2)`` is ``[1 + (0 << 2) + (3 << 4) + (2 << 6)]``
``= [177]``.

Signed codes are stored as their ``bits``-wide two's complement
(``q mod 2**bits``: -1 in 4 bits is ``0b1111``), so the bytes alone do not say
whether the codes were signed: :func:`~qlib.unpack` is told, and sign-extends.
A tensor whose length is not a multiple of ``8 // bits`` gets a last byte
padded with zero bits; :func:`~qlib.unpack` is told how many codes to return.
``bits=8`` is supported too (one code per byte), so code can treat every
width alike.
"""

from __future__ import annotations

import numpy as np

from qlib.core.grid import integer_range
from qlib.core.validation import check_int

__all__ = ["pack", "unpack"]

_PACK_BITS = (1, 2, 4, 8)


def _check_bits(bits) -> int:
    b = check_int(bits, "bits")
    if b not in _PACK_BITS:
        raise ValueError(f"bits must be one of 1, 2, 4 or 8, got {b}")
    return b


def _as_int_array(a, name: str) -> np.ndarray:
    """``a`` as an integer array; an empty Python sequence counts as integer."""
    arr = np.asarray(a)
    if arr.size == 0 and not isinstance(a, np.ndarray) and arr.dtype == np.float64:
        return arr.astype(np.int64)  # np.asarray([]) is float64
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must be an array of integers, got dtype {arr.dtype}"
            + ("; round and cast the codes first, e.g. np.rint(x).astype(np.int8)"
               if np.issubdtype(arr.dtype, np.floating) else "")
        )
    return arr


def pack(q, bits: int, *, signed: bool | None = None) -> np.ndarray:
    """Pack integer codes of width ``bits`` into a flat ``uint8`` array, first code lowest.

    Parameters
    ----------
    q : array_like of int
        The codes, any integer dtype and any shape (flattened in C order).
        May be empty.
    bits : {1, 2, 4, 8}
        Width of each code; ``8 // bits`` codes go in each byte.
    signed : bool, optional
        Whether the codes are signed (stored as ``bits``-wide two's
        complement) or unsigned. By default it is inferred: signed if any
        code is negative, unsigned otherwise. Every code must fit the range
        ``qlib.integer_range(bits, signed)``.

    Returns
    -------
    numpy.ndarray of uint8, shape ``(ceil(q.size * bits / 8),)``
        The packed bytes. Code ``i`` occupies bits
        ``(i % (8 // bits)) * bits`` upward of byte ``i // (8 // bits)``;
        unused high bits of the last byte are zero.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array (floats and bools are refused), or
        ``bits`` is not an integer.
    ValueError
        If ``bits`` is not 1, 2, 4 or 8, or a code of ``q`` does not fit in
        ``bits`` bits.

    See Also
    --------
    unpack : the inverse.

    Examples
    --------
    >>> pack([1, 0, 3, 2], bits=2)          # 1 + (0 << 2) + (3 << 4) + (2 << 6)
    array([177], dtype=uint8)

    4-bit codes, low nibble first (ONNX INT4 layout); -1 is stored as 0xF and
    the odd last code gets a zero high nibble:

    >>> [hex(b) for b in pack(np.array([-1, 2, 7], dtype=np.int8), bits=4)]
    ['0x2f', '0x7']
    """
    b = _check_bits(bits)
    arr = _as_int_array(q, "q").ravel()
    if signed is not None and not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True, False or None, got {signed!r}")
    if arr.size == 0:
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
    # Two's complement in `bits` bits: keep the low `bits` bits of each code.
    # Casting to uint8 already takes the value mod 256 (wrap-around is what
    # we want), then the mask keeps the low `bits` of those 8.
    codes = arr.astype(np.uint8, casting="unsafe")
    if b == 8:
        return codes
    codes &= np.uint8((1 << b) - 1)
    per = 8 // b
    pad = (-codes.size) % per
    if pad:
        codes = np.concatenate([codes, np.zeros(pad, dtype=np.uint8)])
    groups = codes.reshape(-1, per)
    out = groups[:, 0].copy()
    for i in range(1, per):  # at most 8 passes over the data, each vectorized
        out |= groups[:, i] << np.uint8(i * b)
    return out


def unpack(packed, bits: int, count: int, signed: bool = False) -> np.ndarray:
    """Unpack the first ``count`` codes of width ``bits`` from bytes made by :func:`~qlib.pack`.

    Parameters
    ----------
    packed : array_like of int, 1-D
        The packed bytes: a ``uint8`` array, or integers in ``[0, 255]``.
    bits : {1, 2, 4, 8}
        Width of each code.
    count : int
        How many codes to return, from ``0`` to ``len(packed) * (8 // bits)``.
        Padding bits beyond ``count`` are ignored.
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
        If ``bits`` is not 1, 2, 4 or 8, ``packed`` is not 1-D or holds a
        value outside ``[0, 255]``, or ``count`` is negative or exceeds the
        capacity ``len(packed) * (8 // bits)``.

    See Also
    --------
    pack : the inverse.

    Examples
    --------
    >>> unpack(np.array([177], dtype=np.uint8), bits=2, count=4)
    array([1, 0, 3, 2], dtype=uint8)
    >>> unpack(np.array([177], dtype=np.uint8), bits=2, count=3, signed=True)
    array([ 1,  0, -1], dtype=int8)
    """
    b = _check_bits(bits)
    arr = _as_int_array(packed, "packed")
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True or False, got {signed!r}")
    if arr.ndim != 1:
        raise ValueError(f"packed must be a 1-D array of bytes, got shape {arr.shape}")
    per = 8 // b
    n = check_int(count, "count", 0)
    capacity = arr.size * per
    if n > capacity:
        raise ValueError(
            f"count must be at most len(packed) * (8 // bits) = {arr.size} * {per} = "
            f"{capacity}, got {n}"
        )
    nbytes = -(-n // per)
    if arr.dtype != np.uint8:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(
                f"packed must hold bytes, i.e. integers in [0, 255], got values in "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
        arr = arr.astype(np.uint8)
    used = arr[:nbytes]
    if b == 8:
        out = used.copy()
    else:
        shifts = np.arange(0, 8, b, dtype=np.uint8)
        out = ((used[:, None] >> shifts) & np.uint8((1 << b) - 1)).reshape(-1)[:n]
    if signed:
        # Sign-extend: move the code's sign bit to bit 7, reinterpret as int8,
        # then shift back arithmetically.
        s = np.uint8(8 - b)
        return (out << s).view(np.int8) >> np.int8(8 - b)
    return out
