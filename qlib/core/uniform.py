r"""The uniform affine quantizer: ONNX ``QuantizeLinear`` / ``DequantizeLinear``.

A real number :math:`x` is stored as an integer code :math:`q` on a grid of
:math:`2^b` consecutive integers :math:`[q_{min}, q_{max}]`, with a real
*scale* :math:`s > 0` and an integer *zero point* :math:`z` on the grid:

.. math::

    q = \operatorname{clip}\bigl(\operatorname{round}(x / s) + z,\;
        q_{min},\; q_{max}\bigr),
    \qquad
    \hat x = (q - z)\, s .

- The grid is :math:`[-2^{b-1}, 2^{b-1} - 1]` for ``signed=True`` and
  :math:`[0, 2^b - 1]` for ``signed=False``, with ``bits`` :math:`b` from 2 to
  16. The codes are returned in the smallest numpy integer type that holds the
  grid: ``int8``/``uint8`` up to 8 bits, ``int16``/``uint16`` above.
- ``round`` is **round half to even** (``np.rint``: 0.5 -> 0, 1.5 -> 2,
  2.5 -> 2, -0.5 -> 0), the IEEE default, as in ONNX, PyTorch and TensorFlow.
- :math:`x / s` is a true **division** done in the precision of ``x``
  (``float32`` input: ``float32`` division with the scale rounded to
  ``float32``), as the ONNX specification defines it. Multiplying by a
  precomputed :math:`1/s`, as PyTorch's kernels do, is a second rounding and
  differs by one code on rare inputs: in ``float32``, ``x = 0.273939937`` with
  ``s = 0.00214854861`` gives 127 by division but 128 by multiplication.
- Values outside :math:`[(q_{min} - z)s, (q_{max} - z)s]` *saturate* to the
  end of the grid instead of wrapping around.
- :math:`z` is added **after** rounding; ``round(x/s + z)`` would differ on
  ties when :math:`z` is odd.
- ``x`` must be a finite floating-point array (integer input is a
  ``TypeError``: convert it first). float16 is computed in float32.
  ``bits=1`` is refused: a signed 1-bit grid would be :math:`\{-1, 0\}`, not
  sign quantization.

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

In every granularity a 0-d ``scale`` or ``zero_point`` is shared by all
elements (ONNX: "a scalar ``y_scale`` means per-tensor, ``axis`` is then
ignored"), so ``zero_point=0`` works everywhere. ``group_size`` without
``axis`` is an error (there is no default axis to group along).
:func:`qlib.calibrate` chooses ``scale`` and ``zero_point`` in the shapes
these functions expect.

The functions work block by block (256 Ki elements at a time, in the
processor's cache) and write into the output directly, so quantizing needs no
memory beyond its result and a few blocks (a non-contiguous ``x`` is first
copied), and takes little more than the time of one ``np.copy`` of ``x``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from qlib.core.grid import integer_range, smallest_int_dtype
from qlib.core.validation import as_float_array, check_axis, check_int

__all__ = ["quantize", "dequantize", "fake_quantize"]

#: Elements processed at a time: 256 Ki elements, 1 MiB of float32, small
#: enough to stay in cache, so that the passes of the kernel (divide, round,
#: add, clip, convert) cost one trip to main memory, and large enough that
#: numpy's per-call overhead is negligible.
_BLOCK = 1 << 18

#: Inner-loop length below which a per-channel scale is expanded to a flat
#: array rather than broadcast (numpy's per-inner-loop overhead dominates
#: short inner loops).
_MIN_BROADCAST = 128

_MIN_BITS, _MAX_BITS = 2, 16


# ---------------------------------------------------------------------------
# Validation helpers (private; shared with qlib.calibration)
# ---------------------------------------------------------------------------


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_bits(bits) -> int:
    return check_int(bits, "bits", _MIN_BITS, _MAX_BITS)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type the arithmetic runs in: float16 is computed in float32."""
    return np.promote_types(dtype, np.float32)


def _float_input(x, name: str = "x") -> tuple[np.ndarray, bool]:
    """Return ``(array, checked)``; ``checked`` is False when the finiteness
    check is left to the blocked kernel.

    ``as_float_array`` checks finiteness with a full-size temporary, which
    costs two thirds of an ``np.copy`` of ``x``; for large float32/float64
    input (which is non-empty and of a valid dtype by construction) the check
    is instead done block by block inside the kernel, where the block is
    already in cache. Everything else goes through ``as_float_array``.
    """
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64) and arr.size > _BLOCK:
        return _c_contiguous(arr), False
    return _c_contiguous(as_float_array(arr, name, allow_int=False)), True


def _c_contiguous(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself if C-contiguous, else a C-contiguous copy (0-d stays 0-d,
    unlike ``np.ascontiguousarray``)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _check_block_finite(xb: np.ndarray, x_full: np.ndarray, name: str) -> None:
    """Raise (through ``as_float_array``) if ``xb`` holds NaN or inf.

    ``dot(xb, xb)`` is one cheap BLAS pass that is non-finite whenever ``xb``
    holds a NaN or an infinity; it can also overflow on huge finite values,
    hence the exact re-check before raising.
    """
    flat = xb.reshape(-1)
    if not math.isfinite(float(np.dot(flat, flat))) and not np.isfinite(flat).all():
        as_float_array(x_full, name, allow_int=False)  # raises with the standard message


def _real_array(value, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real number or an array of them, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


def _as_scale(scale, dtype: np.dtype) -> np.ndarray:
    """``scale`` as an array of ``dtype``, every entry positive and finite."""
    arr = _real_array(scale, "scale")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scale must be finite, got NaN or infinite value(s)")
    if not np.all(arr > 0):
        raise ValueError(f"scale must be positive, got minimum {arr.min()!r}")
    with np.errstate(all="ignore"):
        s = arr.astype(dtype)
    if not (np.all(s > 0) and np.all(np.isfinite(s))):
        raise ValueError(
            f"scale must be positive and finite in {np.dtype(dtype).name}, the precision of "
            f"the computation; got values from {arr.min()!r} to {arr.max()!r}"
        )
    return s


def _as_zero_point(zero_point, lo: int, hi: int, grid: str) -> np.ndarray:
    """``zero_point`` as an integer array with every entry in ``[lo, hi]``."""
    arr = np.asarray(zero_point)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"zero_point must be an integer or an integer array, got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"zero_point must not be empty, got shape {arr.shape}")
    zmin, zmax = int(arr.min()), int(arr.max())
    if zmin < lo or zmax > hi:
        bad = zmin if zmin < lo else zmax
        raise ValueError(f"zero_point must lie in the {grid} [{lo}, {hi}], got {bad}")
    return arr


@dataclass(frozen=True)
class _Layout:
    """Which elements share a (scale, zero_point) pair.

    ``x`` is viewed as a C-contiguous 3-D array ``(pre, n, post)`` with ``n``
    the length of the quantization axis (``pre = post = 1`` per-tensor).
    """

    kind: str  # "tensor", "channel" or "group"
    shape: tuple[int, ...]
    axis: int | None = None
    group_size: int | None = None
    pre: int = 1
    n: int = 1
    post: int = 1

    @property
    def n_groups(self) -> int:
        return -(-self.n // self.group_size)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """Shape of a non-scalar scale/zero point."""
        if self.kind == "tensor":
            return ()
        if self.kind == "channel":
            return (self.n,)
        shape = list(self.shape)
        shape[self.axis] = self.n_groups
        return tuple(shape)

    @property
    def param_shape3(self) -> tuple[int, ...]:
        """Canonical internal shape of a non-scalar scale/zero point."""
        if self.kind == "channel":
            return (self.n,)
        return (self.pre, self.n_groups, self.post)


def _layout(shape: tuple[int, ...], axis, group_size) -> _Layout:
    gs = None if group_size is None else check_int(group_size, "group_size", 1)
    if axis is None:
        if gs is not None:
            raise ValueError(
                "group_size needs an axis: pass axis=k to quantize groups of "
                f"{gs} consecutive elements along axis k"
            )
        size = math.prod(shape)
        return _Layout("tensor", tuple(shape), pre=1, n=size, post=1)
    ax = check_axis(axis, len(shape))
    pre = math.prod(shape[:ax])
    post = math.prod(shape[ax + 1 :])
    kind = "channel" if gs is None else "group"
    return _Layout(kind, tuple(shape), ax, gs, pre, shape[ax], post)


def _param(arr: np.ndarray, layout: _Layout, name: str):
    """Return a scalar (numpy scalar) or an array of ``layout.param_shape3``."""
    if arr.ndim == 0 or (layout.kind == "tensor" and arr.shape == (1,)):
        return arr.reshape(())[()]
    expected = layout.param_shape
    if layout.kind == "tensor":
        raise ValueError(
            f"{name} must be a scalar for per-tensor quantization (axis=None), got shape "
            f"{arr.shape}; pass axis=... for one {name} per channel"
        )
    if arr.shape != expected:
        if layout.kind == "channel":
            what = f"one entry per index along axis {layout.axis}"
        else:
            what = (
                f"dimension {layout.axis} holding ceil({layout.n}/{layout.group_size}) = "
                f"{layout.n_groups} groups"
            )
        raise ValueError(
            f"{name} must be a scalar or have shape {expected} ({what}), got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr.reshape(layout.param_shape3))


def _params(layout: _Layout, scale, zero_point, dtype, zlo: int, zhi: int, grid: str):
    """Validated (scale, zero_point) in the computation dtype; zero_point is
    ``None`` when it is zero everywhere."""
    s = _param(_as_scale(scale, dtype), layout, "scale")
    zarr = _as_zero_point(zero_point, zlo, zhi, grid)
    z = _param(zarr, layout, "zero_point")
    if not np.any(zarr):
        z = None
    elif isinstance(z, np.ndarray):
        z = z.astype(dtype)
    else:
        z = np.dtype(dtype).type(z)
    return s, z


# ---------------------------------------------------------------------------
# Blocked evaluation
# ---------------------------------------------------------------------------


@contextmanager
def _fp_config(layout: _Layout):
    """Silence float overflow (a tiny scale saturates) and, when blocks are
    rows of length ``Q`` with one scale per row, shrink numpy's ufunc buffer
    to at most ``Q``: with the default 8192 the iterator copies short rows
    into buffers to join them, which halves the speed of the division."""
    Q = layout.post
    small_rows = layout.kind != "tensor" and Q < np.getbufsize() and Q >= 16 and Q <= _BLOCK < layout.n * Q
    with np.errstate(over="ignore", under="ignore"):
        if not small_rows:
            yield
            return
        old = np.setbufsize(Q // 16 * 16)
        try:
            yield
        finally:
            np.setbufsize(old)


def _expand_groups(arr: np.ndarray, g: int, n0: int, n1: int, axis: int) -> np.ndarray:
    """Entries ``n0:n1`` along ``axis`` of ``arr`` repeated ``g`` times along it."""
    g0, g1 = n0 // g, (n1 - 1) // g + 1
    index = (slice(None),) * axis
    rep = np.repeat(arr[index + (slice(g0, g1),)], g, axis=axis)
    off = n0 - g0 * g
    return rep[index + (slice(off, off + n1 - n0),)]


def _group_runs(N: int, g: int, k: int):
    """Split ``range(N)`` into blocks of at most ``max(k, g)`` rows made of whole
    groups of ``g`` rows, or of pieces of one group when ``k < g``.

    Yield ``(n0, n1, g0, ng, r)``: rows ``n0:n1`` are ``ng`` groups from group
    ``g0`` on, of ``r`` rows each.
    """
    full = N // g
    if k >= g:
        m = k // g
        for g0 in range(0, full, m):
            ng = min(m, full - g0)
            yield g0 * g, (g0 + ng) * g, g0, ng, g
        if N % g:
            yield full * g, N, full, 1, N - full * g
    else:
        for g0 in range(-(-N // g)):
            end = min((g0 + 1) * g, N)
            for n0 in range(g0 * g, end, k):
                n1 = min(n0 + k, end)
                yield n0, n1, g0, 1, n1 - n0


def _blocks(layout: _Layout, params):
    """Yield ``(a, b, shape, pblocks)``: the flat range ``[a, b)`` of a block,
    the shape to view it in, and each parameter broadcastable to that shape.

    Scalars pass through unchanged; arrays are cut (and expanded for groups)
    so that every inner loop is either long or contiguous.
    """
    block = _BLOCK
    P, N, Q = layout.pre, layout.n, layout.post
    size = P * N * Q
    arrays = [isinstance(p, np.ndarray) for p in params]
    if not any(arrays):
        for a in range(0, size, block):
            b = min(a + block, size)
            yield a, b, (b - a,), params
        return
    channel = layout.kind == "channel"
    g = layout.group_size
    R = N * Q  # elements per index of the leading dimensions
    if R <= block:
        # Whole (n, post) slabs per block.
        k = min(block // R, P)
        if channel:
            # The pattern repeats every R elements: expand it once.
            pats = [np.tile(np.repeat(p, Q), k) if isa else p for p, isa in zip(params, arrays)]
        for p0 in range(0, P, k):
            p1 = min(p0 + k, P)
            a, b = p0 * R, p1 * R
            if channel:
                yield a, b, (b - a,), [pt[: b - a] if isa else pt for pt, isa in zip(pats, arrays)]
            else:
                yield a, b, (p1 - p0, N, Q), [
                    _expand_groups(p[p0:p1], g, 0, N, 1) if isa else p
                    for p, isa in zip(params, arrays)
                ]
    elif Q <= block:
        # Within one leading index: runs of whole rows of length Q, each row
        # sharing one scale (per-channel) or one row of scales (per-group).
        k = block // Q
        for p in range(P):
            base = p * R
            if channel:
                for n0 in range(0, N, k):
                    n1 = min(n0 + k, N)
                    pbs = []
                    for prm, isa in zip(params, arrays):
                        if not isa:
                            pbs.append(prm)
                        elif Q >= _MIN_BROADCAST:
                            pbs.append(prm[n0:n1, None])
                        else:
                            pbs.append(np.repeat(prm[n0:n1], Q).reshape(n1 - n0, Q))
                    yield base + n0 * Q, base + n1 * Q, (n1 - n0, Q), pbs
            else:
                for n0, n1, g0, ng, r in _group_runs(N, g, k):
                    pbs = [prm[p, g0 : g0 + ng, None, :] if isa else prm for prm, isa in zip(params, arrays)]
                    yield base + n0 * Q, base + n1 * Q, (ng, r, Q), pbs
    else:
        # Rows longer than a block: chunks of one row.
        for p in range(P):
            for n in range(N):
                base = (p * N + n) * Q
                for q0 in range(0, Q, block):
                    q1 = min(q0 + block, Q)
                    pbs = []
                    for prm, isa in zip(params, arrays):
                        if not isa:
                            pbs.append(prm)
                        elif channel:
                            pbs.append(prm[n])
                        else:
                            pbs.append(prm[p, n // g, q0:q1])
                    yield base + q0, base + q1, (q1 - q0,), pbs


#: Round-to-integer constants: for ``|t| < 2**(p-2)``, ``t + 1.5 * 2**(p-1)``
#: (p = 24 or 53 significand bits) lands where the float spacing is exactly 1,
#: so the addition itself rounds ``t`` half to even, and the bit pattern of the
#: sum, read as an integer, is ``MAGIC_BITS + round(t)``.
_MAGIC = {
    np.dtype(np.float32): (np.float32(1.5 * 2.0**23), np.dtype(np.int32), 0x4B400000),
    np.dtype(np.float64): (np.float64(1.5 * 2.0**52), np.dtype(np.int64), 0x4338000000000000),
}


def _quantize_into(xf, out, layout, s, z, qmin, qmax, checked, x_full, dtype):
    """Quantize flat ``xf`` into flat integer ``out``.

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
    ``2**bits``. Other float types use ``np.rint`` and a float clip.
    """
    dtype = np.dtype(dtype)
    tmp = np.empty(min(_BLOCK, xf.size), dtype=dtype)
    magic = _MAGIC.get(dtype)
    if magic is None:
        lo, hi = dtype.type(qmin), dtype.type(qmax)
        with _fp_config(layout):
            for a, b, shape, (sb, zb) in _blocks(layout, (s, z)):
                xb = xf[a:b].reshape(shape)
                if not checked:
                    _check_block_finite(xb, x_full, "x")
                t = tmp[: b - a].reshape(shape)
                np.divide(xb, sb, out=t)
                np.rint(t, out=t)
                if zb is not None:
                    np.add(t, zb, out=t)
                t.clip(lo, hi, out=t)
                np.copyto(out[a:b].reshape(shape), t, casting="unsafe")
        return
    m, itype, m_bits = magic
    if z is None or isinstance(z, np.ndarray):
        z_odd, shift, z_arr = 0, m, z
    else:
        zi = int(z)
        z_odd = zi & 1
        shift, z_arr = dtype.type(m + (zi - z_odd)), None
    ilo, ihi = itype.type(m_bits + qmin - z_odd), itype.type(m_bits + qmax - z_odd)
    with _fp_config(layout):
        for a, b, shape, (sb, zb) in _blocks(layout, (s, z_arr)):
            xb = xf[a:b].reshape(shape)
            if not checked:
                _check_block_finite(xb, x_full, "x")
            t = tmp[: b - a].reshape(shape)
            np.divide(xb, sb, out=t)
            np.add(t, shift, out=t)
            if zb is not None:
                np.add(t, zb, out=t)
            ti = t.view(itype)
            ti.clip(ilo, ihi, out=ti)
            ob = out[a:b].reshape(shape)
            np.copyto(ob, ti, casting="unsafe")
            if z_odd:
                np.add(ob, 1, out=ob)


def _fake_quantize_into(xf, out, layout, s, z, qmin, qmax, checked, x_full, dtype):
    """Quantize and dequantize flat ``xf`` into flat float ``out``, in place."""
    lo, hi = np.dtype(dtype).type(qmin), np.dtype(dtype).type(qmax)
    with _fp_config(layout):
        for a, b, shape, (sb, zb) in _blocks(layout, (s, z)):
            xb = xf[a:b].reshape(shape)
            if not checked:
                _check_block_finite(xb, x_full, "x")
            t = out[a:b].reshape(shape)
            np.divide(xb, sb, out=t)
            np.rint(t, out=t)
            if zb is not None:
                np.add(t, zb, out=t)
                t.clip(lo, hi, out=t)
                np.subtract(t, zb, out=t)
            else:
                t.clip(lo, hi, out=t)
            np.multiply(t, sb, out=t)


def _dequantize_into(qf, out, layout, s, z):
    """Dequantize flat integer ``qf`` into flat float ``out``, in place.

    Codes of up to 16 bits convert to float32 exactly and ``q - z`` (at most
    2**17 in magnitude) is exact in float32, so this equals ONNX's int32
    subtraction followed by a conversion. Wider codes are subtracted in
    float64 (exact up to 2**52) and then rounded to float32; ``z`` is then
    float64.
    """
    wide = qf.dtype.itemsize > 2
    with _fp_config(layout):
        for a, b, shape, (sb, zb) in _blocks(layout, (s, z)):
            qb = qf[a:b].reshape(shape)
            t = out[a:b].reshape(shape)
            if wide:
                d = qb.astype(np.float64)
                if zb is not None:
                    d -= zb
                np.copyto(t, d, casting="same_kind")
            else:
                np.copyto(t, qb, casting="unsafe")
                if zb is not None:
                    np.subtract(t, zb, out=t)
            np.multiply(t, sb, out=t)


def _prepare(x, scale, zero_point, bits, signed, axis, group_size):
    xa, checked = _float_input(x, "x")
    b = _check_bits(bits)
    sg = _check_bool(signed, "signed")
    layout = _layout(xa.shape, axis, group_size)
    qmin, qmax = integer_range(b, sg)
    dtype = _compute_dtype(xa.dtype)
    grid = f"{b}-bit {'signed' if sg else 'unsigned'} grid"
    s, z = _params(layout, scale, zero_point, dtype, qmin, qmax, grid)
    return xa, checked, layout, qmin, qmax, dtype, s, z


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def quantize(x, scale, zero_point=0, *, bits=8, signed=True, axis=None, group_size=None):
    r"""Quantize ``x`` to integer codes, as ONNX ``QuantizeLinear``.

    :math:`q = \operatorname{clip}(\operatorname{round}(x / s) + z, q_{min}, q_{max})`
    with round half to even and the division done in the precision of ``x``.

    Parameters
    ----------
    x : array_like of float
        The values to quantize: a finite, non-empty floating-point array.
        float32 and float64 are computed in their own precision, float16 in
        float32. Integer input is refused (convert it first).
    scale : float or array_like of float
        The step :math:`s > 0` between consecutive codes; rounded to the
        precision of the computation (float32 for float32 ``x``), where it
        must still be positive and finite. A scalar for every granularity, or
        per-channel an array of shape ``(x.shape[axis],)``, or per-group the
        shape of ``x`` with ``x.shape[axis]`` replaced by
        ``ceil(x.shape[axis] / group_size)``.
    zero_point : int or array_like of int, default 0
        The code :math:`z` that represents the real 0; integers on the grid.
        A scalar, or an array of the same shape as a non-scalar ``scale``.
    bits : int, default 8
        Width of the integer grid, from 2 to 16.
    signed : bool, default True
        Grid :math:`[-2^{b-1}, 2^{b-1}-1]` if true, :math:`[0, 2^b - 1]` if false.
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
        is not an integer, or ``signed`` is not a bool.
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
    """
    xa, checked, layout, qmin, qmax, dtype, s, z = _prepare(
        x, scale, zero_point, bits, signed, axis, group_size
    )
    out = np.empty(xa.shape, dtype=smallest_int_dtype(qmin, qmax))
    _quantize_into(xa.reshape(-1), out.reshape(-1), layout, s, z, qmin, qmax, checked, xa, dtype)
    return out


def dequantize(q, scale, zero_point=0, *, axis=None, group_size=None):
    r"""Map integer codes back to reals, as ONNX ``DequantizeLinear``: :math:`(q - z)\,s`.

    Parameters
    ----------
    q : array_like of int
        The codes, a non-empty integer array (typically from :func:`quantize`).
    scale : float or array_like of float
        The scale(s) used to quantize, in the shapes :func:`quantize` takes;
        rounded to float32, where they must be positive and finite.
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
        :math:`q - z` is formed exactly (not in ``q``'s dtype, where an
        ``int8`` subtraction would overflow), then multiplied by the float32
        scale: one rounding, as in ONNX.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array, ``scale`` is not real or
        ``zero_point`` is not an integer.
    ValueError
        If ``q`` is empty, ``scale`` is not positive and finite,
        ``zero_point`` lies outside the range of ``q``'s dtype, ``axis`` or
        ``group_size`` is invalid, or the shapes do not match.

    Examples
    --------
    >>> import numpy as np
    >>> dequantize(np.array([-128, 0, 127], dtype=np.int8), 0.5, -128)
    array([  0. ,  64. , 127.5], dtype=float32)
    >>> dequantize(np.array([[1, -2], [3, 4]], dtype=np.int8), np.array([0.5, 2.0]), axis=1)
    array([[ 0.5, -4. ],
           [ 1.5,  8. ]], dtype=float32)
    """
    qa = np.asarray(q)
    if qa.dtype == np.bool_ or not np.issubdtype(qa.dtype, np.integer):
        raise TypeError(
            f"q must be an integer array of codes (e.g. from quantize), got dtype {qa.dtype}"
        )
    if qa.size == 0:
        raise ValueError(f"q must not be empty, got shape {qa.shape}")
    qa = _c_contiguous(qa)
    layout = _layout(qa.shape, axis, group_size)
    info = np.iinfo(qa.dtype)
    s, z = _params(
        layout, scale, zero_point, np.float32, int(info.min), int(info.max),
        f"range of q's dtype {qa.dtype}",
    )
    if z is not None and qa.dtype.itemsize > 2:
        z = _param(np.asarray(zero_point).astype(np.float64), layout, "zero_point")
    out = np.empty(qa.shape, dtype=np.float32)
    _dequantize_into(qa.reshape(-1), out.reshape(-1), layout, s, z)
    return out


def fake_quantize(x, scale, zero_point=0, *, bits=8, signed=True, axis=None, group_size=None):
    r"""Quantize then dequantize: the value of ``x`` that the codes represent.

    Equal to ``dequantize(quantize(x, ...), ...)`` computed in the precision
    of ``x`` (without the intermediate integer array):
    :math:`\hat x = (\operatorname{clip}(\operatorname{round}(x/s) + z, q_{min}, q_{max}) - z)\, s`.

    Parameters
    ----------
    x, scale, zero_point, bits, signed, axis, group_size
        As in :func:`quantize`.

    Returns
    -------
    numpy.ndarray
        The reconstruction, of the shape of ``x``, in the precision the
        arithmetic ran in: float32 for float16 or float32 ``x``, float64 for
        float64 ``x`` (so ``fake_quantize`` of a float32 tensor equals
        ``dequantize(quantize(...))`` bit for bit).

    Raises
    ------
    TypeError, ValueError
        As :func:`quantize`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([-1.0, 0.12, 0.26, 5.0], dtype=np.float32)
    >>> fake_quantize(x, 0.25, bits=4)
    array([-1.  ,  0.  ,  0.25,  1.75], dtype=float32)
    """
    xa, checked, layout, qmin, qmax, dtype, s, z = _prepare(
        x, scale, zero_point, bits, signed, axis, group_size
    )
    out = np.empty(xa.shape, dtype=dtype)
    _fake_quantize_into(xa.reshape(-1), out.reshape(-1), layout, s, z, qmin, qmax, checked, xa, dtype)
    return out
