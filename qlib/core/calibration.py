r"""Calibration: choosing the scale and zero point of the uniform quantizer.

:func:`qlib.calibrate` looks at a sample tensor ``x`` and returns a
:class:`qlib.Quantizer`: scale, zero point, grid and granularity, for
``qlib.quantize(x, quantizer)``. It first picks a real *clipping range*
:math:`[\alpha, \beta]` for each tensor, channel or group, then maps it onto
the integer grid :math:`[q_{min}, q_{max}]` of ``bits`` bits.

**The range** (``method``):

``"minmax"``
    :math:`[\min x, \max x]`, as PyTorch's ``MinMaxObserver``: nothing is
    clipped, but one outlier stretches the grid for everyone.
``"percentile"``
    :math:`[P_{100-p}(x), P_p(x)]`, or :math:`\pm P_p(|x|)` when symmetric:
    the extreme :math:`100 - p` percent saturate.
``"mse"``
    the range :math:`[c\alpha_0, c\beta_0]` that minimizes the mean squared
    error :math:`\frac1n\sum(x - \hat x)^2` of the fake-quantized ``x``, with
    :math:`[\alpha_0, \beta_0]` the min-max range and :math:`c` searched over
    ``num_candidates`` shrink factors :math:`k/K`, :math:`k = 1..K`. Clipping
    a few outliers buys a finer grid for the bulk: on heavy-tailed data
    (weights, activations) this beats min-max. :math:`c = 1` is a candidate,
    so the result is never worse than min-max on ``x`` itself.

**The grid.** The range is first stretched to include 0,
:math:`\alpha \leftarrow \min(\alpha, 0)`, :math:`\beta \leftarrow \max(\beta, 0)`,
so that the real 0 (zero padding, ReLU outputs) is represented exactly. Then

- *asymmetric* (affine, the default):

  .. math::

     s = \frac{\beta - \alpha}{q_{max} - q_{min}}, \qquad
     z = \operatorname{clip}(q_{min} - \operatorname{round}(\alpha / s),
     q_{min}, q_{max});

- *symmetric*, with :math:`m = \max(-\alpha, \beta)`, on the **narrow**
  (restricted) grid :math:`[-(2^{b-1} - 1), 2^{b-1} - 1]`:

  .. math::

     s = \frac{m}{2^{b-1} - 1}, \qquad
     z = 0 \text{ (signed)} \quad\text{or}\quad z = 2^{b-1} \text{ (unsigned)}.

  The returned quantizer has ``narrow_range=True``, as TensorFlow's
  ``narrow_range`` and TensorFlow Lite's int8 weights (Jacob et al. 2018):
  ``quantize(x, quantizer)`` gives ``int8`` codes in :math:`[-127, 127]` and
  **never -128**, for every method (a percentile or MSE range clips values
  beyond :math:`\pm m`, and they saturate at :math:`\pm 127`) and every
  granularity. The grid is symmetric, so ``quantize(-x, q) == -quantize(x, q)``,
  and the product of two codes never reaches :math:`(-128)^2 = 2^{14}`, which
  lets integer kernels accumulate pairs of products in 16 bits without
  saturating. PyTorch instead divides by :math:`(q_{max} - q_{min})/2 = 127.5`
  on the full grid, using -128 but mapping :math:`+m` to 127.5, which rounds
  to 128 and saturates; the difference in resolution is 0.4 %. At 2 bits the
  narrow grid is ternary :math:`\{-1, 0, 1\}`. Unsigned symmetric uses the
  same scale with the zero point :math:`2^{b-1}` (128 for ``uint8``, as
  PyTorch) on the narrow unsigned grid :math:`[1, 2^b - 1]`.
  ``narrow_range=False`` keeps this scale and zero point on the full grid
  (the behaviour of qlib before the Quantizer), where clipped negative values
  reach :math:`-2^{b-1}`.

  The promise holds for the quantizer itself. The old functional call
  ``quantize(x, s, z, bits=8)`` with the unpacked ``s, z = calibrate(...)``
  uses the full ONNX grid :math:`[-128, 127]` (add ``narrow_range=True``, or
  pass the quantizer).

``narrow_range`` may also be set for an asymmetric calibration: the range is
then mapped onto the narrow grid by the asymmetric formulas (``qmin`` one
higher), as TensorFlow's ``FakeQuantWithMinMaxVars(narrow_range=True)``.

The MSE search evaluates every candidate on the grid it returns.

In both cases the scale is floored at the float32 machine epsilon
:math:`2^{-23}` (as PyTorch), so a constant or all-zero tensor gets a valid
scale. Ranges are computed in float64 and the scale rounded to float32.
float16 samples are calibrated in float32.
"""

from __future__ import annotations

import numbers

import numpy as np

from qlib.core.fake_quant import fake_quantize_into, prepare
from qlib.core.grid import Quantizer, integer_range
from qlib.core.layout import Layout, compute_dtype, make_layout
from qlib.core.validation import as_float_array, check_bits, check_bool, check_choice, check_int

__all__ = ["calibrate"]

_METHODS = ("minmax", "percentile", "mse")
_EPS = np.finfo(np.float32).eps


def _check_percentile(percentile) -> float:
    if isinstance(percentile, (bool, np.bool_)) or not isinstance(percentile, numbers.Real):
        raise TypeError(
            f"percentile must be a real number in (0, 100], got "
            f"{type(percentile).__name__} {percentile!r}"
        )
    p = float(percentile)
    if not (0.0 < p <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    return p


def _check_method(method) -> str:
    return check_choice(method, "method", _METHODS)


def _row_parts(x: np.ndarray, layout: Layout):
    """View ``x`` as 2-D arrays whose rows are the sets sharing one scale.

    Return ``(parts, assemble)``: ``assemble`` takes one 1-D result per part
    (one value per row) and returns them in ``layout.param_shape``.
    """
    if layout.kind == "tensor":
        return [x.reshape(1, -1)], lambda r: r[0].reshape(())
    if layout.kind == "channel":
        rows = np.moveaxis(x, layout.axis, 0).reshape(layout.n, -1)
        return [rows], lambda r: r[0]
    P, N, Q, g = layout.pre, layout.n, layout.post, layout.group_size
    x3 = x.reshape(P, N, Q)
    full, tail = divmod(N, g)
    parts, shapes = [], []
    if full:
        blocks = x3[:, : full * g, :].reshape(P, full, g, Q).transpose(0, 1, 3, 2)
        parts.append(blocks.reshape(-1, g))
        shapes.append((P, full, Q))
    if tail:
        parts.append(x3[:, full * g :, :].transpose(0, 2, 1).reshape(-1, tail))
        shapes.append((P, 1, Q))

    def assemble(results):
        pieces = [r.reshape(shp) for r, shp in zip(results, shapes)]
        return np.concatenate(pieces, axis=1).reshape(layout.param_shape)

    return parts, assemble


def _qparams(lo, hi, qmin: int, qmax: int, bits: int, signed: bool, symmetric: bool):
    """Scale (float32) and zero point (int64) of the ranges ``[lo, hi]`` (float64)
    on the grid ``[qmin, qmax]``."""
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    with np.errstate(over="ignore"):
        if symmetric:
            half = (1 << (bits - 1)) - 1
            scale = (np.maximum(-lo, hi) / half).astype(np.float32)
        else:
            scale = ((hi - lo) / (qmax - qmin)).astype(np.float32)
    scale = np.maximum(scale, _EPS)
    if not np.all(np.isfinite(scale)):
        raise ValueError(
            "x spans a range too wide for a float32 scale "
            f"(up to {float(np.max(hi - lo)):.3g})"
        )
    if symmetric:
        zp = np.full(scale.shape, 0 if signed else 1 << (bits - 1), dtype=np.int64)
    else:
        zp = qmin - np.rint(lo / scale.astype(np.float64))
        zp = np.clip(zp, qmin, qmax).astype(np.int64)
    return scale, zp


def _mse_search(rows, lo, hi, grid, num_candidates):
    """Shrink ``[lo, hi]`` per row by the factor with the least squared error.

    Each candidate is fake-quantized by qlib's one kernel, per channel along
    axis 0 of ``rows`` (one scale per row), on the grid the result will use.
    """
    bits, signed, narrow, symmetric = grid
    qmin, qmax = integer_range(bits, signed, narrow)
    rows = np.ascontiguousarray(rows)  # the kernel writes flat, C-ordered blocks
    best_err = np.full(rows.shape[0], np.inf)
    best_c = np.ones(rows.shape[0])
    buf = np.empty(rows.shape, dtype=rows.dtype)
    job = None
    with np.errstate(over="ignore", under="ignore"):
        for k in range(num_candidates, 0, -1):  # largest range first: ties keep it
            c = k / num_candidates
            scale, zp = _qparams(c * lo, c * hi, qmin, qmax, bits, signed, symmetric)
            if job is None:
                job = prepare(rows, scale, zp, bits, signed, narrow, 0, None)
            else:
                job = job.with_params(scale, zp)
            fake_quantize_into(job, buf)
            buf -= rows
            err = np.einsum("ij,ij->i", buf, buf, dtype=np.float64)
            better = err < best_err
            best_err[better] = err[better]
            best_c[better] = c
    return best_c * lo, best_c * hi


def calibrate(
    x,
    *,
    bits=8,
    signed=True,
    symmetric=False,
    narrow_range=None,
    axis=None,
    group_size=None,
    method="minmax",
    percentile=99.99,
    num_candidates=100,
) -> Quantizer:
    r"""Choose the scale and zero point of the uniform quantizer from sample data.

    Parameters
    ----------
    x : array_like of float
        Sample of the tensor to quantize: finite, non-empty, floating point
        (integer input is refused). Constant input is fine.
    bits : int, default 8
        Width of the integer grid, 2 to 16.
    signed : bool, default True
        Signed grid :math:`[-2^{b-1}, 2^{b-1}-1]` or unsigned :math:`[0, 2^b-1]`;
        with ``symmetric=True`` the narrow range drops the lowest code by
        default (see ``narrow_range``).
    symmetric : bool, default False
        Symmetric (:math:`s = m / (2^{b-1}-1)`, zero point 0, or
        :math:`2^{b-1}` when unsigned, on the narrow grid) instead of
        asymmetric (affine). See the module documentation.
    narrow_range : bool, optional
        Whether the grid drops its lowest code (:func:`qlib.integer_range`).
        ``None`` (default): True when ``symmetric``, False otherwise.
        ``symmetric=True, narrow_range=False`` keeps the symmetric scale on
        the full grid (clipped values may reach :math:`-2^{b-1}`);
        ``symmetric=False, narrow_range=True`` maps the range onto the narrow
        grid with the asymmetric formulas.
    axis : int, optional
        Channel axis: one pair per index along it. ``None`` is per-tensor.
    group_size : int, optional
        With ``axis``: one pair per ``group_size`` consecutive elements along
        ``axis`` (the last group may be shorter). Requires ``axis``.
    method : {"minmax", "percentile", "mse"}, default "minmax"
        How the clipping range is chosen (see the module documentation).
    percentile : float, default 99.99
        For ``method="percentile"``: the percentile :math:`p \in (0, 100]`
        of :math:`|x|` (symmetric) or the pair :math:`(100-p, p)`
        (asymmetric) that bounds the range; 100 is min-max.
    num_candidates : int, default 100
        For ``method="mse"``: the number :math:`K \ge 1` of shrink factors
        :math:`k/K` tried. The search costs :math:`K` fake quantizations of ``x``.

    Returns
    -------
    Quantizer
        With ``bits``, ``signed``, ``narrow_range``, ``axis`` (non-negative)
        and ``group_size`` as chosen, and

        - ``scale``: float32, at least the float32 epsilon; a scalar
          per-tensor, shape ``(x.shape[axis],)`` per-channel, and per-group
          the shape of ``x`` with ``x.shape[axis]`` replaced by
          ``ceil(x.shape[axis] / group_size)``;
        - ``zero_point``: on the grid, of the shape of ``scale``, in the dtype
          :func:`qlib.quantize` returns for this grid (``int8`` for the default).

        It unpacks as the pair ``scale, zero_point = calibrate(x)``.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point array, ``bits``, ``axis``,
        ``group_size`` or ``num_candidates`` is not an integer, ``signed``,
        ``symmetric`` or ``narrow_range`` is not a bool (or None for
        ``narrow_range``), ``method`` is not a string or ``percentile`` not a
        real number.
    ValueError
        If ``x`` is empty or not finite, ``bits`` is outside [2, 16],
        ``axis`` is out of range, ``group_size`` is not positive or is given
        without ``axis``, ``method`` is unknown, ``percentile`` is outside
        (0, 100], ``num_candidates < 1``, or the range of ``x`` does not fit
        a float32 scale.

    Examples
    --------
    Asymmetric int8: the range [-1, 3] is cut into 255 steps of 4/255, and the
    real 0 sits at code :math:`-128 - \operatorname{round}(-1 / s) = -64`:

    >>> import numpy as np
    >>> x = np.array([-1.0, 0.0, 2.0, 3.0], dtype=np.float32)
    >>> calibrate(x)
    Quantizer(8-bit signed [-128, 127], per-tensor, scale 0.015686275, zero point -64)
    >>> s, z = calibrate(x)
    >>> s, z
    (np.float32(0.015686275), np.int8(-64))

    Symmetric: :math:`s = 3 / 127` and zero point 0 on the narrow grid; all-positive
    data keeps 0 in the range:

    >>> calibrate(x, symmetric=True)
    Quantizer(8-bit signed narrow [-127, 127], per-tensor, scale 0.023622047, zero point 0)
    >>> calibrate(np.array([2.0, 4.0], dtype=np.float32), bits=4, signed=False)
    Quantizer(4-bit unsigned [0, 15], per-tensor, scale 0.26666668, zero point 0)

    Per channel (one scale per row) and per group of 2 along the columns:

    >>> w = np.array([[0.6, -1.0, 0.25], [3.0, 4.0, -8.0]], dtype=np.float32)
    >>> q = calibrate(w, bits=4, symmetric=True, axis=0)
    >>> q.scale * 7, q.zero_point
    (array([1., 8.], dtype=float32), array([0, 0], dtype=int8))
    >>> q = calibrate(w, bits=4, symmetric=True, axis=1, group_size=2)
    >>> q
    Quantizer(4-bit signed narrow [-7, 7], per-group axis=1 group_size=2, 4 scales in [0.03571, 1.143], zero point 0)
    >>> from qlib import quantize
    >>> quantize(w, q)
    array([[ 4, -7,  7],
           [ 5,  7, -7]], dtype=int8)

    A percentile range clips, and the clipped values saturate at -7, not -8:

    >>> t = np.array([-10.0, -1.0, 0.6, 1.0], dtype=np.float32)
    >>> quantize(t, calibrate(t, bits=4, symmetric=True, method="percentile", percentile=50))
    array([-7, -7,  4,  7], dtype=int8)
    """
    xa = as_float_array(x, "x", allow_int=False)
    bits = check_bits(bits)
    signed = check_bool(signed, "signed")
    symmetric = check_bool(symmetric, "symmetric")
    narrow = symmetric if narrow_range is None else check_bool(narrow_range, "narrow_range")
    layout = make_layout(xa.shape, axis, group_size)
    method = _check_method(method)
    percentile = _check_percentile(percentile)
    num_candidates = check_int(num_candidates, "num_candidates", 1)

    qmin, qmax = integer_range(bits, signed, narrow)
    xa = xa.astype(compute_dtype(xa.dtype), copy=False)
    parts, assemble = _row_parts(xa, layout)
    scales, zero_points = [], []
    for rows in parts:
        if method == "percentile" and percentile < 100.0:
            if symmetric:
                hi = np.percentile(np.abs(rows), percentile, axis=1).astype(np.float64)
                lo = -hi
            else:
                a, c = np.percentile(rows, [100.0 - percentile, percentile], axis=1).astype(np.float64)
                lo, hi = np.minimum(a, c), np.maximum(a, c)
        else:
            lo = rows.min(axis=1).astype(np.float64)
            hi = rows.max(axis=1).astype(np.float64)
            if method == "mse":
                lo, hi = _mse_search(rows, lo, hi, (bits, signed, narrow, symmetric), num_candidates)
        scale, zero_point = _qparams(lo, hi, qmin, qmax, bits, signed, symmetric)
        scales.append(scale)
        zero_points.append(zero_point)
    return Quantizer(assemble(scales), assemble(zero_points), bits=bits, signed=signed, narrow_range=narrow,
                     axis=layout.axis, group_size=layout.group_size)
