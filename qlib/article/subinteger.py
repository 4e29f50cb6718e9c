r"""Sub-integer (fixed-point) quantization as the article defines it (its section 3.2).

The article keeps ``b`` fractional bits of the standardized value:

.. math::

    x_{subint} = \mathrm{round}(x_{std} \times 2^{b}) \div 2^{b}

This is a fixed-point number: the integer code
:math:`q = \mathrm{round}(x_{std}\,2^{b})` is stored, and the value it stands
for is :math:`q \cdot 2^{-b}`, a grid of step :math:`2^{-b}` standard
deviations. With a word of ``bits`` bits (one of them the sign), the codes
saturate at :math:`[-2^{bits-1}, 2^{bits-1}-1]`, i.e. standardized values
beyond about :math:`\pm 2^{bits-1-b}` are clipped. The same Q-format numbers
reappear in integer-only inference, where a real multiplier is stored as a
Q0.31 fixed-point integer (see :func:`qlib.quantize_multiplier`).

The division is ``/`` (true division). The article's code example writes
floor division ``//`` after rounding, which discards the fractional bits the
method is meant to keep; chapter 4 of the book shows the difference.
"""

from __future__ import annotations

from qlib.article.integer import StandardizedQuantized, standardized_round

__all__ = ["subinteger_quantize"]


def subinteger_quantize(x, frac_bits: int, *, bits: int | None = None) -> StandardizedQuantized:
    r"""Sub-integer quantization of the article: :math:`\mathrm{round}(x_{std} 2^{b}) / 2^{b}`.

    Parameters
    ----------
    x : array_like of real numbers
        The tensor to quantize. Finite, non-empty and not constant.
    frac_bits : int
        Number of fractional bits ``b`` (0 to 52); the step is :math:`2^{-b}`
        standard deviations. ``frac_bits=0`` is :func:`qlib.integer_quantize`.
    bits : int, optional
        Total word length of the codes, sign included (must exceed
        ``frac_bits``). If given, codes saturate to
        ``[-2**(bits-1), 2**(bits-1) - 1]``; the article leaves them unbounded
        (None).

    Returns
    -------
    StandardizedQuantized
        ``.codes`` are :math:`q = \mathrm{round}(x_{std} 2^{b})`,
        ``.standardized`` is :math:`q / 2^{b}` (the article's
        :math:`x_{subint}`), ``.dequantize()`` maps back to the original scale.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued, or ``frac_bits``/``bits`` are not integers.
    ValueError
        If ``x`` is empty, not finite or constant, ``frac_bits`` is negative
        or above 52, or ``bits <= frac_bits``.

    Examples
    --------
    With two fractional bits the standardized grid has step 1/4:

    >>> r = subinteger_quantize(np.array([1, 2, 3, 4, 5]), frac_bits=2)
    >>> r.codes
    array([-6, -3,  0,  3,  6])
    >>> r.standardized
    array([-1.5 , -0.75,  0.  ,  0.75,  1.5 ])

    A 3-bit word (sign + 2 fractional bits) holds codes -4..3 only, so the
    extremes saturate:

    >>> subinteger_quantize(np.array([1, 2, 3, 4, 5]), frac_bits=2, bits=3).codes
    array([-4, -3,  0,  3,  3], dtype=int8)
    """
    return standardized_round(x, frac_bits, bits)
