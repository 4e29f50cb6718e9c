r"""Outlier activations of large language models, and the two classic ways to quantize around them.

From about 6.7 billion parameters on, the hidden states of transformer
language models carry a few *outlier feature dimensions*: input channels of
the linear layers whose values are far larger than the rest, in most tokens
of a sequence (Dettmers, Lewis, Belkada and Zettlemoyer 2022, LLM.int8(),
arXiv:2208.07339). One per-tensor int8 scale for such an ``x`` is set by the
outliers and leaves the ordinary channels a handful of codes; a
per-input-channel scale would fix that but does not factor out of an integer
GEMM (:mod:`qlib.methods.quantized_matmul`). Two remedies:

:func:`~qlib.llm_int8_matmul` (LLM.int8()'s mixed-precision decomposition)
    take the outlier columns out and multiply them in floating point, the
    rest in int8 with vector-wise (per-token x per-output-channel) scales;
:func:`~qlib.smoothquant_scales` and :func:`~qlib.smooth` (SmoothQuant)
    following Xiao, Lin, Seznec, Wu, Demouth and Han 2022 (arXiv:2211.10438),
    divide each input channel of ``x`` by :math:`s_k` and multiply the same
    column of ``W`` by it, an exact identity
    :math:`x W^T = (x\,\mathrm{diag}(s)^{-1})(W\,\mathrm{diag}(s))^T` that
    migrates the difficulty from the activations to the weights, so that
    both quantize well per tensor (:func:`~qlib.smoothquant_matmul`).

:func:`~qlib.outlier_activations` generates *synthetic* activations with such
outlier channels for experiments; they are not taken from a real model.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.uniform import quantize
from qlib.core.validation import as_float_array, check_bits, check_int, check_real, check_rng
from qlib.methods.quantized_matmul import matmul_operands, quantized_matmul, rescaled_int_matmul, result_dtype

__all__ = ["outlier_activations", "llm_int8_matmul", "smoothquant_scales", "smooth", "smoothquant_matmul"]


def outlier_activations(rng, tokens, channels, *, n_outliers, scale_range=(20, 100)):
    r"""Synthetic activations ``(tokens, channels)`` with a few input channels 20 to 100 times larger.

    Every entry is drawn from :math:`\mathcal N(0, 1)`; then ``n_outliers``
    channels (columns), chosen uniformly without replacement, are multiplied
    by factors drawn uniformly from ``scale_range``, one per channel. This
    imitates the *systematic* outlier features that LLM.int8() (Dettmers et
    al. 2022, arXiv:2208.07339) found in large language models: the same few
    feature dimensions are large in most tokens. It is a synthetic stand-in,
    not data from a model (real outlier channels are also often of one
    sign and heavier-tailed).

    Parameters
    ----------
    rng : numpy.random.Generator
    tokens, channels : int
        The shape, both at least 1.
    n_outliers : int
        Number of outlier channels, 0 to ``channels``.
    scale_range : pair of float, default (20, 100)
        The range :math:`[a, b]`, :math:`0 < a \le b`, of the outlier factors.

    Returns
    -------
    x : numpy.ndarray of float32, shape (tokens, channels)
    outlier_channels : numpy.ndarray of int64
        The outlier columns, sorted.

    Examples
    --------
    >>> import numpy as np
    >>> x, idx = outlier_activations(np.random.default_rng(0), 256, 64, n_outliers=3)
    >>> idx.tolist(), x.shape, x.dtype
    ([38, 53, 58], (256, 64), dtype('float32'))
    >>> col = np.abs(x).max(axis=0)
    >>> bool(col[idx].min() > 10 * np.delete(col, idx).max())
    True
    """
    rng = check_rng(rng)
    tokens = check_int(tokens, "tokens", 1)
    channels = check_int(channels, "channels", 1)
    n_outliers = check_int(n_outliers, "n_outliers", 0, channels)
    if not isinstance(scale_range, (tuple, list)) or len(scale_range) != 2:
        raise TypeError(f"scale_range must be a pair (low, high), got {scale_range!r}")
    lo = check_real(scale_range[0], "scale_range[0]", lo=0, lo_open=True)
    hi = check_real(scale_range[1], "scale_range[1]", lo=lo)
    x = rng.standard_normal((tokens, channels))
    idx = np.sort(rng.choice(channels, size=n_outliers, replace=False)).astype(np.int64)
    x[:, idx] *= rng.uniform(lo, hi, size=n_outliers)
    return x.astype(np.float32), idx


def _check_threshold(threshold) -> float:
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, (bool, np.bool_)) \
            and math.isinf(threshold) and threshold > 0:
        return math.inf
    return check_real(threshold, "threshold", lo=0)


def llm_int8_matmul(x, w, *, threshold=6.0, bits=8):
    r"""LLM.int8()'s product: outlier input channels in floating point, the rest in int8.

    Dettmers, Lewis, Belkada and Zettlemoyer 2022, "LLM.int8(): 8-bit Matrix
    Multiplication for Transformers at Scale", arXiv:2208.07339. With
    :math:`O` the input channels (columns of ``x``) holding at least one
    value :math:`|x_{ik}| \ge` ``threshold`` (the paper's :math:`\alpha = 6`)
    and :math:`R` the others,

    .. math::

        y = x_{:,O}\, W_{:,O}^T
            + s_x[:, \text{None}] \cdot \bigl(q(x_{:,R})\, q(W_{:,R})^T\bigr) \cdot s_w[\text{None}, :],

    the first product in floating point, the second the *vector-wise*
    quantization of the paper: symmetric absmax int8 codes of
    :math:`x_{:,R}` with one scale per token (row) and of :math:`W_{:,R}`
    with one scale per output channel (row of ``W``), multiplied exactly in
    integers (:func:`~qlib.quantized_matmul` with
    ``x_granularity="token", w_granularity="channel"``). The scales are
    computed on the sub-matrices without the outlier columns, so an outlier
    no longer sets the scale of its token.

    Deviations from the paper: its floating-point part runs in float16; here
    it runs in the inputs' precision, at least float32 (float16 inputs are
    multiplied in float32). Quantization is dynamic, from ``x`` and ``w``
    themselves. (The bitsandbytes implementation quantizes all of ``W`` once,
    row-wise over every column, and takes the outlier columns of ``W`` from
    those int8 codes; here :math:`W_{:,O}` stays in floating point.)

    Parameters
    ----------
    x : numpy.ndarray of float, shape (tokens, in)
    w : numpy.ndarray of float, shape (out, in)
    threshold : float, default 6.0
        Magnitude from which a value makes its column an outlier column;
        non-negative, ``math.inf`` allowed (no outliers: plain vector-wise
        int8), ``0`` makes every column an outlier (the float product).
    bits : int, default 8
        Width of the integer part's grids.

    Returns
    -------
    y : numpy.ndarray, shape (tokens, out)
        In the inputs' float type, at least float32.
    outlier_columns : numpy.ndarray of int64
        The sorted indices :math:`O`.

    Examples
    --------
    Column 0 holds a 50: it is multiplied in floating point, the rest in int8
    with per-token scales (rounded to 2 decimals, exact); one per-tensor scale
    of 50/127 would garble every small value:

    >>> import numpy as np
    >>> x = np.array([[50.0, 1.0, -0.5], [-3.0, 0.5, 1.0]])
    >>> w = np.eye(3)
    >>> y, cols = llm_int8_matmul(x, w)
    >>> cols
    array([0])
    >>> y.round(2)
    array([[50. ,  1. , -0.5],
           [-3. ,  0.5,  1. ]])
    >>> from qlib.methods.quantized_matmul import quantized_matmul
    >>> quantized_matmul(x, w).round(2)
    array([[50.  ,  1.18, -0.39],
           [-3.15,  0.39,  1.18]])
    """
    xa, wa = matmul_operands(x, w)
    threshold = _check_threshold(threshold)
    bits = check_bits(bits)
    ft = result_dtype(xa, wa)
    is_outlier = np.any(np.abs(xa) >= threshold, axis=0)
    outliers = np.flatnonzero(is_outlier).astype(np.int64)
    regular = np.flatnonzero(~is_outlier)
    if outliers.size == 0:
        return quantized_matmul(xa, wa, x_bits=bits, w_bits=bits, x_granularity="token",
                                w_granularity="channel"), outliers
    y = xa[:, outliers].astype(ft) @ wa[:, outliers].astype(ft).T
    if regular.size:
        y += quantized_matmul(xa[:, regular], wa[:, regular], x_bits=bits, w_bits=bits,
                              x_granularity="token", w_granularity="channel")
    return y, outliers


def _absmax(a, name: str) -> np.ndarray:
    arr = as_float_array(a, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, one value per input channel, got shape {arr.shape}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative (maxima of absolute values), got min {float(arr.min())!r}")
    return arr.astype(np.float64)


def smoothquant_scales(x_absmax, w_absmax, alpha=0.5) -> np.ndarray:
    r"""SmoothQuant's per-input-channel smoothing factors :math:`s_k = \max|X_k|^\alpha / \max|W_k|^{1-\alpha}`.

    Xiao, Lin, Seznec, Wu, Demouth and Han 2022, "SmoothQuant: Accurate and
    Efficient Post-Training Quantization for Large Language Models",
    arXiv:2211.10438. :math:`\max|X_k|` is the largest magnitude of
    input channel :math:`k` of the activations (over calibration tokens),
    :math:`\max|W_k|` that of column :math:`k` of ``W`` (over output
    channels). After :func:`~qlib.smooth`, channel :math:`k` of the activations has
    the maximum :math:`\max|X_k|^{1-\alpha}\max|W_k|^{1-\alpha}` and column
    :math:`k` of the weights :math:`\max|X_k|^{\alpha}\max|W_k|^{\alpha}`:
    :math:`\alpha = 0.5` makes them equal; :math:`\alpha = 1` gives every
    activation channel the maximum 1 (all the difficulty moves into the
    weights), :math:`\alpha = 0` every weight column (none moves). The paper
    finds 0.5 a good balance for most models (OPT, BLOOM) and uses more
    where the activation outliers are harder (0.75 for GLM-130B).

    A channel whose :math:`\max|X_k|` or :math:`\max|W_k|` is 0 gets
    :math:`s_k = 1` (any factor leaves a zero channel zero; the formula
    would divide by 0). The reference implementation instead clamps at
    :math:`10^{-5}`.

    Parameters
    ----------
    x_absmax, w_absmax : array_like of float, shape (in,)
        Non-negative, finite: ``np.abs(x).max(axis=0)`` and ``np.abs(w).max(axis=0)``.
    alpha : float, default 0.5
        Migration strength, in [0, 1].

    Returns
    -------
    numpy.ndarray of float64, shape (in,)
        Positive factors.

    Examples
    --------
    >>> smoothquant_scales([16.0, 1.0, 0.0], [1.0, 4.0, 2.0])
    array([4. , 0.5, 1. ])
    >>> smoothquant_scales([16.0, 1.0], [1.0, 4.0], alpha=1.0)  # s = max|X_k|
    array([16.,  1.])
    """
    xm = _absmax(x_absmax, "x_absmax")
    wm = _absmax(w_absmax, "w_absmax")
    if xm.shape != wm.shape:
        raise ValueError(f"x_absmax and w_absmax must have the same shape, got {xm.shape} and {wm.shape}")
    alpha = check_real(alpha, "alpha", lo=0, hi=1)
    ok = (xm > 0) & (wm > 0)
    s = np.ones_like(xm)
    with np.errstate(over="ignore", under="ignore"):
        s[ok] = xm[ok] ** alpha / wm[ok] ** (1.0 - alpha)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("the smoothing factors over- or underflow float64: rescale x_absmax or w_absmax")
    return s


def smooth(x, w, s):
    r"""Migrate per-input-channel factors from activations to weights: ``(x / s, w * s)``.

    :math:`\hat x = x\,\mathrm{diag}(s)^{-1}` divides column :math:`k` of
    ``x`` by :math:`s_k`; :math:`\hat W = W\,\mathrm{diag}(s)` with qlib's
    ``(out, in)`` weights multiplies column :math:`k` of ``w`` by
    :math:`s_k`. The product is unchanged up to rounding,
    :math:`\hat x \hat W^T = x W^T` (SmoothQuant, Xiao et al. 2022,
    arXiv:2211.10438). In a transformer the division is folded offline into
    the preceding LayerNorm (or linear layer), so it costs nothing at run time.

    Parameters
    ----------
    x : numpy.ndarray of float, shape (tokens, in)
    w : numpy.ndarray of float, shape (out, in)
    s : array_like of float, shape (in,)
        Positive, finite, e.g. :func:`~qlib.smoothquant_scales`.

    Returns
    -------
    x_smooth, w_smooth : numpy.ndarray
        In the inputs' float type, at least float32 (``s`` rounded to it once, for both).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[8.0, 1.0], [-4.0, 0.5]])
    >>> w = np.array([[0.5, 2.0]])
    >>> xs, ws = smooth(x, w, [4.0, 1.0])
    >>> xs, ws
    (array([[ 2. ,  1. ],
           [-1. ,  0.5]]), array([[2., 2.]]))
    >>> bool(np.allclose(xs @ ws.T, x @ w.T))
    True
    """
    xa, wa = matmul_operands(x, w)
    sa = as_float_array(s, "s")
    if sa.shape != (xa.shape[1],):
        raise ValueError(f"s must have shape ({xa.shape[1]},), one factor per input channel, got {sa.shape}")
    if np.any(sa <= 0):
        raise ValueError(f"s must be positive, got min {float(sa.min())!r}")
    ft = result_dtype(xa, wa)
    with np.errstate(over="ignore", under="ignore"):
        sf = sa.astype(ft)
    if not np.all(np.isfinite(sf) & (sf > 0)):
        raise ValueError(f"s must be positive and finite in {ft}")
    return xa.astype(ft) / sf, wa.astype(ft) * sf


def smoothquant_matmul(x, w, *, alpha=0.5, x_absmax=None, x_calibration=None, x_bits=8, w_bits=8,
                       x_granularity="tensor", w_granularity="tensor"):
    r"""SmoothQuant, then :func:`~qlib.quantized_matmul`: approximate ``x @ w.T``.

    :math:`s = ` :func:`~qlib.smoothquant_scales` ``(x_absmax, |w|.max(axis=0), alpha)``,
    ``x_s, w_s = smooth(x, w, s)``, then both quantized symmetric with the
    given granularities, per tensor by default (the paper's O2/O3 settings
    are per-tensor for both; O1 is per-token activations) and multiplied
    with one exact integer GEMM.

    Parameters
    ----------
    x : numpy.ndarray of float, shape (tokens, in)
    w : numpy.ndarray of float, shape (out, in)
    alpha : float, default 0.5
        Migration strength, in [0, 1].
    x_absmax : array_like of float, shape (in,), optional
        Per-channel activation maxima from calibration data (the paper uses
        512 calibration sentences); default ``np.abs(x).max(axis=0)``.
    x_calibration : numpy.ndarray of float, shape (n, in), optional
        Static quantization, as deployed: the smoothing factors *and* the
        per-tensor activation scale come from this calibration batch (the
        scale from the smoothed batch), and ``x`` is quantized with them
        (values beyond the calibrated range saturate). Without it, the
        activation scale is computed from ``x`` itself (dynamic). Requires
        ``x_granularity="tensor"``; excludes ``x_absmax``.
    x_bits, w_bits, x_granularity, w_granularity
        As in :func:`~qlib.quantized_matmul`.

    Returns
    -------
    numpy.ndarray, shape (tokens, out)

    Examples
    --------
    The outlier column 0 no longer sets the activations' scale:

    >>> import numpy as np
    >>> x = np.array([[100.0, 0.3], [-60.0, 1.0]])
    >>> w = np.array([[0.01, 1.0]])
    >>> x @ w.T
    array([[1.3],
           [0.4]])
    >>> smoothquant_matmul(x, w).round(2)
    array([[1.3],
           [0.4]])
    >>> from qlib.methods.quantized_matmul import quantized_matmul
    >>> quantized_matmul(x, w).round(2)  # x: 0.3 rounds to 0 (step 100/127); w: 0.01 to 1/127
    array([[0.79],
           [0.32]])
    """
    xa, wa = matmul_operands(x, w)
    if x_calibration is None:
        xm = np.abs(xa).max(axis=0) if x_absmax is None else x_absmax
        s = smoothquant_scales(xm, np.abs(wa).max(axis=0), alpha)
        xs, ws = smooth(xa, wa, s)
        return quantized_matmul(xs, ws, x_bits=x_bits, w_bits=w_bits, x_granularity=x_granularity,
                                w_granularity=w_granularity)
    if x_absmax is not None:
        raise ValueError("give x_absmax or x_calibration, not both: x_calibration sets the maxima itself")
    if x_granularity != "tensor":
        raise ValueError(f"static activation scales from x_calibration are per tensor (x_granularity='tensor'), "
                         f"got x_granularity={x_granularity!r}: a per-token scale can only come from x itself")
    xc, _ = matmul_operands(x_calibration, wa)
    s = smoothquant_scales(np.abs(xc).max(axis=0), np.abs(wa).max(axis=0), alpha)
    xcs, ws = smooth(xc, wa, s)
    xs, _ = smooth(xa, wa, s)
    x_quantizer = calibrate(xcs, bits=check_bits(x_bits, "x_bits"), symmetric=True)
    w_axis = {"tensor": None, "channel": 0}.get(w_granularity)
    if w_granularity not in ("tensor", "channel"):
        raise ValueError(f"w_granularity must be one of ('tensor', 'channel'), got {w_granularity!r}")
    w_quantizer = calibrate(ws, bits=check_bits(w_bits, "w_bits"), symmetric=True, axis=w_axis)
    y = rescaled_int_matmul(quantize(xs, x_quantizer), quantize(ws, w_quantizer), x_quantizer, w_quantizer)
    return y.astype(result_dtype(xa, wa), copy=False)
