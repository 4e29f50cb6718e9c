"""Integer grids: the range of codes a ``bits``-wide integer holds, and the
smallest numpy dtype that stores it."""

from __future__ import annotations

import numpy as np

__all__ = ["integer_range", "smallest_int_dtype"]


def integer_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` of a ``bits``-wide integer.

    Signed (two's complement): ``[-2**(bits-1), 2**(bits-1) - 1]``.
    Unsigned: ``[0, 2**bits - 1]``.

    Examples
    --------
    >>> integer_range(8)
    (-128, 127)
    >>> integer_range(4, signed=False)
    (0, 15)
    """
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def smallest_int_dtype(qmin: int, qmax: int) -> np.dtype:
    """Return the smallest numpy integer dtype holding every value of ``[qmin, qmax]``.

    Examples
    --------
    >>> smallest_int_dtype(-8, 7)
    dtype('int8')
    >>> smallest_int_dtype(0, 255)
    dtype('uint8')
    >>> smallest_int_dtype(-32768, 32767)
    dtype('int16')
    """
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if qmin >= 0 else ()
    candidates += (np.int8, np.int16, np.int32, np.int64)
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dt)
    raise ValueError(f"no numpy integer dtype holds [{qmin}, {qmax}]")
