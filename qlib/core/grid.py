r"""Integer grids, and :class:`~qlib.Quantizer`: a grid that travels with its scale.

:func:`~qlib.integer_range` gives the codes a ``bits``-wide integer holds, full or
*narrow* (restricted: the most negative code dropped, so that the grid is
symmetric around 0); :func:`~qlib.smallest_int_dtype` the numpy type that stores them.

A :class:`~qlib.Quantizer` holds everything :func:`qlib.quantize` needs besides the
data: scale, zero point, grid (``bits``, ``signed``, ``narrow_range``) and
granularity (``axis``, ``group_size``). :func:`qlib.calibrate` returns one,
and ``quantize(x, quantizer)`` then cannot use another grid than the one the
scale was chosen for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlib.core.layout import as_scale, as_zero_point
from qlib.core.validation import check_axis, check_bits, check_bool, check_int

__all__ = ["integer_range", "smallest_int_dtype", "Quantizer"]


def integer_range(bits: int, signed: bool = True, narrow_range: bool = False) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` of a ``bits``-wide integer grid.

    Signed (two's complement): ``[-2**(bits-1), 2**(bits-1) - 1]``; unsigned:
    ``[0, 2**bits - 1]``. ``narrow_range=True`` drops the lowest code, as
    TensorFlow's ``narrow_range``: ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``
    signed (symmetric around 0), ``[1, 2**bits - 1]`` unsigned (symmetric
    around ``2**(bits-1)``).

    Examples
    --------
    >>> integer_range(8)
    (-128, 127)
    >>> integer_range(4, signed=False)
    (0, 15)
    >>> integer_range(8, narrow_range=True), integer_range(2, narrow_range=True)
    ((-127, 127), (-1, 1))
    """
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return (lo + 1, hi) if narrow_range else (lo, hi)


def smallest_int_dtype(qmin: int, qmax: int) -> np.dtype:
    """Return the smallest numpy integer dtype holding every value of ``[qmin, qmax]``.

    Examples
    --------
    >>> smallest_int_dtype(-8, 7)
    dtype('int8')
    >>> smallest_int_dtype(0, 255)
    dtype('uint8')
    >>> smallest_int_dtype(-32768, 32767)
    dtype('int16')
    """
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if qmin >= 0 else ()
    candidates += (np.int8, np.int16, np.int32, np.int64)
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dt)
    raise ValueError(f"no numpy integer dtype holds [{qmin}, {qmax}]")


def grid_name(bits: int, signed: bool, narrow_range: bool) -> str:
    """``"4-bit signed narrow grid"``: the grid, for error messages."""
    return f"{bits}-bit {'signed' if signed else 'unsigned'}{' narrow' if narrow_range else ''} grid"


def _frozen(arr: np.ndarray, dtype):
    """A read-only copy of ``arr`` in ``dtype``, or a numpy scalar when 0-d."""
    out = np.array(arr, dtype=dtype)
    if out.ndim == 0:
        return out[()]
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False, repr=False, init=False)
class Quantizer(tuple):
    r"""A uniform affine quantizer: scale, zero point, integer grid and granularity.

    :math:`q = \operatorname{clip}(\operatorname{round}(x/s) + z, q_{min}, q_{max})`,
    :math:`\hat x = (q - z)s`, with the grid :math:`[q_{min}, q_{max}]` of
    :func:`integer_range` ``(bits, signed, narrow_range)`` and the
    granularity of :func:`qlib.quantize` (``axis``, ``group_size``).
    :func:`qlib.calibrate` returns one; ``quantize(x, quantizer)``,
    ``dequantize(q, quantizer)`` and ``fake_quantize(x, quantizer)`` use it.

    Parameters
    ----------
    scale : float or array_like of float
        Positive, finite in float32; stored as ``numpy.float32`` (a scalar or
        a read-only array). A scalar (or one-element array) is shared by all
        elements; per channel a 1-D array, per group an array of the
        tensor's number of dimensions.
    zero_point : int or array_like of int, default 0
        On the grid; a scalar or an array of the shape of ``scale``. Stored
        in the smallest integer dtype of the grid (``int8`` for 8-bit signed).
    bits : int, default 8
        2 to 16.
    signed : bool, default True
    narrow_range : bool, default False
        Drop the lowest code (``[-127, 127]`` for int8, ``[1, 255]`` for uint8).
    axis : int, optional
        Channel axis; ``None`` is per-tensor.
    group_size : int, optional
        With ``axis``: elements per group along it.

    Attributes
    ----------
    qmin, qmax, levels : int
        The ends of the grid and its number of codes.
    granularity : str
        ``"tensor"``, ``"channel"`` or ``"group"``.

    Raises
    ------
    TypeError, ValueError
        On a scale that is not positive and finite, a zero point off the grid
        or not an integer, invalid ``bits``/``signed``/``narrow_range``/
        ``axis``/``group_size``, or shapes that contradict the granularity
        (a non-scalar scale per tensor, a 2-D scale per channel, a zero point
        of another shape than the scale).

    Notes
    -----
    A ``Quantizer`` is a frozen dataclass and also a pair: it unpacks, indexes
    and passes ``isinstance(q, tuple)`` as the ``(scale, zero_point)`` that
    :func:`qlib.calibrate` used to return, so ``s, z = calibrate(x)`` keeps
    working. Equality is identity (the fields hold arrays).

    Examples
    --------
    >>> import numpy as np
    >>> q = Quantizer(0.5, bits=4, narrow_range=True)
    >>> q
    Quantizer(4-bit signed narrow [-7, 7], per-tensor, scale 0.5, zero point 0)
    >>> q.quantize(np.array([-9.0, -1.2, 0.3, 9.0]))
    array([-7, -2,  1,  7], dtype=int8)
    >>> s, z = q
    >>> s, z, q.levels, q.granularity
    (np.float32(0.5), np.int8(0), 15, 'tensor')
    >>> Quantizer(np.array([0.5, 0.25]), np.array([3, -1]), axis=0)
    Quantizer(8-bit signed [-128, 127], per-channel axis=0, 2 scales in [0.25, 0.5], zero points in [-1, 3])
    """

    scale: np.floating | np.ndarray
    zero_point: np.integer | np.ndarray
    bits: int
    signed: bool
    narrow_range: bool
    axis: int | None
    group_size: int | None

    def __new__(cls, scale, zero_point=0, bits=8, signed=True, narrow_range=False, axis=None, group_size=None):
        b = check_bits(bits)
        signed = check_bool(signed, "signed")
        narrow = check_bool(narrow_range, "narrow_range")
        qmin, qmax = integer_range(b, signed, narrow)
        s = as_scale(scale, np.float32)
        z = as_zero_point(zero_point, qmin, qmax, grid_name(b, signed, narrow))
        ax = None if axis is None else check_int(axis, "axis")
        gs = None if group_size is None else check_int(group_size, "group_size", 1)
        if ax is None and gs is not None:
            raise ValueError(f"group_size needs an axis: pass axis=k to quantize groups of {gs} along axis k")
        if ax is None or s.size == 1:
            for name, arr in (("scale", s), ("zero_point", z)):
                if ax is None and arr.size != 1:
                    raise ValueError(
                        f"{name} must be a scalar for a per-tensor quantizer (axis=None), got shape "
                        f"{arr.shape}; pass axis=... for one {name} per channel"
                    )
            s, z = s.reshape(()), z.reshape(()) if z.size == 1 else z
        if s.ndim and z.size != 1 and z.shape != s.shape:
            raise ValueError(f"zero_point must be a scalar or have the shape of scale {s.shape}, got {z.shape}")
        if s.ndim == 0 and z.size != 1:
            raise ValueError(f"zero_point must be a scalar when scale is, got shape {z.shape}")
        if s.ndim > 1 and gs is None:
            raise ValueError(f"scale must be a scalar or 1-D per channel (axis={ax}), got shape {s.shape}")
        if s.ndim and gs is not None:
            check_axis(ax, s.ndim)  # per group, scale has the tensor's dimensions
        self = super().__new__(cls, (_frozen(s, np.float32), _frozen(z, smallest_int_dtype(qmin, qmax))))
        values = dict(scale=self[0], zero_point=self[1], bits=b, signed=signed, narrow_range=narrow,
                      axis=ax, group_size=gs)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        return self

    def __reduce__(self):
        return (type(self), (self.scale, self.zero_point, self.bits, self.signed, self.narrow_range,
                             self.axis, self.group_size))

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    @property
    def qmin(self) -> int:
        return integer_range(self.bits, self.signed, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        return integer_range(self.bits, self.signed, self.narrow_range)[1]

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    @property
    def granularity(self) -> str:
        if self.axis is None:
            return "tensor"
        return "channel" if self.group_size is None else "group"

    def quantize(self, x) -> np.ndarray:
        """``qlib.quantize(x, self)``: the integer codes of ``x``."""
        from qlib.core.uniform import quantize

        return quantize(x, self)

    def dequantize(self, q) -> np.ndarray:
        """``qlib.dequantize(q, self)``: the float32 values of the codes ``q``."""
        from qlib.core.uniform import dequantize

        return dequantize(q, self)

    def fake_quantize(self, x) -> np.ndarray:
        """``qlib.fake_quantize(x, self)``: the values the codes of ``x`` represent."""
        from qlib.core.uniform import fake_quantize

        return fake_quantize(x, self)

    def __repr__(self) -> str:
        where = {"tensor": "per-tensor", "channel": f"per-channel axis={self.axis}",
                 "group": f"per-group axis={self.axis} group_size={self.group_size}"}[self.granularity]
        s = np.asarray(self.scale)
        scales = f"scale {s[()]!s}" if s.ndim == 0 else f"{s.size} scales in [{s.min():.4g}, {s.max():.4g}]"
        z = np.asarray(self.zero_point)
        zmin, zmax = int(z.min()), int(z.max())
        zs = f"zero point {zmin}" if zmin == zmax else f"zero points in [{zmin}, {zmax}]"
        grid = grid_name(self.bits, self.signed, self.narrow_range).removesuffix(" grid")
        return f"Quantizer({grid} [{self.qmin}, {self.qmax}], {where}, {scales}, {zs})"


class Default:
    """A keyword's default value, told apart from the same value passed explicitly.

    The functions that take either explicit grid arguments or a
    :class:`Quantizer` use it to refuse both at once; its repr is the value's,
    so signatures read as usual (``zero_point=0``).
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def grid_arguments(func: str, scale, **given) -> dict:
    """The grid of a call: from a :class:`Quantizer` passed as ``scale``, or
    from ``scale`` and the explicit arguments ``given`` (defaults resolved).

    Returns a dict with ``scale`` and the keys of ``given`` (with a
    Quantizer: all its fields).
    """
    if isinstance(scale, Quantizer):
        passed = [name for name, value in given.items() if not isinstance(value, Default)]
        if passed:
            raise TypeError(
                f"{func}() got a Quantizer and {', '.join(passed)}: the quantizer carries its grid "
                f"(scale, zero point, bits, signed, narrow_range, axis, group_size); pass it alone"
            )
        fields = ("scale", "zero_point", "bits", "signed", "narrow_range", "axis", "group_size")
        return {name: getattr(scale, name) for name in fields}
    out = {name: value.value if isinstance(value, Default) else value for name, value in given.items()}
    return {"scale": scale, **out}
