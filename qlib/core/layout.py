"""Which elements share a scale, and the blocked iteration of qlib's kernels.

Package-internal machinery of :mod:`qlib.core.uniform`, :mod:`qlib.core.fake_quant`,
:mod:`qlib.core.calibration` and :mod:`qlib.core.rounding` (no public names):

- :class:`Layout` views a tensor as a C-contiguous 3-D array ``(pre, n, post)``
  with ``n`` the length of the quantization axis, and knows the shape of a
  per-channel or per-group parameter;
- :func:`as_scale`, :func:`as_zero_point`, :func:`param` validate the
  parameters and bring them to the kernels' canonical shapes;
- :func:`blocks` cuts the flat tensor into blocks of at most :data:`BLOCK`
  elements, each with its parameters broadcastable to it, so that the kernels
  work in the processor's cache and write straight into their output.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from qlib.core.validation import as_float_array, check_axis, check_int

__all__: list[str] = []

#: Elements processed at a time: 256 Ki elements, 1 MiB of float32, small
#: enough to stay in cache, so that the passes of a kernel (divide, round,
#: add, clip, convert) cost one trip to main memory, and large enough that
#: numpy's per-call overhead is negligible.
BLOCK = 1 << 18

#: Inner-loop length below which a per-channel scale is expanded to a flat
#: array rather than broadcast (numpy's per-inner-loop overhead dominates
#: short inner loops).
MIN_BROADCAST = 128


def compute_dtype(dtype) -> np.dtype:
    """The float type the arithmetic runs in: float16 in float32 (its values
    and quotients are then rounded back to float16 where ONNX rounds them)."""
    return np.promote_types(dtype, np.float32)


def block_buffer(size: int, dtype) -> np.ndarray:
    """A scratch buffer for one block of a tensor of ``size`` elements."""
    return np.empty(min(BLOCK, size), dtype=dtype)


def c_contiguous(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself if C-contiguous, else a C-contiguous copy (0-d stays 0-d,
    unlike ``np.ascontiguousarray``)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def float_input(x, name: str = "x") -> tuple[np.ndarray, bool]:
    """Return ``(array, checked)``; ``checked`` is False when the finiteness
    check is left to the blocked kernel.

    ``as_float_array`` checks finiteness with a full-size temporary, which
    costs two thirds of an ``np.copy`` of ``x``; for large float32/float64
    input (non-empty and of a valid dtype by construction) the check is
    instead done block by block inside the kernel, where the block is already
    in cache (:func:`check_block_finite`). Everything else goes through
    ``as_float_array``.
    """
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64) and arr.size > BLOCK:
        return c_contiguous(arr), False
    return c_contiguous(as_float_array(arr, name, allow_int=False)), True


def check_block_finite(xb: np.ndarray, x_full: np.ndarray, name: str = "x") -> None:
    """Raise (through ``as_float_array``) if ``xb`` holds NaN or inf.

    ``dot(xb, xb)`` is one cheap BLAS pass that is non-finite whenever ``xb``
    holds a NaN or an infinity; it can also overflow on huge finite values,
    hence the exact re-check before raising.
    """
    flat = xb.reshape(-1)
    if not math.isfinite(float(np.dot(flat, flat))) and not np.isfinite(flat).all():
        as_float_array(x_full, name, allow_int=False)  # raises with the standard message


def real_array(value, name: str) -> np.ndarray:
    """``value`` as a non-empty array of real numbers (bools refused)."""
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real number or an array of them, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


def as_scale(scale, dtype) -> np.ndarray:
    """``scale`` as an array of ``dtype``, every entry positive and finite there."""
    arr = real_array(scale, "scale")
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


def as_zero_point(zero_point, lo: int, hi: int, grid: str) -> np.ndarray:
    """``zero_point`` as an integer array with every entry in ``[lo, hi]``."""
    arr = np.asarray(zero_point)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"zero_point must be an integer or an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"zero_point must not be empty, got shape {arr.shape}")
    zmin, zmax = int(arr.min()), int(arr.max())
    if zmin < lo or zmax > hi:
        bad = zmin if zmin < lo else zmax
        raise ValueError(f"zero_point must lie in the {grid} [{lo}, {hi}], got {bad}")
    return arr


@dataclass(frozen=True)
class Layout:
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


def make_layout(shape: tuple[int, ...], axis, group_size) -> Layout:
    """The :class:`Layout` of a tensor of ``shape`` quantized along ``axis``."""
    gs = None if group_size is None else check_int(group_size, "group_size", 1)
    if axis is None:
        if gs is not None:
            raise ValueError(
                "group_size needs an axis: pass axis=k to quantize groups of "
                f"{gs} consecutive elements along axis k"
            )
        return Layout("tensor", tuple(shape), pre=1, n=math.prod(shape), post=1)
    ax = check_axis(axis, len(shape))
    pre = math.prod(shape[:ax])
    post = math.prod(shape[ax + 1 :])
    return Layout("channel" if gs is None else "group", tuple(shape), ax, gs, pre, shape[ax], post)


def param(arr: np.ndarray, layout: Layout, name: str):
    """Return a numpy scalar or an array of ``layout.param_shape3``.

    A parameter with a single element (shape ``()``, ``(1,)``, ...) is shared
    by every element, in every granularity, as in ONNX's reference
    implementation; this includes a per-axis vector of length 1 along an axis
    of length 1.
    """
    if arr.size == 1:
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
        raise ValueError(f"{name} must be a scalar or have shape {expected} ({what}), got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(layout.param_shape3))


def broadcast3(p, layout: Layout):
    """A parameter from :func:`param` made broadcastable to ``(pre, n, post)``."""
    if not isinstance(p, np.ndarray):
        return p
    if layout.kind == "channel":
        return p.reshape(1, layout.n, 1)
    return expand_groups(p, layout.group_size, 0, layout.n, 1)


def reduce3(e3: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``e3`` of shape ``(pre, n, post)`` over the elements sharing each
    parameter of ``shape`` (``()``, or ``layout.param_shape``)."""
    if len(shape) == 0 or math.prod(shape) == 1:
        return e3.sum().reshape(shape)
    if layout.kind == "channel":
        return e3.sum(axis=(0, 2)).reshape(shape)
    starts = np.arange(0, layout.n, layout.group_size)
    return np.add.reduceat(e3, starts, axis=1).reshape(shape)


@contextmanager
def fp_config(layout: Layout):
    """Silence float overflow (a tiny scale saturates) and, when blocks are
    rows of length ``Q`` with one scale per row, shrink numpy's ufunc buffer
    to at most ``Q``: with the default 8192 the iterator copies short rows
    into buffers to join them, which halves the speed of the division."""
    Q = layout.post
    small_rows = layout.kind != "tensor" and 16 <= Q < np.getbufsize() and Q <= BLOCK < layout.n * Q
    with np.errstate(over="ignore", under="ignore"):
        if not small_rows:
            yield
            return
        old = np.setbufsize(Q // 16 * 16)
        try:
            yield
        finally:
            np.setbufsize(old)


def expand_groups(arr: np.ndarray, g: int, n0: int, n1: int, axis: int) -> np.ndarray:
    """Entries ``n0:n1`` along ``axis`` of ``arr`` repeated ``g`` times along it."""
    g0, g1 = n0 // g, (n1 - 1) // g + 1
    index = (slice(None),) * axis
    rep = np.repeat(arr[index + (slice(g0, g1),)], g, axis=axis)
    off = n0 - g0 * g
    return rep[index + (slice(off, off + n1 - n0),)]


def group_runs(N: int, g: int, k: int):
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


def _cut(params, arrays, cut) -> list:
    """``cut(p)`` of each array parameter; scalars (and ``None``) unchanged."""
    return [cut(p) if isa else p for p, isa in zip(params, arrays)]


def blocks(layout: Layout, params):
    """Yield ``(a, b, shape, pblocks)``: the flat range ``[a, b)`` of a block,
    the shape to view it in, and each parameter broadcastable to that shape.

    Scalars (and ``None``) pass through unchanged; arrays are cut (and
    expanded for groups) so that every inner loop is either long or
    contiguous. The blocks come in increasing order of ``a``.
    """
    block = BLOCK
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
                yield a, b, (b - a,), _cut(pats, arrays, lambda pt: pt[: b - a])
            else:
                yield a, b, (p1 - p0, N, Q), _cut(params, arrays, lambda prm: expand_groups(prm[p0:p1], g, 0, N, 1))
    elif Q <= block:
        # Within one leading index: runs of whole rows of length Q, each row
        # sharing one scale (per-channel) or one row of scales (per-group).
        k = block // Q
        for p in range(P):
            base = p * R
            if channel:
                for n0 in range(0, N, k):
                    n1 = min(n0 + k, N)
                    if Q >= MIN_BROADCAST:
                        pbs = _cut(params, arrays, lambda prm: prm[n0:n1, None])
                    else:
                        pbs = _cut(params, arrays, lambda prm: np.repeat(prm[n0:n1], Q).reshape(n1 - n0, Q))
                    yield base + n0 * Q, base + n1 * Q, (n1 - n0, Q), pbs
            else:
                for n0, n1, g0, ng, r in group_runs(N, g, k):
                    pbs = _cut(params, arrays, lambda prm: prm[p, g0 : g0 + ng, None, :])
                    yield base + n0 * Q, base + n1 * Q, (ng, r, Q), pbs
    else:
        # Rows longer than a block: chunks of one row.
        for p in range(P):
            for n in range(N):
                base = (p * N + n) * Q
                for q0 in range(0, Q, block):
                    q1 = min(q0 + block, Q)
                    pbs = _cut(params, arrays, lambda prm: prm[n] if channel else prm[p, n // g, q0:q1])
                    yield base + q0, base + q1, (q1 - q0,), pbs
