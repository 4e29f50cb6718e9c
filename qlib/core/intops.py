r"""Exact integer matrix products, fast: the accumulation step of integer-only inference.

Integer-only inference of a layer (the scheme of Jacob et al. 2018, written out
in :mod:`qlib.core.fixed_point`) needs one exact sum per output,
:math:`\sum_k (q_{1,ik} - Z_1)(q_{2,kj} - Z_2)`, and one multiplication by a
real multiplier :math:`M`.

:func:`~qlib.int_matmul` computes the sum, the exact product of the 8- or
16-bit codes accumulated in 32-bit (or, when needed, 64-bit) integers; the
multiplication by :math:`M` in integer arithmetic is in
:mod:`qlib.core.fixed_point` (:func:`~qlib.quantize_multiplier`,
:func:`~qlib.requantize`).
"""

from __future__ import annotations

import numpy as np

from qlib.core.validation import as_int_array

__all__ = ["int_matmul"]

_INT32_MAX = (1 << 31) - 1
_F32_EXACT = 1 << 24  # every integer of magnitude <= 2**24 is a float32
_F64_EXACT = 1 << 53  # every integer of magnitude <= 2**53 is a float64
_INT64_MAX = (1 << 63) - 1


# ----------------------------------------------------------------------------
# exact integer matrix product
# ----------------------------------------------------------------------------


def _small_int_operand(x, name: str) -> np.ndarray:
    arr = as_int_array(x, name)
    if arr.dtype.itemsize > 2:
        raise TypeError(
            f"{name} must be an integer array of at most 16 bits (int8, uint8, int16 or uint16), "
            f"got dtype {arr.dtype}; cast it, e.g. {name}.astype(np.int16), if its values fit"
        )
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got {arr.ndim} dimension(s), shape {arr.shape}")
    return arr


def _max_abs(arr: np.ndarray) -> int:
    """Largest magnitude in ``arr`` as a Python int (no int8 overflow of ``abs(-128)``)."""
    if arr.size == 0:
        return 0
    return max(int(arr.max()), -int(arr.min()))


def _dtype_max_abs(dt: np.dtype) -> int:
    info = np.iinfo(dt)
    return max(int(info.max), -int(info.min))


def _matmul_method(k: int, amax: int, bmax: int) -> str:
    """The exact way to compute a K-term integer dot product with these magnitudes.

    Every partial sum is bounded by ``k * amax * bmax``; below 2**24 float32
    is exact, below 2**53 float64, below 2**63 int64.
    """
    bound = k * amax * bmax
    if bound <= _F32_EXACT:
        return "float32"
    if bound <= _F64_EXACT:
        return "float64"
    if bound <= _INT64_MAX:
        return "int64"
    raise ValueError(
        f"the integer product could reach {bound}, beyond int64; split the reduction dimension"
    )


def int_matmul(a, b) -> np.ndarray:
    r"""Exact integer matrix product ``a @ b`` of 8- or 16-bit operands, fast via float BLAS.

    numpy's integer ``matmul`` does not use BLAS and is 100 to 300 times
    slower than its float ``matmul``. But a floating-point product of
    integers is *exact* as long as every intermediate value is an integer
    that the float format represents: all integers of magnitude up to
    :math:`2^{24}` (float32) or :math:`2^{53}` (float64). Each partial sum a
    BLAS kernel forms, in whatever order and blocking (fused multiply-add
    included), is a sum of some of the :math:`K` products, so its magnitude
    is at most

    .. math::

        B = K \cdot \max|a| \cdot \max|b|.

    ``int_matmul`` computes :math:`B` from the operands' actual extreme
    values (a cheap pass over ``a`` and ``b``) and uses

    - float32 ``matmul`` if :math:`B \le 2^{24}`: for int8 operands this
      covers :math:`K \le 1024` even with -128 everywhere;
    - float64 ``matmul`` if :math:`B \le 2^{53}`: any 8- or 16-bit
      matrix product of realistic size;
    - numpy's exact int64 ``matmul`` otherwise (only huge 16-bit dot
      products, :math:`K > 2^{21}`).

    The result is the exact integer product in every case. (This relies on
    BLAS computing sums of products, as every standard BLAS does; it does
    not use Strassen-like algorithms.)

    Parameters
    ----------
    a : numpy.ndarray of int8, uint8, int16 or uint16, 1-D or 2-D
        Left operand, shape ``(M, K)`` or ``(K,)``.
    b : numpy.ndarray of int8, uint8, int16 or uint16, 1-D or 2-D
        Right operand, shape ``(K, N)`` or ``(K,)``.
        1-D operands follow ``np.matmul``: ``(K,) @ (K, N)`` is ``(N,)``,
        ``(M, K) @ (K,)`` is ``(M,)`` and ``(K,) @ (K,)`` a scalar.
        Python lists become int64 arrays and are refused: give a dtype,
        e.g. ``np.array(rows, dtype=np.int8)``.

    Returns
    -------
    numpy.ndarray of int32 or int64
        The exact product. Its dtype depends only on the operand dtypes and
        ``K``, never on the values: int32 if ``K * max|dtype(a)| *
        max|dtype(b)|`` fits int32 (int8 @ int8: :math:`K \le 131071`;
        uint8 @ int8: :math:`K \le 65793`; int16 @ int8: :math:`K \le 511`),
        int64 otherwise, so the accumulators can never overflow.

    Raises
    ------
    TypeError
        If an operand is not an integer array (floats and bools refused) or
        is wider than 16 bits.
    ValueError
        If an operand is not 1-D or 2-D, or the inner dimensions differ.

    Examples
    --------
    >>> a = np.array([[1, -2], [3, 4]], dtype=np.int8)
    >>> b = np.array([[5, 6], [-7, 8]], dtype=np.int8)
    >>> int_matmul(a, b)
    array([[ 19, -10],
           [-13,  50]], dtype=int32)

    The worst case for int8 with K = 1024 reaches exactly :math:`2^{24}`,
    still exact in float32:

    >>> full = np.full((1, 1024), -128, dtype=np.int8)
    >>> int(int_matmul(full, full.T)[0, 0]) == 1024 * 128 * 128 == 2**24
    True

    With zero points, subtract them first in a wider type
    (:math:`q - Z` of uint8 codes fits int16):

    >>> q1 = np.array([[0, 255]], dtype=np.uint8); z1 = 128
    >>> q2 = np.array([[3], [1]], dtype=np.int8)
    >>> int_matmul(q1.astype(np.int16) - z1, q2)
    array([[-257]], dtype=int32)
    """
    a = _small_int_operand(a, "a")
    b = _small_int_operand(b, "b")
    k_a = a.shape[-1]
    k_b = b.shape[0]
    if k_a != k_b:
        raise ValueError(
            f"a and b have incompatible shapes for a @ b: a {a.shape} and b {b.shape} "
            f"(a's last dimension {k_a} must equal b's first dimension {k_b})"
        )
    k = k_a
    out_bound = k * _dtype_max_abs(a.dtype) * _dtype_max_abs(b.dtype)
    out_dtype = np.int32 if out_bound <= _INT32_MAX else np.int64
    method = _matmul_method(k, _max_abs(a), _max_abs(b))
    if method == "int64":
        result = np.matmul(a.astype(np.int64), b.astype(np.int64))
    else:
        ft = np.float32 if method == "float32" else np.float64
        result = np.matmul(a.astype(ft), b.astype(ft))
    return result.astype(out_dtype)
