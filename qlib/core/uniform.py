r"""The uniform affine quantizer: ONNX ``QuantizeLinear`` / ``DequantizeLinear``.

A real number :math:`x` is stored as an integer code :math:`q` on a grid of
consecutive integers :math:`[q_{min}, q_{max}]`, with a real *scale*
:math:`s > 0` and an integer *zero point* :math:`z` on the grid:

.. math::

    q = \operatorname{clip}\bigl(\operatorname{round}(x / s) + z,\;
        q_{min},\; q_{max}\bigr),
    \qquad
    \hat x = (q - z)\, s .

- The grid is :math:`[-2^{b-1}, 2^{b-1} - 1]` for ``signed=True`` and
  :math:`[0, 2^b - 1]` for ``signed=False``, with ``bits`` :math:`b` from 2 to
  16; ``narrow_range=True`` drops the lowest code (:math:`[-(2^{b-1}-1),
  2^{b-1}-1]`, or :math:`[1, 2^b - 1]` unsigned), see
  :func:`qlib.integer_range`. The codes are returned in the smallest numpy
  integer type that holds the grid: ``int8``/``uint8`` up to 8 bits,
  ``int16``/``uint16`` above.
- ``round`` is **round half to even** (``np.rint``: 0.5 -> 0, 1.5 -> 2,
  2.5 -> 2, -0.5 -> 0), the IEEE default, as in ONNX, PyTorch and TensorFlow.
- :math:`x / s` is a true **division** done in the precision of ``x``, as the
  ONNX specification defines it: float32 input divides in float32 with the
  scale rounded to float32, float64 in float64, and float16 in float16 (the
  scale rounded to float16, the quotient rounded to float16 before it is
  rounded to an integer, as ONNX's ``x / y_scale``). Multiplying by a
  precomputed :math:`1/s`, as PyTorch's kernels do, is a second rounding and
  differs by one code on rare inputs: in ``float32``, ``x = 0.273939937`` with
  ``s = 0.00214854861`` gives 127 by division but 128 by multiplication.
- Values outside :math:`[(q_{min} - z)s, (q_{max} - z)s]` *saturate* to the
  end of the grid instead of wrapping around.
- :math:`z` is added **after** rounding; ``round(x/s + z)`` would differ on
  ties when :math:`z` is odd.
- ``x`` must be a finite floating-point array (integer input is a
  ``TypeError``: convert it first).

Three granularities share these formulas and differ only in which elements
share one :math:`(s, z)` pair:

per-tensor (``axis=None``)
    one scale and zero point for the whole array (scalars);
per-channel (``axis=k``)
    one pair per index along axis ``k``: ``scale`` has shape
    ``(x.shape[k],)``. For a weight matrix ``W`` of shape ``(out, in)``,
    ``axis=0`` gives one scale per output channel (row);
per-group, or block (``axis=k, group_size=g``)
    one pair per run of ``g`` consecutive elements along axis ``k``
    (ONNX blocked quantization, ``block_size=g``): ``scale`` has the shape of
    ``x`` except that dimension ``k`` becomes :math:`\lceil n/g \rceil`; the
    last group is shorter when ``g`` does not divide :math:`n`. Element
    ``x[..., i, ...]`` uses ``scale[..., i // g, ...]``.

In every granularity a ``scale`` or ``zero_point`` with a single element
(shape ``()`` or ``(1,)``) is shared by all elements (ONNX: "a scalar
``y_scale`` means per-tensor, ``axis`` is then ignored"), so ``zero_point=0``
works everywhere. ``group_size`` without ``axis`` is an error (there is no
default axis to group along).

**Two ways to call.** Either the ONNX arguments, ``quantize(x, scale,
zero_point, bits=..., signed=..., narrow_range=..., axis=...,
group_size=...)``, which by default use the *full* grid (``bits=8`` alone is
:math:`[-128, 127]`), or a :class:`qlib.Quantizer` in place of ``scale``,
``quantize(x, quantizer)``, which carries its grid and granularity: this is
what :func:`qlib.calibrate` returns, and the only way to be sure the codes use
the grid the scale was chosen for (a symmetric calibration's narrow grid, for
instance). Passing a quantizer together with any of the other arguments is a
``TypeError``.

The functions work block by block (256 Ki elements at a time, in the
processor's cache) and write into the output directly, so quantizing needs no
memory beyond its result and a few blocks (a non-contiguous ``x`` is first
copied), and takes little more than the time of one ``np.copy`` of ``x``.
"""

from __future__ import annotations

import re

import numpy as np

from qlib.core.fake_quant import dequantize_codes, fake_quantize_into, prepare_call, quantize_codes
from qlib.core.grid import Default, grid_arguments, integer_range, smallest_int_dtype
from qlib.core.layout import as_scale, as_zero_point, c_contiguous, make_layout, param
from qlib.core.validation import as_int_array

__all__ = ["quantize", "dequantize", "fake_quantize"]


def quantize(x, scale, zero_point=Default(0), *, bits=Default(8), signed=Default(True),
             narrow_range=Default(False), axis=Default(None), group_size=Default(None)):
    r"""Quantize ``x`` to integer codes, as ONNX ``QuantizeLinear``.

    :math:`q = \operatorname{clip}(\operatorname{round}(x / s) + z, q_{min}, q_{max})`
    with round half to even and the division done in the precision of ``x``.

    Parameters
    ----------
    x : array_like of float
        The values to quantize: a finite, non-empty floating-point array.
        float16, float32 and float64 are divided in their own precision.
        Integer input is refused (convert it first).
    scale : float, array_like of float, or Quantizer
        The step :math:`s > 0` between consecutive codes; rounded to the
        precision of ``x`` (float32 for float32 ``x``), where it must still be
        positive and finite. A scalar for every granularity, or per-channel an
        array of shape ``(x.shape[axis],)``, or per-group the shape of ``x``
        with ``x.shape[axis]`` replaced by ``ceil(x.shape[axis] / group_size)``.
        Or a :class:`~qlib.Quantizer`, which then supplies every other argument.
    zero_point : int or array_like of int, default 0
        The code :math:`z` that represents the real 0; integers on the grid.
        A scalar, or an array of the same shape as a non-scalar ``scale``.
    bits : int, default 8
        Width of the integer grid, from 2 to 16.
    signed : bool, default True
        Grid :math:`[-2^{b-1}, 2^{b-1}-1]` if true, :math:`[0, 2^b - 1]` if false.
    narrow_range : bool, default False
        Drop the lowest code: :math:`[-(2^{b-1}-1), 2^{b-1}-1]` or :math:`[1, 2^b - 1]`.
    axis : int, optional
        The channel axis for per-channel or per-group quantization;
        ``None`` (default) is per-tensor. Negative values count from the end.
    group_size : int, optional
        With ``axis``: the number of consecutive elements along ``axis`` that
        share a scale (the last group may be shorter). Requires ``axis``.

    Returns
    -------
    numpy.ndarray
        The codes, of the shape of ``x``, in the smallest integer dtype holding
        the grid: ``int8``/``uint8`` for ``bits <= 8``, else ``int16``/``uint16``.

    Raises
    ------
    TypeError
        If ``x`` or ``scale`` is not real, ``x`` is an integer array,
        ``zero_point`` is not an integer, ``bits``, ``axis`` or ``group_size``
        is not an integer, ``signed`` or ``narrow_range`` is not a bool, or a
        Quantizer comes with other grid arguments.
    ValueError
        If ``x`` is empty or holds NaN or inf; ``scale`` is not positive and
        finite; ``zero_point`` is off the grid; ``bits`` is outside [2, 16];
        ``axis`` is out of range; ``group_size`` is not positive or is given
        without ``axis``; or ``scale``/``zero_point`` has the wrong shape.

    Notes
    -----
    Dividing is the ONNX definition. PyTorch multiplies by the reciprocal of
    the scale, a second rounding that moves rare values across a rounding
    boundary: with float32 ``s = 0.00214854861`` and ``x = 0.273939937``,
    ``x / s`` rounds to 127 but ``x * (1 / s)`` to 128.

    Examples
    --------
    Half-way cases round to the even code; values beyond the grid saturate:

    >>> import numpy as np
    >>> x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0], dtype=np.float32)
    >>> quantize(x, 1.0)
    array([   0,    2,    2,    0,   -2,  127, -128], dtype=int8)
    >>> quantize(x, 1.0, narrow_range=True)[-1]
    np.int8(-127)

    An unsigned 4-bit grid [0, 15] with zero point 8 stores [-0.8, 0.7]:

    >>> quantize(np.array([-1.0, -0.2, 0.0, 0.26, 1.0]), 0.1, 8, bits=4, signed=False)
    array([ 0,  6,  8, 11, 15], dtype=uint8)

    One scale per row (``axis=0``), then per groups of 2 along ``axis=1``:

    >>> w = np.array([[0.1, -0.2, 0.3], [10.0, -20.0, 30.0]], dtype=np.float32)
    >>> quantize(w, np.array([0.1, 10.0]), axis=0)
    array([[ 1, -2,  3],
           [ 1, -2,  3]], dtype=int8)
    >>> quantize(w, np.array([[0.1, 0.1], [10.0, 1.0]]), axis=1, group_size=2)
    array([[ 1, -2,  3],
           [ 1, -2, 30]], dtype=int8)

    With a :class:`~qlib.Quantizer` (here a symmetric 4-bit calibration, whose
    grid is the narrow [-7, 7]):

    >>> from qlib import calibrate
    >>> quantize(w, calibrate(w, bits=4, symmetric=True, axis=0))
    array([[ 2, -5,  7],
           [ 2, -5,  7]], dtype=int8)
    """
    job = prepare_call("quantize", x, scale, zero_point=zero_point, bits=bits, signed=signed,
                       narrow_range=narrow_range, axis=axis, group_size=group_size)
    return quantize_codes(job, np.empty(job.x.shape, dtype=smallest_int_dtype(job.qmin, job.qmax)))


def _codes(q) -> tuple[np.ndarray, int, int]:
    """``q`` as an integer array, with the range of its original dtype (the
    ``ml_dtypes`` types ``int4``, ``uint4``, ``int2``, ``uint2`` are widened
    to 8 bits but keep their own range)."""
    name = np.asarray(q).dtype.name
    try:
        qa = as_int_array(q, "q")
    except TypeError:
        raise TypeError(f"q must be an integer array of codes (e.g. from quantize), got dtype {name}") from None
    if qa.size == 0:
        raise ValueError(f"q must not be empty, got shape {qa.shape}")
    narrow = re.fullmatch(r"(u?)int([24])", name)
    if narrow:
        lo, hi = integer_range(int(narrow.group(2)), signed=not narrow.group(1))
    else:
        info = np.iinfo(qa.dtype)
        lo, hi = int(info.min), int(info.max)
    return c_contiguous(qa), lo, hi


def dequantize(q, scale, zero_point=Default(0), *, axis=Default(None), group_size=Default(None)):
    r"""Map integer codes back to reals, as ONNX ``DequantizeLinear``: :math:`(q - z)\,s`.

    Parameters
    ----------
    q : array_like of int
        The codes, a non-empty integer array (typically from :func:`quantize`);
        ``ml_dtypes`` arrays of ``int4``, ``uint4``, ``int2``, ``uint2`` (as
        ONNX's test data hold them) are accepted.
    scale : float, array_like of float, or Quantizer
        The scale(s) used to quantize, in the shapes :func:`quantize` takes;
        rounded to float32, where they must be positive and finite. Or the
        :class:`~qlib.Quantizer` used to quantize (alone).
    zero_point : int or array_like of int, default 0
        The zero point(s) used to quantize, in the range of ``q``'s dtype.
    axis : int, optional
        The channel axis (per-channel or per-group); ``None`` is per-tensor.
    group_size : int, optional
        The group length along ``axis`` for per-group scales.

    Returns
    -------
    numpy.ndarray of float32
        :math:`(q - z) s` with the shape of ``q``. The difference
        :math:`q - z` is always formed exactly, never in ``q``'s dtype (where
        an ``int8`` subtraction would overflow). For codes of up to 16 bits it
        is exact in float32 and the product with the float32 scale is the one
        rounding, as in ONNX. For wider codes (``int32``, ``int64``, ...) it
        is formed in int64, converted to float64 (exact while
        :math:`|q - z| \le 2^{53}`), multiplied by the scale in float64
        (exact while :math:`|q - z| < 2^{29}`, so that the final rounding to
        float32 is then the only one) and rounded to float32.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array, ``scale`` is not real or
        ``zero_point`` is not an integer, or a Quantizer comes with other
        arguments.
    ValueError
        If ``q`` is empty, ``scale`` is not positive and finite,
        ``zero_point`` lies outside the range of ``q``'s dtype, :math:`q - z`
        could leave the int64 range, ``axis`` or ``group_size`` is invalid,
        or the shapes do not match.

    Examples
    --------
    >>> import numpy as np
    >>> dequantize(np.array([-128, 0, 127], dtype=np.int8), 0.5, -128)
    array([  0. ,  64. , 127.5], dtype=float32)
    >>> dequantize(np.array([[1, -2], [3, 4]], dtype=np.int8), np.array([0.5, 2.0]), axis=1)
    array([[ 0.5, -4. ],
           [ 1.5,  8. ]], dtype=float32)
    >>> big = np.array([2**62 + 3], dtype=np.int64)  # q - z = 3, exactly
    >>> dequantize(big, 1.0, 2**62)
    array([3.], dtype=float32)
    """
    g = grid_arguments("dequantize", scale, zero_point=zero_point, axis=axis, group_size=group_size)
    qa, lo, hi = _codes(q)
    layout = make_layout(qa.shape, g["axis"], g["group_size"])
    wide = qa.dtype.itemsize > 2
    zarr = as_zero_point(g["zero_point"], lo, hi, f"range of q's dtype {np.asarray(q).dtype}")
    s = param(as_scale(g["scale"], np.float32).astype(np.float64 if wide else np.float32), layout, "scale")
    z = None
    if np.any(zarr):
        z = param(zarr.astype(np.int64 if wide else np.float32), layout, "zero_point")
    if z is not None and wide:
        dmin, dmax = int(qa.min()) - int(zarr.max()), int(qa.max()) - int(zarr.min())
        if dmin < -(2**63) or dmax > 2**63 - 1:
            raise ValueError(
                f"q - zero_point must fit in int64 to be formed exactly: the codes span "
                f"[{qa.min()}, {qa.max()}] and the zero points [{zarr.min()}, {zarr.max()}]"
            )
    return dequantize_codes(qa, np.empty(qa.shape, dtype=np.float32), layout, s, z)


def fake_quantize(x, scale, zero_point=Default(0), *, bits=Default(8), signed=Default(True),
                  narrow_range=Default(False), axis=Default(None), group_size=Default(None)):
    r"""Quantize then dequantize: the value of ``x`` that the codes represent.

    :math:`\hat x = (\operatorname{clip}(\operatorname{round}(x/s) + z, q_{min}, q_{max}) - z)\, s`,
    computed in the precision of ``x`` without the intermediate integer
    array. This is the forward pass of quantization-aware training; its
    backward pass is :func:`qlib.fake_quantize_backward`.

    Parameters
    ----------
    x, scale, zero_point, bits, signed, narrow_range, axis, group_size
        As in :func:`quantize` (``scale`` may be a :class:`~qlib.Quantizer`).

    Returns
    -------
    numpy.ndarray
        The reconstruction, of the shape and floating dtype of ``x``. For
        float32 ``x`` it equals ``dequantize(quantize(x, ...), ...)`` bit for
        bit, signs of zeros included (a small negative ``x`` gives ``0.0``,
        not ``-0.0``). For float16 ``x`` it is :math:`(q - z)s` computed in
        float32 with the float16 scale, then rounded to float16.

    Raises
    ------
    TypeError, ValueError
        As :func:`quantize`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([-1.0, -0.1, 0.12, 0.26, 5.0], dtype=np.float32)
    >>> fake_quantize(x, 0.25, bits=4)
    array([-1.  ,  0.  ,  0.  ,  0.25,  1.75], dtype=float32)
    """
    job = prepare_call("fake_quantize", x, scale, zero_point=zero_point, bits=bits, signed=signed,
                       narrow_range=narrow_range, axis=axis, group_size=group_size)
    return fake_quantize_into(job, np.empty(job.x.shape, dtype=job.float_dtype))
