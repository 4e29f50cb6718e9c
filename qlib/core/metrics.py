r"""Error and size measures for comparing a tensor with its quantized reconstruction.

Every error measure takes the original ``x`` and its reconstruction ``x_hat``
(for instance ``qlib.dequantize(qlib.quantize(x, s, z), s, z)``), checks that
both are finite, non-empty real arrays of the same shape, and computes in
float64 whatever the input dtype, so that a float16 or float32 tensor is not
judged with float16 or float32 arithmetic. Each returns a Python ``float``.

- :func:`~qlib.mse`: mean squared error :math:`\frac1n\sum (x - \hat x)^2`;
- :func:`~qlib.sqnr_db`: signal-to-quantization-noise ratio in decibels;
- :func:`~qlib.max_abs_error`: worst-case error :math:`\max |x - \hat x|`;
- :func:`~qlib.size_bytes`: the bytes a set of numpy arrays really occupies
  (a packed ``uint8`` array from :func:`qlib.pack` counts its packed bytes).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from qlib.core.validation import as_float_array

__all__ = ["mse", "sqnr_db", "max_abs_error", "size_bytes"]


def _signal_and_error(x, x_hat) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``x`` and ``x_hat``; return ``x`` and the error ``x - x_hat``, in float64."""
    xa = as_float_array(x, "x")
    xh = as_float_array(x_hat, "x_hat")
    if xa.shape != xh.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got x {xa.shape} and x_hat {xh.shape}"
        )
    xa = xa.astype(np.float64, copy=False)
    return xa, xa - xh.astype(np.float64, copy=False)


def mse(x, x_hat) -> float:
    r"""Mean squared error :math:`\frac{1}{n}\sum_i (x_i - \hat x_i)^2`, computed in float64.

    Parameters
    ----------
    x : array_like of real numbers
        The original tensor. Finite and non-empty.
    x_hat : array_like of real numbers
        Its reconstruction, of the same shape as ``x``.

    Returns
    -------
    float
        The mean of the squared element-wise errors.

    Raises
    ------
    TypeError
        If ``x`` or ``x_hat`` is not an array of real numbers.
    ValueError
        If they differ in shape, or either is empty or holds NaN or infinity.

    Examples
    --------
    >>> mse([1.0, 2.0, 3.0], [1.0, 2.5, 2.0])
    0.4166666666666667
    """
    _, d = _signal_and_error(x, x_hat)
    return float(np.mean(d * d))


def sqnr_db(x, x_hat) -> float:
    r"""Signal-to-quantization-noise ratio in decibels, computed in float64.

    .. math::

        \mathrm{SQNR} = 10 \log_{10} \frac{\sum_i x_i^2}{\sum_i (x_i - \hat x_i)^2}

    Each extra bit of a uniform quantizer adds about 6.02 dB.

    Parameters
    ----------
    x : array_like of real numbers
        The original tensor (the signal). Finite and non-empty.
    x_hat : array_like of real numbers
        Its reconstruction, of the same shape as ``x``.

    Returns
    -------
    float
        The ratio in dB. Exact reconstruction (zero noise, including the case
        where ``x`` is all zeros) gives ``inf``; an all-zero signal with
        non-zero noise gives ``-inf``. Neither case warns.

    Raises
    ------
    TypeError
        If ``x`` or ``x_hat`` is not an array of real numbers.
    ValueError
        If they differ in shape, or either is empty or holds NaN or infinity.

    Examples
    --------
    >>> sqnr_db([3.0, 4.0], [3.0, 3.5])   # 25 / 0.25 = 100, i.e. 20 dB
    20.0
    >>> sqnr_db([1.0, -2.0], [1.0, -2.0])
    inf
    """
    xa, d = _signal_and_error(x, x_hat)
    noise = float(np.sum(d * d))
    signal = float(np.sum(xa * xa))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def max_abs_error(x, x_hat) -> float:
    r"""Largest absolute element-wise error :math:`\max_i |x_i - \hat x_i|`, in float64.

    Parameters
    ----------
    x : array_like of real numbers
        The original tensor. Finite and non-empty.
    x_hat : array_like of real numbers
        Its reconstruction, of the same shape as ``x``.

    Returns
    -------
    float
        The worst-case error. For round-to-nearest on a grid of step ``s``,
        without clipping, it is at most ``s / 2``.

    Raises
    ------
    TypeError
        If ``x`` or ``x_hat`` is not an array of real numbers.
    ValueError
        If they differ in shape, or either is empty or holds NaN or infinity.

    Examples
    --------
    >>> max_abs_error([1.0, 2.0, 3.0], [1.0, 2.5, 2.0])
    1.0
    """
    _, d = _signal_and_error(x, x_hat)
    return float(np.max(np.abs(d)))


#: Numeric types of the ``ml_dtypes`` package (bfloat16, float8, float4, int4, ...), which numpy
#: does not class as numbers.
_ML_DTYPES = frozenset({
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float8_e3m4", "float8_e4m3", "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn",
    "int2", "int4", "uint2", "uint4",
})


def size_bytes(*arrays) -> int:
    """Total storage, in bytes, of numpy arrays and scalars: the sum of their ``.nbytes``.

    Use it to compare a float tensor with its quantized form, counting the
    quantization parameters too, e.g. ``size_bytes(q, scale, zero_point)``.
    Only what is stored counts, so the dtype matters: a packed ``uint8``
    array from :func:`qlib.pack` holding 4-bit codes counts one byte per two
    codes, an ``int8`` array one byte per code, a ``float32`` scale 4 bytes.
    (:func:`qlib.packed_nbytes` gives the packed size of codes of any width
    without packing them.)

    Parameters
    ----------
    *arrays : numpy.ndarray, numpy scalar, int or float
        The pieces to count. numpy arrays and numpy scalars count their
        ``.nbytes``. A Python ``int`` or ``float`` counts as the numpy scalar
        it becomes (8 bytes: int64 or float64); store a scale as
        ``np.float32(s)`` to count 4 bytes. With no arguments the total is 0.

    Returns
    -------
    int
        The total number of bytes.

    Raises
    ------
    TypeError
        If an argument is a list, tuple, bool, string or another non-numeric
        object (convert lists with ``np.asarray`` and a dtype of your choice,
        so that their size is well defined), or a numpy array of
        non-numeric dtype.

    Examples
    --------
    >>> w = np.zeros(1000, dtype=np.float32)
    >>> size_bytes(w)
    4000
    >>> q = np.zeros(1000, dtype=np.int8)
    >>> size_bytes(q, np.float32(0.02), np.int8(0))   # codes + scale + zero point
    1005
    >>> size_bytes(np.zeros(500, dtype=np.uint8))      # 1000 4-bit codes, packed
    500

    The numeric types of ``ml_dtypes`` count too (bfloat16: 2 bytes per value):

    >>> import ml_dtypes
    >>> size_bytes(np.zeros(1000, dtype=ml_dtypes.bfloat16))
    2000
    """
    total = 0
    for i, a in enumerate(arrays):
        where = f"argument {i} of size_bytes"
        if isinstance(a, (bool, np.bool_)) or isinstance(a, (list, tuple, str, bytes)):
            raise TypeError(
                f"{where} must be a numpy array or numeric scalar, got {type(a).__name__}"
                + ("; convert it with np.asarray(..., dtype=...) first"
                   if isinstance(a, (list, tuple)) else "")
            )
        if isinstance(a, (np.ndarray, np.generic)):
            arr = a
        elif isinstance(a, numbers.Real):
            arr = np.asarray(a)
        else:
            raise TypeError(
                f"{where} must be a numpy array or numeric scalar, got {type(a).__name__}"
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_ or arr.dtype.name in _ML_DTYPES):
            raise TypeError(f"{where} must have a numeric dtype, got {arr.dtype}")
        total += int(arr.nbytes)
    return total
