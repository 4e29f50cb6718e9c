r"""The kernels of the uniform quantizer, and the backward pass of fake quantization.

One forward, written once (``fake_quantize_into``),

.. math::

    \hat x = (\operatorname{clip}(\operatorname{round}(x/s) + z,\; q_{min},\; q_{max}) - z)\, s,

serves :func:`qlib.fake_quantize`, the MSE search of :func:`qlib.calibrate`
and the stochastic quantizers of :mod:`qlib.core.rounding` (which pass their
own rounding), and, stopped before the last step, the integer codes of every
rounding but the default one. The codes of round-to-nearest in float32 and
float64, the hot path of :func:`qlib.quantize`, have a faster kernel of their
own (``quantize_codes``, "magic number" rounding) that gives the same
codes. ``dequantize_codes`` is :math:`(q - z)s`.

:func:`~qlib.fake_quantize_backward` is the backward pass for quantization-aware
training: the straight-through estimator for ``x`` and the learned step size
(LSQ) gradient for the scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from qlib.core.grid import Quantizer, grid_arguments, grid_name, integer_range
from qlib.core.layout import (
    Layout,
    as_scale,
    as_zero_point,
    block_buffer,
    blocks,
    broadcast3,
    check_block_finite,
    compute_dtype,
    float_input,
    fp_config,
    make_layout,
    param,
    reduce3,
)
from qlib.core.validation import as_float_array, check_bits, check_bool

__all__ = ["fake_quantize_backward"]


@dataclass(frozen=True)
class Prepared:
    """A validated quantization problem: the tensor, its layout and grid, and
    the parameters in the kernels' shapes (``z`` is ``None`` when zero)."""

    x: np.ndarray  # C-contiguous
    checked: bool  # False: the kernel checks finiteness block by block
    layout: Layout
    qmin: int
    qmax: int
    dtype: np.dtype  # of the arithmetic: float32 for float16 x
    half: bool  # float16 x: quotients are rounded to float16, as ONNX divides in float16
    s: object
    z: object

    @property
    def float_dtype(self) -> np.dtype:
        """The dtype of a reconstruction: ``x``'s (float16 stays float16)."""
        return np.dtype(np.float16) if self.half else self.dtype

    def with_params(self, scale, zero_point) -> Prepared:
        """The same problem with other scales and zero points, already valid
        and in ``layout.param_shape`` (no checks: for searches over candidates)."""
        s = param(np.asarray(scale).astype(self.dtype), self.layout, "scale")
        z = param(np.asarray(zero_point).astype(self.dtype), self.layout, "zero_point")
        return replace(self, s=s, z=z if np.any(zero_point) else None)


def prepare(x, scale, zero_point, bits, signed, narrow_range, axis, group_size) -> Prepared:
    """Validate the arguments of a quantizer call (ONNX semantics)."""
    xa, checked = float_input(x, "x")
    b = check_bits(bits)
    signed = check_bool(signed, "signed")
    narrow = check_bool(narrow_range, "narrow_range")
    layout = make_layout(xa.shape, axis, group_size)
    qmin, qmax = integer_range(b, signed, narrow)
    half = xa.dtype == np.float16
    dtype = compute_dtype(xa.dtype)
    s = param(as_scale(scale, xa.dtype if half else dtype), layout, "scale")
    zarr = as_zero_point(zero_point, qmin, qmax, grid_name(b, signed, narrow))
    z = param(zarr, layout, "zero_point")
    s, z = (np.asarray(p).astype(dtype) if isinstance(p, np.ndarray) else dtype.type(p) for p in (s, z))
    return Prepared(xa, checked, layout, qmin, qmax, dtype, half, s, z if np.any(zarr) else None)


def prepare_call(func: str, x, scale, **given) -> Prepared:
    """:func:`prepare` for a public function's arguments (a Quantizer or explicit ones)."""
    return prepare(x, **grid_arguments(func, scale, **given))


def divide(xb: np.ndarray, sb, t: np.ndarray, half: bool) -> None:
    """``t = x / s`` in the precision of ``x``: a float16 ``x`` is divided in
    float32 and the quotient rounded to float16, which is float16 division
    (float32 has more than twice float16's 11 bits, so the double rounding is
    innocuous)."""
    np.divide(xb, sb, out=t)
    if half:
        np.copyto(t, t.astype(np.float16))


def _x_block(job: Prepared, xf: np.ndarray, a: int, b: int, shape) -> np.ndarray:
    xb = xf[a:b].reshape(shape)
    if not job.checked:
        check_block_finite(xb, job.x, "x")
    return xb


def fake_quantize_into(job: Prepared, out: np.ndarray, *, rounding=None, dequantize: bool = True) -> np.ndarray:
    """THE fake-quantization kernel: write ``(clip(round(x/s) + z) - z) s`` into ``out``.

    ``rounding`` rounds a float block in place (``None``: half to even,
    ``np.rint``). With ``dequantize=False`` the clipped codes are written
    instead (``out`` may then be an integer array). The ``+ z`` step adds 0
    when there is no zero point, which turns the ``-0.0`` that rounding gives
    for small negative values into ``0.0``, as in ``dequantize(quantize(x))``.
    """
    if not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous array (the kernel writes into its flat view)")
    xf, outf = job.x.reshape(-1), out.reshape(-1)
    direct = out.dtype == job.dtype
    tmp = None if direct else block_buffer(xf.size, job.dtype)
    lo, hi = job.dtype.type(job.qmin), job.dtype.type(job.qmax)
    with fp_config(job.layout):
        for a, b, shape, (sb, zb) in blocks(job.layout, (job.s, job.z)):
            xb = _x_block(job, xf, a, b, shape)
            t = outf[a:b].reshape(shape) if direct else tmp[: b - a].reshape(shape)
            divide(xb, sb, t, job.half)
            if rounding is None:
                np.rint(t, out=t)
            else:
                rounding(t)
            np.add(t, 0 if zb is None else zb, out=t)
            t.clip(lo, hi, out=t)
            if dequantize:
                if zb is not None:
                    np.subtract(t, zb, out=t)
                np.multiply(t, sb, out=t)
            if not direct:
                np.copyto(outf[a:b].reshape(shape), t, casting="unsafe")
    return out


#: Round-to-integer constants: for ``|t| < 2**(p-2)``, ``t + 1.5 * 2**(p-1)``
#: (p = 24 or 53 significand bits) lands where the float spacing is exactly 1,
#: so the addition itself rounds ``t`` half to even, and the bit pattern of the
#: sum, read as an integer, is ``MAGIC_BITS + round(t)``.
_MAGIC = {
    np.dtype(np.float32): (np.float32(1.5 * 2.0**23), np.dtype(np.int32), 0x4B400000),
    np.dtype(np.float64): (np.float64(1.5 * 2.0**52), np.dtype(np.int64), 0x4338000000000000),
}


def quantize_codes(job: Prepared, out: np.ndarray) -> np.ndarray:
    """Round-to-nearest codes of ``job`` into the integer array ``out``.

    float32/float64 use the "magic number" round: per block, ``t = x / s``
    (the division), ``u = t + 1.5 * 2**23`` (rounds half to even, as
    ``np.rint``), plus ``z`` (exact); then ``u``'s bits are clipped as
    integers, which for positive floats order as the floats do, and every
    float beyond the grid (as well as any negative one, when ``t`` is hugely
    negative) lands past one end, so saturation is exact. The low 8 or 16
    bits of ``MAGIC_BITS + q`` are ``q``: a plain narrowing cast stores them.
    This saves a rounding pass and replaces the slow float clip and
    float-to-int conversion by their integer counterparts. An even scalar
    ``z`` is folded into the constant (the sum stays even, so ties still
    round to even); an odd one leaves 1 to add to the narrow codes, modulo
    ``2**bits``. Other float types go through ``fake_quantize_into``.
    """
    magic = _MAGIC.get(job.dtype)
    if magic is None:
        return fake_quantize_into(job, out, dequantize=False)
    m, itype, m_bits = magic
    if job.z is None or isinstance(job.z, np.ndarray):
        z_odd, shift, z_arr = 0, m, job.z
    else:
        zi = int(job.z)
        z_odd = zi & 1
        shift, z_arr = job.dtype.type(m + (zi - z_odd)), None
    ilo, ihi = itype.type(m_bits + job.qmin - z_odd), itype.type(m_bits + job.qmax - z_odd)
    xf, outf = job.x.reshape(-1), out.reshape(-1)
    tmp = block_buffer(xf.size, job.dtype)
    with fp_config(job.layout):
        for a, b, shape, (sb, zb) in blocks(job.layout, (job.s, z_arr)):
            xb = _x_block(job, xf, a, b, shape)
            t = tmp[: b - a].reshape(shape)
            divide(xb, sb, t, job.half)
            np.add(t, shift, out=t)
            if zb is not None:
                np.add(t, zb, out=t)
            ti = t.view(itype)
            ti.clip(ilo, ihi, out=ti)
            ob = outf[a:b].reshape(shape)
            np.copyto(ob, ti, casting="unsafe")
            if z_odd:
                np.add(ob, 1, out=ob)
    return out


def dequantize_codes(qa: np.ndarray, out: np.ndarray, layout: Layout, s, z) -> np.ndarray:
    """``(q - z) s`` of the integer codes ``qa`` into the float32 ``out``.

    Codes of at most 16 bits: ``q`` and ``q - z`` (at most ``2**17`` in
    magnitude) are exact in float32 and the product is the one rounding.
    Wider codes: ``s`` and ``z`` are float64 and int64 here; ``q - z`` is
    formed exactly in int64 (the caller has checked it fits), converted to
    float64 (exact up to ``2**53``), multiplied by the scale in float64
    (exact while ``|q - z| < 2**29``) and rounded to float32.
    """
    wide = qa.dtype.itemsize > 2
    qf, outf = qa.reshape(-1), out.reshape(-1)
    with fp_config(layout):
        for a, b, shape, (sb, zb) in blocks(layout, (s, z)):
            qb = qf[a:b].reshape(shape)
            t = outf[a:b].reshape(shape)
            if wide:
                d = qb.astype(np.float64) if zb is None else (qb.astype(np.int64) - zb).astype(np.float64)
                np.copyto(t, d * sb, casting="same_kind")
            else:
                np.copyto(t, qb, casting="unsafe")
                if zb is not None:
                    np.subtract(t, zb, out=t)
                np.multiply(t, sb, out=t)
    return out


def fake_quantize_backward(x, quantizer, grad_output):
    r"""Backward pass of :func:`qlib.fake_quantize` for quantization-aware training.

    Given :math:`g = \partial L / \partial \hat x` for
    :math:`\hat x = (\operatorname{clip}(\operatorname{round}(x/s) + z, q_{min}, q_{max}) - z)s`,
    return :math:`(\partial L/\partial x, \partial L/\partial s)` with rounding
    differentiated by the straight-through estimator (Bengio et al. 2013),
    as in the learned step size quantization (LSQ) of Esser et al. 2020
    (arXiv:1902.08153). With :math:`v = x / s` (computed as the forward
    computes it) and the clipping range :math:`[q_{min} - z, q_{max} - z]`
    of :math:`v`:

    .. math::

        \frac{\partial \hat x}{\partial x} =
        \begin{cases} 1 & q_{min} - z \le v \le q_{max} - z \\ 0 & \text{otherwise} \end{cases}
        \qquad
        \frac{\partial \hat x}{\partial s} =
        \begin{cases}
          q_{min} - z & v \le q_{min} - z \\
          \operatorname{round}(v) - v & q_{min} - z < v < q_{max} - z \\
          q_{max} - z & v \ge q_{max} - z
        \end{cases}

    The range is closed for ``x``: a value exactly at an end of
    :math:`[(q_{min} - z)s, (q_{max} - z)s]` passes its gradient (as
    TensorFlow's ``FakeQuantWithMinMaxVarsGradient``); for the scale an end
    point takes the clipped branch, as in LSQ (it is also the exact
    derivative there). Values between the end of the range and half a step
    beyond it, which round onto the last code rather than being clipped, are
    outside. The scale gradient is summed over the elements sharing each
    scale.

    Parameters
    ----------
    x : array_like of float
        The forward input (finite, floating point).
    quantizer : Quantizer
        The forward quantizer (e.g. from :func:`qlib.calibrate`).
    grad_output : array_like of float
        :math:`\partial L/\partial \hat x`, of the shape of ``x``.

    Returns
    -------
    grad_x : numpy.ndarray
        ``grad_output`` where :math:`v` is in the range, 0 elsewhere; the
        dtype of ``grad_output``.
    grad_scale : numpy scalar or numpy.ndarray
        Of the shape of ``quantizer.scale`` (scalar per tensor, one entry per
        channel or group), accumulated in float64 and returned in the
        precision of the arithmetic (float32 for float16/float32 ``x``).

    Raises
    ------
    TypeError
        If ``quantizer`` is not a :class:`~qlib.Quantizer`, or ``x`` or
        ``grad_output`` is not a floating-point array.
    ValueError
        If they are not finite, or their shapes differ or do not fit the quantizer.

    Notes
    -----
    LSQ multiplies the scale gradient by :math:`g = 1/\sqrt{N q_{max}}`
    (:math:`N` the number of elements sharing the scale) to balance its
    magnitude against the weights'; that factor is the optimizer's choice
    and is **not** applied here.

    Examples
    --------
    >>> import numpy as np
    >>> from qlib import Quantizer
    >>> q = Quantizer(1.0, bits=3, narrow_range=True)           # codes -3..3
    >>> x = np.array([-5.0, -3.0, 0.2, 1.7, 3.0, 3.4])
    >>> gx, gs = fake_quantize_backward(x, q, np.ones_like(x))
    >>> gx
    array([0., 1., 1., 1., 1., 0.])
    >>> round(float(gs), 12)  # -3 - 3 + (0 - 0.2) + (2 - 1.7) + 3 + 3
    0.1
    """
    if not isinstance(quantizer, Quantizer):
        raise TypeError(
            f"quantizer must be a qlib.Quantizer (e.g. from qlib.calibrate), got {type(quantizer).__name__}"
        )
    job = prepare_call("fake_quantize_backward", x, quantizer)
    if not job.checked:
        as_float_array(job.x, "x", allow_int=False)
    g = as_float_array(grad_output, "grad_output", allow_int=False)
    if g.shape != job.x.shape:
        raise ValueError(f"grad_output must have the shape of x {job.x.shape}, got {g.shape}")
    lay = job.layout
    shape3 = (lay.pre, lay.n, lay.post)
    s3, z3 = broadcast3(job.s, lay), broadcast3(job.z if job.z is not None else job.dtype.type(0), lay)
    v = np.empty(shape3, dtype=job.dtype)
    with np.errstate(over="ignore"):
        divide(job.x.reshape(shape3), s3, v, job.half)
    lo, hi = job.qmin - z3, job.qmax - z3
    inside = (v >= lo) & (v <= hi)
    d = np.where(v <= lo, lo, np.where(v >= hi, hi, np.rint(v) - v))
    e = g.reshape(shape3).astype(np.float64) * d
    grad_scale = reduce3(e, lay, np.shape(quantizer.scale)).astype(job.dtype)
    grad_x = np.where(inside.reshape(g.shape), g, g.dtype.type(0))
    return grad_x, grad_scale[()] if grad_scale.ndim == 0 else grad_scale
