r"""Floating-point formats as quantizers: fp32 to fp4, and the NF4 codebook.

A binary floating-point format with :math:`e` exponent bits, :math:`m`
mantissa bits and bias :math:`B` represents, besides zero,

.. math::

    \pm (1 + f / 2^m) \, 2^{E - B} \ (\text{normal}, 1 \le E), \qquad
    \pm (f / 2^m) \, 2^{1 - B} \ (\text{subnormal}, E = 0),

for the exponent field :math:`E` and the mantissa field
:math:`0 \le f < 2^m`. As a quantizer it is a grid whose step doubles from
one binade :math:`[2^p, 2^{p+1})` to the next: the step at :math:`x` is
:math:`2^{\lfloor \log_2 |x| \rfloor - m}` (:func:`~qlib.step_at`), a constant
*relative* error where an integer grid has a constant *absolute* one.

The formats differ in what the all-ones exponent field means (a
:class:`~qlib.FloatFormat`'s ``has_inf`` and ``has_nan``):

========== === === ==== ===== ============ ========== ==============================
name       e   m   bias inf   NaN          max finite source
========== === === ==== ===== ============ ========== ==============================
fp32       8   23  127  yes   yes          3.4e38     IEEE 754 binary32
fp16       5   10  15   yes   yes          65504      IEEE 754 binary16
bf16       8   7   127  yes   yes          3.4e38     Google Brain bfloat16
fp8_e4m3   4   3   7    no    S.1111.111   448        OCP FP8 (2023), NVIDIA "E4M3FN"
fp8_e5m2   5   2   15   yes   yes          57344      OCP FP8, IEEE-like
fp6_e2m3   2   3   1    no    no           7.5        OCP Microscaling (MX) v1.0
fp6_e3m2   3   2   3    no    no           28         OCP MX v1.0
fp4_e2m1   2   1   1    no    no           6          OCP MX v1.0
========== === === ==== ===== ============ ========== ==============================

(Micikevicius et al. 2022, "FP8 formats for deep learning", arXiv:2209.05433;
Rouhani et al. 2023, "Microscaling data formats", arXiv:2310.10537.) E4M3
gives up infinities and keeps a single NaN pattern per sign to reach 448
instead of 240.

:func:`~qlib.round_to_float` rounds to nearest, ties to even, and
**saturates** values beyond the largest finite value to it, the OCP spec's
saturating mode and the conversion NVIDIA's Transformer Engine uses for
FP8. ``ml_dtypes`` casts differently out of range: a value that rounds above
448 becomes NaN in ``float8_e4m3fn``, and above 57344 becomes infinity in
``float8_e5m2`` (as numpy's ``float16`` and ml_dtypes' ``bfloat16``), while
its ``float4_e2m1fn`` and ``float6`` types, which have neither, saturate.
``saturate=False`` reproduces those casts. In range the two agree bit for
bit. The rounding is computed in numpy (float64), so qlib needs no
``ml_dtypes``.

**NF4** (Dettmers et al. 2023, QLoRA, arXiv:2305.14314, section 3 and
appendix E) is not a floating-point format but a 16-level codebook: quantiles
of :math:`N(0, 1)`, with an exact zero, normalized to :math:`[-1, 1]`
(:func:`~qlib.nf4_codebook`), applied to blocks of 64 values each scaled by
its absolute maximum (:func:`~qlib.nf4_quantize`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from qlib.core.codebook import assign_to_codebook
from qlib.core.packing import packed_nbytes
from qlib.core.validation import as_float_array, check_bool, check_int

__all__ = [
    "FloatFormat", "FLOAT_FORMATS", "float_format", "round_to_float", "step_at", "representable_values",
    "nf4_codebook", "NF4Quantized", "nf4_quantize",
]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: sign, ``exponent_bits``, ``mantissa_bits``, ``bias``.

    ``has_inf``: the all-ones exponent field holds infinities and NaNs (IEEE
    754). Otherwise it holds normal numbers, except, when ``has_nan``, the
    all-ones mantissa (NaN), as E4M3FN; formats with neither (fp4, fp6) use
    every pattern for a finite value.

    Examples
    --------
    >>> f = float_format("fp8_e4m3")
    >>> f.max_finite, f.min_normal, f.min_subnormal, f.bits
    (448.0, 0.015625, 0.001953125, 8)
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    has_inf: bool
    has_nan: bool

    @property
    def bits(self) -> int:
        """Total width, ``1 + exponent_bits + mantissa_bits``."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number, ``1 - bias``."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        top = (1 << self.exponent_bits) - 1
        return top - 1 - self.bias if self.has_inf else top - self.bias

    @property
    def max_finite(self) -> float:
        """The largest finite value: :math:`(2 - 2^{-m}) 2^{e_{max}}`, or :math:`(2 - 2^{1-m}) 2^{e_{max}}`
        when the top pattern is NaN."""
        m = self.mantissa_bits
        reserved = 1 if (self.has_nan and not self.has_inf) else 0
        return float(np.ldexp(2.0 - (1 + reserved) * 2.0 ** -m, self.emax))

    @property
    def min_normal(self) -> float:
        """The smallest positive normal value, :math:`2^{1 - B}`."""
        return float(np.ldexp(1.0, self.emin))

    @property
    def min_subnormal(self) -> float:
        """The smallest positive value, :math:`2^{1 - B - m}`."""
        return float(np.ldexp(1.0, self.emin - self.mantissa_bits))


#: The formats by name (read-only).
FLOAT_FORMATS = MappingProxyType({f.name: f for f in (
    FloatFormat("fp32", 8, 23, 127, True, True),
    FloatFormat("fp16", 5, 10, 15, True, True),
    FloatFormat("bf16", 8, 7, 127, True, True),
    FloatFormat("fp8_e4m3", 4, 3, 7, False, True),
    FloatFormat("fp8_e5m2", 5, 2, 15, True, True),
    FloatFormat("fp6_e2m3", 2, 3, 1, False, False),
    FloatFormat("fp6_e3m2", 3, 2, 3, False, False),
    FloatFormat("fp4_e2m1", 2, 1, 1, False, False),
)})


def float_format(fmt) -> FloatFormat:
    """The :class:`FloatFormat` named ``fmt`` (one of :data:`FLOAT_FORMATS`), or ``fmt`` itself.

    Examples
    --------
    >>> float_format("bf16")
    FloatFormat(name='bf16', exponent_bits=8, mantissa_bits=7, bias=127, has_inf=True, has_nan=True)
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a format name {tuple(FLOAT_FORMATS)} or a FloatFormat, "
                        f"got {type(fmt).__name__}")
    if fmt not in FLOAT_FORMATS:
        raise ValueError(f"fmt must be one of {tuple(FLOAT_FORMATS)}, got {fmt!r}")
    return FLOAT_FORMATS[fmt]


def _binade_step(mag: np.ndarray, f: FloatFormat) -> np.ndarray:
    """Step :math:`2^{\\max(\\lfloor\\log_2 |x|\\rfloor, e_{min}) - m}` of the grid at ``mag >= 0`` (float64)."""
    _, e = np.frexp(mag)  # mag = r 2^e with r in [0.5, 1): floor(log2 mag) = e - 1; frexp(0) = (0, 0)
    e = np.where(mag > 0, np.maximum(e - 1, f.emin), f.emin)
    return np.ldexp(1.0, e - f.mantissa_bits)


def _scalar_or_array(out: np.ndarray):
    return out[()] if out.ndim == 0 else out


def round_to_float(x, fmt, *, scale=1.0, saturate=True):
    r"""Round to the nearest value of a floating-point format, ties to even, saturating.

    .. math::

        \hat x = s \cdot \operatorname{sign}(y) \min\!\Big(
        \operatorname{rne}\big(|y| / u(y)\big)\, u(y),\ x_{max}\Big),
        \qquad y = x / s,\quad u(y) = 2^{\max(\lfloor \log_2 |y| \rfloor,\, 1 - B) - m},

    with :math:`\operatorname{rne}` rounding to the nearest integer, ties to
    even (the even integer is the even mantissa). Computed in float64,
    exactly, for any float32 or float64 input.

    Parameters
    ----------
    x : array_like of real numbers
        Finite, non-empty.
    fmt : str or FloatFormat
        A name of :data:`FLOAT_FORMATS` (``"fp16"``, ``"bf16"``,
        ``"fp8_e4m3"``, ``"fp8_e5m2"``, ``"fp4_e2m1"``, ...) or a format.
    scale : float or array_like, default 1.0
        Positive scale :math:`s` (broadcastable to ``x``): ``x / s`` is
        rounded and the result multiplied back, as a scaled FP8 tensor. Use
        ``np.abs(x).max() / float_format(fmt).max_finite`` to map the largest
        magnitude to the format's largest value.
    saturate : bool, default True
        Clamp values beyond the largest finite value to it. ``False``: they
        overflow as ``ml_dtypes`` casts do, to infinity (formats with
        infinities), NaN (``fp8_e4m3``), or saturate (fp6, fp4, which have
        neither).

    Returns
    -------
    numpy.ndarray or numpy scalar
        float32, of ``x``'s shape (a numpy scalar for scalar ``x``). Every
        format here is a subset of float32, so with ``scale=1`` the values
        are exact.

    Raises
    ------
    TypeError
        If ``x`` or ``scale`` is not real, ``fmt`` not a string or
        FloatFormat, ``saturate`` not a bool.
    ValueError
        If ``x`` is empty or non-finite, ``fmt`` unknown, ``scale`` not
        positive and finite or not broadcastable to ``x``.

    Examples
    --------
    E4M3 has steps of 0.125 near 1 and of 32 near its maximum 448; beyond it,
    saturation:

    >>> round_to_float([1.06, 1.07, 300.0, 1000.0, -1e-4], "fp8_e4m3")
    array([  1.   ,   1.125, 288.   , 448.   ,  -0.   ], dtype=float32)
    >>> round_to_float(1000.0, "fp8_e4m3", saturate=False)   # as ml_dtypes' float8_e4m3fn
    np.float32(nan)

    The 8 magnitudes of fp4 E2M1 are 0, 0.5, 1, 1.5, 2, 3, 4, 6; ties go to the even mantissa:

    >>> round_to_float([0.2, 0.3, 1.25, 1.75, 2.5, 5.0, 7.0], "fp4_e2m1")
    array([0. , 0.5, 1. , 2. , 2. , 4. , 6. ], dtype=float32)
    """
    xa = as_float_array(x, "x")
    f = float_format(fmt)
    sat = check_bool(saturate, "saturate")
    s = as_float_array(scale, "scale").astype(np.float64)
    if np.any(s <= 0):
        raise ValueError("scale must be positive")
    try:
        y = xa.astype(np.float64) / s
    except ValueError:
        raise ValueError(f"scale of shape {s.shape} does not broadcast to x of shape {xa.shape}") from None
    if y.shape != xa.shape:
        raise ValueError(f"scale of shape {s.shape} does not broadcast to x of shape {xa.shape}")
    xmax = f.max_finite
    mag = np.abs(y)
    if sat:
        mag = np.minimum(mag, xmax)
    step = _binade_step(mag, f)
    q = np.rint(mag / step) * step
    if not sat:
        q = np.where(q > xmax, np.inf if f.has_inf else (np.nan if f.has_nan else xmax), q)
    out = np.copysign(q, y) * s
    with np.errstate(over="ignore"):
        return _scalar_or_array(out.astype(np.float32))


def step_at(x, fmt):
    r"""Spacing of the format's values at ``x``: :math:`2^{\max(\lfloor \log_2 |x| \rfloor,\, 1 - B) - m}`.

    The distance from :math:`|x|` to the next larger value of the format when
    :math:`|x|` is representable (its unit in the last place); the step of
    the subnormal grid, :math:`2^{1 - B - m}`, below the smallest normal
    value and at 0. Round-to-nearest errs by at most half of it.

    Parameters
    ----------
    x : array_like of real numbers
        Finite, with :math:`|x|` at most the format's largest finite value.
    fmt : str or FloatFormat
        See :func:`round_to_float`.

    Returns
    -------
    numpy.ndarray or float
        float64 powers of two, of ``x``'s shape.

    Raises
    ------
    ValueError
        If ``|x|`` exceeds the largest finite value (the format has no step
        there), or ``x`` is empty or non-finite.

    Examples
    --------
    >>> step_at([1.0, 1.9, 448.0, 0.0], "fp8_e4m3")
    array([1.250000e-01, 1.250000e-01, 3.200000e+01, 1.953125e-03])
    >>> float(step_at(1.0, "bf16")), float(step_at(1.0, "fp16"))
    (0.0078125, 0.0009765625)
    """
    xa = as_float_array(x, "x")
    f = float_format(fmt)
    mag = np.abs(xa.astype(np.float64))
    if np.any(mag > f.max_finite):
        raise ValueError(f"|x| must be at most {f.name}'s largest finite value {f.max_finite}, "
                         f"got {float(mag.max())}")
    return _scalar_or_array(_binade_step(mag, f))


def representable_values(fmt) -> np.ndarray:
    """Every finite value of a format of at most 16 bits, sorted, with a single zero (float32).

    Examples
    --------
    >>> representable_values("fp4_e2m1")
    array([-6. , -4. , -3. , -2. , -1.5, -1. , -0.5,  0. ,  0.5,  1. ,  1.5,
            2. ,  3. ,  4. ,  6. ], dtype=float32)
    >>> representable_values("fp8_e4m3").size, representable_values("fp8_e5m2").size
    (253, 247)
    """
    f = float_format(fmt)
    if f.bits > 16:
        raise ValueError(f"fmt must have at most 16 bits to list its values, got {f.name} ({f.bits} bits)")
    m = f.mantissa_bits
    field = np.arange(1 << m, dtype=np.float64)
    binades = [field * 2.0 ** (f.emin - m)]  # subnormals and zero
    for e_field in range(1, 1 << f.exponent_bits):
        binades.append((1 + field / 2 ** m) * 2.0 ** (e_field - f.bias))
    pos = np.concatenate(binades)
    pos = pos[pos <= f.max_finite]
    return np.concatenate((-pos[:0:-1], pos)).astype(np.float32)


def nf4_codebook() -> np.ndarray:
    r"""The 16 levels of NormalFloat4 (QLoRA, Dettmers et al. 2023, arXiv:2305.14314, appendix E).

    Quantiles of the standard normal distribution, asymmetric so as to have
    an exact zero: 8 positive levels at probabilities evenly spaced from
    :math:`1 - \delta` down to :math:`1/2` (excluded), 7 negative ones
    mirrored from 7 such probabilities, and 0, all divided by the largest,

    .. math::

        q^+_i = \Phi^{-1}\!\big(1 - \delta - i\,\tfrac{1/2 - \delta}{8}\big),\ i = 0..7, \qquad
        q^-_i = -\Phi^{-1}\!\big(1 - \delta - i\,\tfrac{1/2 - \delta}{7}\big),\ i = 0..6,

    with :math:`\delta = \frac12(\frac1{30} + \frac1{32})`, the offset of
    the paper (``0.9677083`` in bitsandbytes' ``create_normal_map``). The
    inverse normal CDF :math:`\Phi^{-1}` is Python's
    ``statistics.NormalDist().inv_cdf`` (Wichura's AS 241, double precision).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(16,)``, sorted, from -1 to 1, ``[7] == 0``.

    Examples
    --------
    >>> print(np.array2string(nf4_codebook(), precision=3, floatmode="fixed"))
    [-1.000 -0.696 -0.525 -0.395 -0.284 -0.185 -0.091  0.000  0.080  0.161
      0.246  0.338  0.441  0.563  0.723  1.000]
    """
    offset = 1.0 - 0.5 * (1 / 30 + 1 / 32)
    ppf = statistics.NormalDist().inv_cdf
    pos = [ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    levels = np.sort(np.array(pos + [0.0] + neg))
    return (levels / levels.max()).astype(np.float32)


@dataclass(frozen=True, eq=False)
class NF4Quantized:
    """A tensor in NF4: 4-bit codes into :func:`nf4_codebook`, one float32 absmax scale per block.

    Attributes
    ----------
    codes : numpy.ndarray
        uint8 in ``[0, 15]``, the tensor's shape (read-only).
    scales : numpy.ndarray
        float32, one per block of ``block_size`` consecutive values of the
        flattened (C-order) tensor, the last block possibly shorter (read-only).
    block_size : int
    """

    codes: np.ndarray
    scales: np.ndarray
    block_size: int

    def dequantize(self) -> np.ndarray:
        """``nf4_codebook()[codes] * scale`` of each value's block, float32, the tensor's shape."""
        levels = nf4_codebook()[self.codes.ravel()]
        per_value = np.repeat(self.scales, self.block_size)[: levels.size]
        return (levels * per_value).reshape(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """Packed 4-bit codes plus the float32 scales: 4.5 bits a value at ``block_size=64``.

        QLoRA's *double quantization* (8-bit scales, themselves scaled per 256
        blocks) brings the scales from 0.5 to 0.127 bits a value; not modelled.
        """
        return packed_nbytes(self.codes.size, 4) + int(self.scales.nbytes)

    def __repr__(self) -> str:
        return f"NF4Quantized(shape={self.codes.shape}, block_size={self.block_size})"


def nf4_quantize(x, block_size=64) -> NF4Quantized:
    r"""Quantize to NF4 with blockwise absmax scaling (QLoRA, Dettmers et al. 2023, arXiv:2305.14314).

    The flattened (C-order) ``x`` is cut into blocks of ``block_size``
    consecutive values (the last may be shorter); each block :math:`B` is
    scaled by its absolute maximum :math:`a_B = \max_{i \in B} |x_i|`, stored
    as float32, and each value gets the index of the NF4 level nearest to
    :math:`x_i / a_B` (:func:`qlib.assign_to_codebook`: ties to the lower
    level). An all-zero block has scale 0 and code 7 (the level 0).
    The error is at most :math:`a_B` times half the largest gap between
    levels (0.152, between -1 and -0.696).

    Parameters
    ----------
    x : array_like of real numbers
        Finite, non-empty, any shape.
    block_size : int, default 64
        Values per scale, ``>= 1`` (QLoRA uses 64 for weights).

    Returns
    -------
    NF4Quantized
        ``codes``, ``scales``, ``block_size``; ``.dequantize()``, ``.nbytes``.

    Raises
    ------
    TypeError
        If ``x`` is not real or ``block_size`` not an integer.
    ValueError
        If ``x`` is empty or non-finite, or ``block_size < 1``.

    Examples
    --------
    >>> w = np.array([0.5, -1.0, 0.0, 0.25, 2.0, 1.0])
    >>> nq = nf4_quantize(w, block_size=3)
    >>> nq.scales, nq.codes
    (array([1., 2.], dtype=float32), array([12,  0,  7,  9, 15, 12], dtype=uint8))
    >>> nq.dequantize()
    array([ 0.44070974, -1.        ,  0.        ,  0.32186028,  2.        ,
            0.8814195 ], dtype=float32)
    """
    xa = as_float_array(x, "x")
    bs = check_int(block_size, "block_size", 1)
    flat = xa.astype(np.float64).ravel()
    n_blocks = -(-flat.size // bs)
    padded = np.zeros(n_blocks * bs)
    padded[: flat.size] = flat
    blocks = padded.reshape(n_blocks, bs)
    scales = np.max(np.abs(blocks), axis=1).astype(np.float32)
    divisor = np.where(scales > 0, scales, 1.0).astype(np.float64)[:, None]
    codes = assign_to_codebook(blocks / divisor, nf4_codebook()).ravel()[: flat.size].reshape(xa.shape)
    codes.flags.writeable = False
    scales.flags.writeable = False
    return NF4Quantized(codes=codes, scales=scales, block_size=bs)
