"""How quantized tensors are stored, and how many bytes they take.

A ``bits``-wide code is stored by :func:`qlib.pack` in a slot of
:func:`~qlib.storage_bits` bits (its own width: :func:`qlib.pack` writes an
LSB-first bitstream); :func:`qlib.packed_nbytes` counts the bytes of ``n`` such
codes.
A pruned tensor is stored by :func:`~qlib.pack_sparse` as a bitmask of its
nonzero codes plus those codes, packed; :func:`~qlib.unpack_sparse` restores it.
:func:`~qlib.sparse_nbytes` counts a pruned matrix in the two usual sparse
formats, a bitmask or compressed sparse rows (CSR), with its values unquantized.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from qlib.core.grid import smallest_int_dtype
from qlib.core.packing import pack, packed_nbytes, unpack
from qlib.core.validation import as_int_array, check_int

__all__ = ["storage_bits", "pack_sparse", "unpack_sparse", "SparseBytes", "sparse_nbytes"]


def storage_bits(bits: int) -> int:
    """Return the bits :func:`qlib.pack` stores a ``bits``-wide code in: ``bits`` itself.

    :func:`qlib.pack` writes one bitstream, so a code takes exactly its own
    width: 3-, 5-, 6- and 7-bit codes are counted at their true size (there
    is no rounding up to a 4- or 8-bit slot).

    Parameters
    ----------
    bits : int
        Code width, 1 to 8.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        If ``bits`` is not an integer.
    ValueError
        If ``bits`` is outside [1, 8].

    Examples
    --------
    >>> [storage_bits(b) for b in (2, 3, 4, 6, 8)]
    [2, 3, 4, 6, 8]
    """
    return check_int(bits, "bits", 1, 8)


def pack_sparse(q, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Store a sparse tensor of integer codes as a bitmask of its nonzeros plus their packed codes.

    The mask has one bit per element (``np.packbits`` of ``q != 0``, C order,
    first element in the highest bit), the values are the nonzero codes in C
    order, packed by :func:`qlib.pack` in :func:`storage_bits` slots. The
    total size is about ``q.size / 8 + nnz * storage_bits(bits) / 8`` bytes:
    the mask costs one bit per element, whatever the sparsity, so it pays off
    when more than ``1 / storage_bits(bits)`` of the elements are zero.

    Parameters
    ----------
    q : numpy.ndarray of int
        The codes, any shape, signed.
    bits : int
        Width of the codes, 1 to 8.

    Returns
    -------
    mask : numpy.ndarray of uint8
        ``ceil(q.size / 8)`` bytes.
    values : numpy.ndarray of uint8
        The packed nonzero codes, :func:`qlib.packed_nbytes` of their number.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array or ``bits`` not an integer.
    ValueError
        If ``bits`` is outside [1, 8] or a code does not fit in ``bits`` bits.

    See Also
    --------
    unpack_sparse : the inverse.

    Examples
    --------
    >>> q = np.array([[0, 3, 0, 0], [-2, 0, 0, 1]], dtype=np.int8)
    >>> mask, values = pack_sparse(q, bits=4)
    >>> mask, values          # 8 elements -> 1 mask byte; 3 codes in 4-bit slots -> 2 bytes
    (array([73], dtype=uint8), array([227,   1], dtype=uint8))
    >>> np.array_equal(unpack_sparse(mask, values, bits=4, shape=q.shape), q)
    True
    """
    arr = as_int_array(q, "q")
    b = check_int(bits, "bits", 1, 8)
    flat = arr.ravel()
    nonzero = flat != 0
    values = flat[nonzero]
    lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"q must hold signed {b}-bit codes in [{lo}, {hi}], "
                         f"got values in [{values.min()}, {values.max()}]")
    return np.packbits(nonzero), pack(values, storage_bits(b), signed=True)


def unpack_sparse(mask, values, bits: int, shape) -> np.ndarray:
    """Rebuild the codes stored by :func:`pack_sparse`.

    Parameters
    ----------
    mask, values : numpy.ndarray of uint8
        What :func:`pack_sparse` returned.
    bits : int
        The code width given to :func:`pack_sparse`.
    shape : tuple of int
        The shape of the original codes.

    Returns
    -------
    numpy.ndarray of int8
        The codes, zeros restored.

    Raises
    ------
    TypeError
        If ``bits`` is not an integer.
    ValueError
        If ``bits`` is outside [1, 8] or ``mask`` is too short for ``shape``.

    Examples
    --------
    >>> q = np.array([0, 0, 5, 0, -7], dtype=np.int8)
    >>> unpack_sparse(*pack_sparse(q, bits=4), bits=4, shape=(5,))
    array([ 0,  0,  5,  0, -7], dtype=int8)
    """
    b = check_int(bits, "bits", 1, 8)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    m = np.asarray(mask, dtype=np.uint8)
    if m.size * 8 < n:
        raise ValueError(f"mask holds {m.size * 8} bits, fewer than the {n} elements of shape {shape}")
    nonzero = np.unpackbits(m)[:n].astype(bool)
    out = np.zeros(n, dtype=np.int8)
    out[nonzero] = unpack(values, storage_bits(b), int(nonzero.sum()), signed=True)
    return out.reshape(shape)


class SparseBytes(NamedTuple):
    """Bytes of a pruned matrix in two sparse formats (see :func:`~qlib.sparse_nbytes`)."""

    bitmask: int
    csr: int


def sparse_nbytes(mask, *, value_bytes=4) -> SparseBytes:
    """Bytes of a pruned 2-D matrix stored as bitmask + values and as CSR.

    ``bitmask``: one bit per entry (:func:`qlib.packed_nbytes` of the mask at 1
    bit) plus the kept values, ``value_bytes`` each, row by row. ``csr``
    (compressed sparse rows): the kept values, one column index per value in
    the smallest unsigned type that holds ``columns - 1``, and ``rows + 1``
    row offsets in the smallest unsigned type that holds ``rows * columns``
    (the field widths are fixed by the shape, not by how many values a
    particular mask keeps). The bitmask is smaller from a density of about
    ``1 / (8 * index bytes)`` of the entries up; CSR below.

    Parameters
    ----------
    mask : array_like of bool, shape (rows, columns)
        True where the entry is kept (as from :func:`qlib.magnitude_prune`).
    value_bytes : int, default 4
        Bytes per stored value (4 for float32, 1 for int8 codes, ...).

    Returns
    -------
    SparseBytes
        ``(bitmask, csr)``, in bytes.

    Raises
    ------
    TypeError
        If ``mask`` is not a bool array or ``value_bytes`` not an integer.
    ValueError
        If ``mask`` is not 2-D or ``value_bytes < 1``.

    Examples
    --------
    A 64 x 64 matrix with 410 entries kept (90 % sparse), float32 values:
    the bitmask costs 512 bytes, CSR one uint8 column index per value and 65
    uint16 row offsets:

    >>> mask = np.zeros((64, 64), dtype=bool)
    >>> mask.flat[::10] = True
    >>> int(mask.sum()), sparse_nbytes(mask)
    (410, SparseBytes(bitmask=2152, csr=2180))
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array (True where kept), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (rows, columns), got shape {arr.shape}")
    value_bytes = check_int(value_bytes, "value_bytes", 1)
    rows, cols = arr.shape
    kept = int(np.count_nonzero(arr))
    values = kept * value_bytes
    index_bytes = smallest_int_dtype(0, max(cols - 1, 0)).itemsize
    offset_bytes = smallest_int_dtype(0, arr.size).itemsize
    bitmask = packed_nbytes(arr.size, 1) + values
    csr = values + kept * index_bytes + (rows + 1) * offset_bytes
    return SparseBytes(int(bitmask), int(csr))
