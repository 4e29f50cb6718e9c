r"""Integer quantization as the article defines it (its section 3.1).

The article's three steps, for a tensor :math:`x` with mean :math:`\mu` and
(population) standard deviation :math:`\sigma`:

1. standardize: :math:`x_{std} = (x - \mu) / \sigma` (mean 0, variance 1);
2. round: :math:`x_{int} = \mathrm{round}(x_{std})`;
3. map back ("归一化"): :math:`\hat{x} = x_{int}\,\sigma + \mu`.

So the step between neighbouring reconstructed values is one standard
deviation, and the number of levels depends on the data: about seven for
Gaussian data (codes -3..3). The article leaves the codes unbounded; passing
``bits`` saturates them to a signed ``bits``-wide integer, which is what a
storage format would have to do.

Rounding is round half to even (``np.rint``), the IEEE default that numpy's
``np.round`` also uses, so ``round(0.5) == 0`` and ``round(1.5) == 2``.

:func:`qlib.subinteger_quantize` generalizes this with ``frac_bits``
fractional bits; integer quantization is the case ``frac_bits = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlib.core.grid import integer_range, smallest_int_dtype
from qlib.core.validation import as_float_array, check_int

__all__ = ["StandardizedQuantized", "standardize", "integer_quantize"]


def standardize(x, name: str = "x") -> tuple[np.ndarray, float, float]:
    r"""Standardize ``x`` to mean 0 and variance 1: :math:`(x - \mu)/\sigma`.

    Uses the population standard deviation (``ddof=0``), as ``np.std`` does
    and as the article's code does. The computation is in float64.

    Parameters
    ----------
    x : array_like of real numbers
        Finite, non-empty, not constant.

    Returns
    -------
    z : ndarray of float64
        The standardized values, same shape as ``x``.
    mean, std : float
        :math:`\mu` and :math:`\sigma`, as Python floats.

    Raises
    ------
    TypeError
        If ``x`` is not an array of real numbers.
    ValueError
        If ``x`` is empty, holds NaN or inf, or is constant (``std == 0``,
        so the division by :math:`\sigma` is undefined).

    Examples
    --------
    >>> z, mean, std = standardize([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> mean, round(std, 4)
    (3.0, 1.4142)
    >>> np.round(z, 4)
    array([-1.4142, -0.7071,  0.    ,  0.7071,  1.4142])
    """
    arr = as_float_array(x, name).astype(np.float64, copy=False)
    mean = float(arr.mean())
    std = float(arr.std())
    if not std > 0.0:
        raise ValueError(
            f"{name} is constant (standard deviation 0), so it cannot be standardized; "
            "the article's methods divide by the standard deviation"
        )
    return (arr - mean) / std, mean, std


@dataclass(frozen=True, eq=False)
class StandardizedQuantized:
    r"""The result of the article's quantizers: integer codes plus what maps them back.

    The reconstruction is :math:`\hat{x} = (q / 2^{b})\,\sigma + \mu` with
    ``q`` the integer codes and ``b = frac_bits`` (0 for integer quantization).

    Attributes
    ----------
    codes : ndarray of integers
        The stored integers ``q``.
    mean, std : float
        :math:`\mu` and :math:`\sigma` of the original tensor (two floats of
        side information that must be stored with the codes).
    frac_bits : int
        Number of fractional bits ``b``; the step in standardized units is
        :math:`2^{-b}`.
    bits : int or None
        Word length the codes were saturated to, or None (unbounded, as in the
        article).
    dtype : numpy dtype
        Floating dtype of the reconstruction (that of the input, float64 for
        integer input).
    """

    codes: np.ndarray
    mean: float
    std: float
    frac_bits: int
    bits: int | None
    dtype: np.dtype

    @property
    def step(self) -> float:
        r"""Distance between neighbouring reconstructed values, :math:`\sigma / 2^{b}`."""
        return self.std / 2.0**self.frac_bits

    @property
    def standardized(self) -> np.ndarray:
        r"""The quantized standardized values :math:`q / 2^{b}` (float64)."""
        return self.codes.astype(np.float64) / 2.0**self.frac_bits

    def dequantize(self) -> np.ndarray:
        r"""Map back to the original scale: :math:`\hat{x} = (q/2^{b})\,\sigma + \mu`."""
        return (self.standardized * self.std + self.mean).astype(self.dtype, copy=False)

    @property
    def levels(self) -> int:
        """Number of distinct codes actually used."""
        return int(np.unique(self.codes).size)

    @property
    def bits_needed(self) -> int:
        """Smallest signed two's-complement word length that holds every code."""
        lo, hi = int(self.codes.min()), int(self.codes.max())
        bits = 1
        while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
            bits += 1
        return bits

    def __repr__(self) -> str:
        return (
            f"StandardizedQuantized(shape={self.codes.shape}, frac_bits={self.frac_bits}, "
            f"bits={self.bits}, levels={self.levels}, mean={self.mean:.4g}, std={self.std:.4g})"
        )


def standardized_round(x, frac_bits: int, bits: int | None, name: str = "x") -> StandardizedQuantized:
    """Shared core of integer and sub-integer quantization (used by :mod:`qlib.article.subinteger`)."""
    frac_bits = check_int(frac_bits, "frac_bits", 0, 52)
    if bits is not None:
        bits = check_int(bits, "bits", 1, 64)
        if bits <= frac_bits:
            raise ValueError(
                f"bits must exceed frac_bits (a sign bit and at least the fraction), "
                f"got bits={bits}, frac_bits={frac_bits}"
            )
    arr = np.asarray(x)
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    z, mean, std = standardize(arr, name)
    scaled = np.rint(z * 2.0**frac_bits)
    if bits is None:
        codes = scaled.astype(np.int64)
    else:
        qmin, qmax = integer_range(bits, signed=True)
        codes = np.clip(scaled, qmin, qmax).astype(smallest_int_dtype(qmin, qmax))
    return StandardizedQuantized(codes, mean, std, frac_bits, bits, np.dtype(out_dtype))


def integer_quantize(x, *, bits: int | None = None) -> StandardizedQuantized:
    r"""Integer quantization of the article (section 3.1): :math:`x_{int} = \mathrm{round}(x_{std})`.

    Parameters
    ----------
    x : array_like of real numbers
        The tensor to quantize. Finite, non-empty and not constant.
    bits : int, optional
        If given, saturate the codes to ``[-2**(bits-1), 2**(bits-1) - 1]``
        (1 to 64). The article leaves them unbounded (the default, None).

    Returns
    -------
    StandardizedQuantized
        ``.codes`` are the integers :math:`x_{int}`; ``.dequantize()`` gives
        :math:`x_{int}\,\sigma + \mu`.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued, or ``bits`` is not an integer.
    ValueError
        If ``x`` is empty, not finite or constant, or ``bits`` is out of range.

    Examples
    --------
    The article's input ``x = [1, 2, 3, 4, 5]`` has mean 3 and standard
    deviation :math:`\sqrt{2}`; its standardized values round to -1, -1, 0, 1, 1:

    >>> r = integer_quantize(np.array([1, 2, 3, 4, 5]))
    >>> r.codes
    array([-1, -1,  0,  1,  1])
    >>> np.round(r.dequantize(), 4)
    array([1.5858, 1.5858, 3.    , 4.4142, 4.4142])
    """
    return standardized_round(x, 0, bits)
