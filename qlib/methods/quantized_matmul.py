r"""A linear layer's product :math:`y = x W^T` with both operands quantized and one exact integer GEMM.

Quantize the activations :math:`x` (``tokens x in``) symmetrically to codes
:math:`q_{ik}` with scales :math:`s`, the weights :math:`W` (``out x in``) to
codes :math:`r_{jk}` with scales :math:`t`. Then

.. math::

    y_{ij} \approx \sum_k (s_i\, q_{ik})(t_j\, r_{jk})
          = s_i\, t_j \sum_k q_{ik}\, r_{jk}
          = s_i\, t_j\, \mathrm{acc}_{ij},

and :math:`\mathrm{acc} = q\, r^T` is one integer matrix product
(:func:`~qlib.int_matmul`, exact, int32 accumulators), followed by one
multiplication per output by :math:`s_i t_j`. This works because each scale
is *constant along the summation index* :math:`k` (the input dimension) and
factors out of the sum:

- per tensor: :math:`s_i = s`, :math:`t_j = t`;
- per token (one scale per row of :math:`x`, ``axis=0``): :math:`s_i`;
- per output channel (one scale per row of :math:`W`, ``axis=0``): :math:`t_j`.

A **per-input-channel** scale of :math:`x`, one :math:`s_k` per column, does
*not* factor out: :math:`\sum_k s_k\, q_{ik}\, t_j r_{jk}` weights every term
of the sum differently, so it is no longer a rescaled integer dot product and
the GEMM would have to run in floating point (or rescale before summing,
which is no GEMM at all). The same holds for a per-input-channel scale of
:math:`W` and for per-group scales along :math:`k` (those need one integer
GEMM per group, summed in floating point; not done here). Yet activations of
large language models vary most *across input channels* (a few channels
are 20 to 100 times larger than the others; see :mod:`qlib.methods.outliers`).
The two ways out: keep those channels in floating point (LLM.int8(),
:func:`~qlib.llm_int8_matmul`), or migrate the
per-input-channel factor into the weights, :math:`x W^T = (x\,
\mathrm{diag}(s)^{-1})(W \mathrm{diag}(s))^T`, before quantizing
(SmoothQuant, :func:`~qlib.smooth`).
:func:`~qlib.quantized_matmul` and :func:`~qlib.rescaled_int_matmul` refuse the
granularities that do not factor with a ``ValueError`` saying so.

Zero points are not handled: with affine activations the sum gains
correction terms :math:`-z_i \sum_k r_{jk}` (see :mod:`qlib.core.fixed_point`).
"""

from __future__ import annotations

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.grid import Quantizer
from qlib.core.intops import int_matmul
from qlib.core.uniform import quantize
from qlib.core.validation import as_float_array, as_int_array, check_bits, check_choice

__all__ = ["quantized_matmul", "rescaled_int_matmul"]

_X_GRANULARITIES = ("tensor", "token")
_W_GRANULARITIES = ("tensor", "channel")
_NOT_FACTORING = (
    "its scale varies along the summation index k (the input dimension), so it does not factor out of "
    "sum_k (s q_ik)(t r_jk) and the exact integer product int_matmul(q_x, q_w.T) cannot be rescaled into "
    "x @ w.T"
)
_WAY_OUT = (
    "; quantize x per tensor or per token and w per tensor or per output channel, or migrate the "
    "per-input-channel factor into the weights first (SmoothQuant: qlib.smooth)"
)


def matmul_operands(x, w) -> tuple[np.ndarray, np.ndarray]:
    """Check ``x`` (tokens, in) and ``w`` (out, in): finite float 2-D arrays with the same ``in``.

    Shared by :mod:`qlib.methods.outliers`; integer arrays are refused, as :func:`~qlib.calibrate` does.
    """
    xa = as_float_array(x, "x", allow_int=False)
    wa = as_float_array(w, "w", allow_int=False)
    if xa.ndim != 2:
        raise ValueError(f"x must be 2-D, (tokens, in_features), got shape {xa.shape}")
    if wa.ndim != 2:
        raise ValueError(f"w must be 2-D, (out_features, in_features), got shape {wa.shape}")
    if xa.shape[1] != wa.shape[1]:
        raise ValueError(
            f"x and w must have the same in_features (last dimension) for x @ w.T, got x {xa.shape} "
            f"and w {wa.shape}"
        )
    return xa, wa


def result_dtype(x: np.ndarray, w: np.ndarray) -> np.dtype:
    """The float type of a product of ``x`` and ``w``: theirs, at least float32."""
    return np.result_type(x.dtype, w.dtype, np.float32)


def _check_granularity(value, name: str, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value in ("input_channel", "channel") and value not in allowed:
        operand = name.split("_")[0]
        raise ValueError(
            f"{name}={value!r} (one scale per input channel of {operand}) is refused: {_NOT_FACTORING}"
            f"{_WAY_OUT}; {name} must be one of {allowed}"
        )
    return check_choice(value, name, allowed)


def _factored_scale(q, name: str) -> np.ndarray:
    """The scales of ``q`` as a float64 column ``(n, 1)``, refusing what does not factor out of the GEMM."""
    if not isinstance(q, Quantizer):
        raise TypeError(f"{name} must be a qlib.Quantizer, got {type(q).__name__}")
    if np.any(np.asarray(q.zero_point) != 0):
        raise ValueError(
            f"{name} must have zero point 0 (symmetric, signed): affine codes need zero-point correction "
            f"terms that rescaled_int_matmul does not compute; calibrate with symmetric=True"
        )
    if q.granularity == "group" or (q.granularity == "channel" and q.axis != 0):
        where = "per-group" if q.granularity == "group" else f"per-channel along axis={q.axis}"
        raise ValueError(f"{name} is {where}: {_NOT_FACTORING}{_WAY_OUT}")
    return np.asarray(q.scale, dtype=np.float64).reshape(-1, 1)


def _codes(codes, name: str) -> np.ndarray:
    c = as_int_array(codes, name)
    if c.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {c.shape}")
    return c


def rescaled_int_matmul(q_x, q_w, x_quantizer, w_quantizer) -> np.ndarray:
    r"""Dequantized product of integer codes, :math:`y = s_x[:, None] \cdot (q_x q_w^T) \cdot s_w[None, :]`.

    The accumulator :math:`q_x q_w^T` is :func:`~qlib.int_matmul`'s exact
    integer product; the rescaling is done in float64. Only scales that
    factor out of the sum over the input dimension are accepted (see the
    module documentation): ``x_quantizer`` per tensor or per token
    (``axis=0``), ``w_quantizer`` per tensor or per output channel
    (``axis=0``), both with zero point 0 (signed symmetric).

    Parameters
    ----------
    q_x : numpy.ndarray of int8 or int16, shape (tokens, in)
        Codes of the activations, e.g. ``qlib.quantize(x, x_quantizer)``.
    q_w : numpy.ndarray of int8 or int16, shape (out, in)
        Codes of the weights.
    x_quantizer, w_quantizer : qlib.Quantizer
        The quantizers that produced the codes.

    Returns
    -------
    numpy.ndarray of float64, shape (tokens, out)

    Raises
    ------
    TypeError
        If a quantizer is not a :class:`~qlib.Quantizer` or the codes are not integers.
    ValueError
        If a quantizer is per input channel (``axis=1``) or per group, has a
        nonzero zero point, has a number of scales that does not match the codes, or
        the codes' shapes do not match.

    Examples
    --------
    >>> import numpy as np, qlib
    >>> qx = qlib.Quantizer(np.array([0.5, 0.25]), axis=0, narrow_range=True)  # per token
    >>> qw = qlib.Quantizer(0.125, narrow_range=True)
    >>> codes_x = np.array([[2, -4], [8, 1]], dtype=np.int8)
    >>> codes_w = np.array([[10, 10]], dtype=np.int8)
    >>> rescaled_int_matmul(codes_x, codes_w, qx, qw)  # 0.5 * 0.125 * (-20), 0.25 * 0.125 * 90
    array([[-1.25  ],
           [ 2.8125]])

    Per input channel of x is refused:

    >>> rescaled_int_matmul(codes_x, codes_w, qlib.Quantizer(np.array([0.5, 0.25]), axis=1), qw)
    Traceback (most recent call last):
    ...
    ValueError: x_quantizer is per-channel along axis=1: its scale varies along the summation index k ...
    """
    s_x = _factored_scale(x_quantizer, "x_quantizer")
    s_w = _factored_scale(w_quantizer, "w_quantizer")
    cx = _codes(q_x, "q_x")
    cw = _codes(q_w, "q_w")
    if cx.shape[1] != cw.shape[1]:
        raise ValueError(f"q_x and q_w must have the same in_features, got q_x {cx.shape} and q_w {cw.shape}")
    for s, c, name, what in ((s_x, cx, "x_quantizer", "token (row of q_x)"),
                             (s_w, cw, "w_quantizer", "output channel (row of q_w)")):
        if s.shape[0] not in (1, c.shape[0]):
            raise ValueError(f"{name} must have 1 scale or one per {what}, {c.shape[0]}, got {s.shape[0]}")
    acc = int_matmul(cx, cw.T)
    return s_x * acc * s_w.T


def quantized_matmul(x, w, *, x_bits=8, w_bits=8, x_granularity="tensor", w_granularity="tensor") -> np.ndarray:
    r"""Approximate ``x @ w.T`` with symmetric integer operands and one exact integer GEMM.

    Quantizes ``x`` and ``w`` with :func:`~qlib.calibrate` (``symmetric=True``,
    min-max: the scale is :math:`\max|\cdot| / (2^{b-1}-1)` on the narrow grid,
    the absmax quantization of LLM.int8()), computed on the data itself
    (dynamic quantization), then returns
    :math:`s_x[:, \text{None}] \cdot \text{int\_matmul}(q_x, q_w^T) \cdot s_w[\text{None}, :]`
    (:func:`~qlib.rescaled_int_matmul`). The result equals
    ``dequantize(q_x) @ dequantize(q_w).T`` up to float rounding: the scales
    factor out of the sum over the input dimension (module documentation).

    Parameters
    ----------
    x : numpy.ndarray of float, shape (tokens, in)
        Activations.
    w : numpy.ndarray of float, shape (out, in)
        Weights, qlib's ``(out_features, in_features)`` convention.
    x_bits, w_bits : int, default 8
        Widths of the grids, 2 to 16.
    x_granularity : {"tensor", "token"}, default "tensor"
        One scale for all of ``x`` or one per token (row of ``x``).
        ``"channel"``/``"input_channel"`` (one per column) is refused with
        a ``ValueError``: it does not factor out of the integer GEMM.
    w_granularity : {"tensor", "channel"}, default "tensor"
        One scale for all of ``w`` or one per output channel (row of ``w``).
        ``"input_channel"`` is refused likewise.

    Returns
    -------
    numpy.ndarray, shape (tokens, out)
        In the float type of the inputs, at least float32 (rescaled in float64, then rounded).

    Raises
    ------
    TypeError
        If ``x`` or ``w`` is not a floating-point array, a width not an
        integer, a granularity not a string.
    ValueError
        If the shapes do not match, an input is not finite, a width is out
        of range, or a granularity is unknown or per input channel.

    Examples
    --------
    A per-tensor scale is set by the largest value, here a step of 127/127 = 1,
    and 0.25 rounds to 0; per token, row 2 gets the step (127/64)/127 = 1/64:

    >>> import numpy as np
    >>> x = np.array([[127.0, 0.25], [127 / 64, 0.25]])
    >>> w = np.array([[0.0, 1.0]])
    >>> quantized_matmul(x, w)
    array([[0.],
           [0.]])
    >>> quantized_matmul(x, w, x_granularity="token")
    array([[0.  ],
           [0.25]])
    >>> quantized_matmul(x, w, x_granularity="channel")
    Traceback (most recent call last):
    ...
    ValueError: x_granularity='channel' (one scale per input channel of x) is refused: its scale varies along ...
    """
    xa, wa = matmul_operands(x, w)
    x_bits = check_bits(x_bits, "x_bits")
    w_bits = check_bits(w_bits, "w_bits")
    x_gran = _check_granularity(x_granularity, "x_granularity", _X_GRANULARITIES)
    w_gran = _check_granularity(w_granularity, "w_granularity", _W_GRANULARITIES)
    qx = calibrate(xa, bits=x_bits, symmetric=True, axis=0 if x_gran == "token" else None)
    qw = calibrate(wa, bits=w_bits, symmetric=True, axis=0 if w_gran == "channel" else None)
    y = rescaled_int_matmul(quantize(xa, qx), quantize(wa, qw), qx, qw)
    return y.astype(result_dtype(xa, wa), copy=False)
