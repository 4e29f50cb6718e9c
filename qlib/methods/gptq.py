r"""GPTQ: error-compensating post-training quantization of a linear layer's weight.

Round-to-nearest (RTN) quantizes every weight on its own. GPTQ (Frantar,
Ashkboos, Hoefler & Alistarh 2022, arXiv:2210.17323), after Optimal Brain
Quantization (OBQ, Frantar & Alistarh 2022, arXiv:2208.11580), quantizes the
columns of :math:`W` (shape ``(out, in)``, :math:`y = x W^T + b`) one at a
time and moves each column's rounding error onto the columns not yet
quantized, so as to minimize the layer's output error on calibration inputs
:math:`X` (shape ``(n, in)``):

.. math::

    \min_{\hat W} \; \tfrac1n \lVert X W^T - X \hat W^T \rVert_F^2
    = \tfrac12 \operatorname{tr}\bigl((W - \hat W) H (W - \hat W)^T\bigr),
    \qquad H = \tfrac2n X^T X .

Every row of :math:`W` shares the Hessian :math:`H`. With the upper Cholesky
factor :math:`U` of the (dampened) inverse Hessian, :math:`H^{-1} = U^T U`,
quantizing column :math:`j` and compensating optimally in the columns
:math:`k > j` is

.. math::

    q_j = \operatorname{quant}(w_j), \qquad
    e_j = \frac{w_j - q_j}{U_{jj}}, \qquad
    w_k \leftarrow w_k - e_j\, U_{jk} \quad (k > j),

OBQ's update :math:`w_k \leftarrow w_k - (w_j - q_j)[H_F^{-1}]_{jk}/[H_F^{-1}]_{jj}`
over the remaining set :math:`F = \{j, j+1, \dots\}` with the Schur complements
of :math:`H^{-1}` read off one Cholesky factor instead of being recomputed.
:func:`~qlib.gptq_quantize` implements it; :func:`~qlib.round_to_nearest` is the baseline on
the same grid; :func:`~qlib.layer_output_error` compares them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.grid import Quantizer, smallest_int_dtype
from qlib.core.layout import compute_dtype
from qlib.core.metrics import size_bytes
from qlib.core.packing import packed_nbytes
from qlib.core.uniform import dequantize, quantize
from qlib.core.validation import (
    as_float_array,
    check_bits,
    check_bool,
    check_choice,
    check_int,
    check_real,
)

__all__ = ["QuantizedWeight", "gptq_quantize", "round_to_nearest", "layer_output_error"]

_METHODS = ("minmax", "mse", "percentile")
#: Below this size the inverse Cholesky factor is computed directly by LAPACK.
_BASE = 64


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    r"""A quantized weight matrix, as :func:`~qlib.gptq_quantize` and :func:`~qlib.round_to_nearest` return it.

    Attributes
    ----------
    codes : numpy.ndarray
        The integer codes, shape ``(out, in)`` of the weight, in the dtype
        :func:`~qlib.quantize` gives the grid (``int8`` up to 8 bits).
    quantizer : Quantizer
        Per output channel (``axis=0``, scale shape ``(out,)``) or per group
        of ``g`` input columns (``axis=1, group_size=g``, scale shape
        ``(out, ceil(in / g))``); ``qlib.dequantize(codes, quantizer)`` is
        ``weight``.
    weight : numpy.ndarray of float32
        The dequantized weight :math:`\hat W`.
    proxy_loss : float or None
        GPTQ: :math:`\tfrac12\sum_j \lVert e_j\rVert^2 = \tfrac12
        \operatorname{tr}((W - \hat W) H_\lambda (W - \hat W)^T)` with the
        dampened Hessian :math:`H_\lambda` (``None`` for round-to-nearest).
    order : numpy.ndarray of int or None
        GPTQ: the input columns in the order they were quantized
        (``arange(in)`` unless ``act_order``); ``None`` for round-to-nearest.
    """

    codes: np.ndarray
    quantizer: Quantizer
    weight: np.ndarray
    proxy_loss: float | None = None
    order: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes stored: the codes packed at their width (up to 8 bits; wider codes
        take 2 bytes each, as int16, the convention of :meth:`qlib.QuantizationAwareLoss.nbytes`),
        the float32 scales and, unless the grid is symmetric (narrow, zero point 0), the zero points.

        >>> round_to_nearest(np.ones((4, 64)), bits=4, group_size=32).nbytes   # 128 + 8 scales * 4
        160
        """
        q = self.quantizer
        side = size_bytes(np.asarray(q.scale, dtype=np.float32))
        if not (q.narrow_range and not np.any(q.zero_point)):
            side += size_bytes(np.asarray(q.zero_point))
        codes = packed_nbytes(self.codes.size, q.bits) if q.bits <= 8 else 2 * self.codes.size
        return codes + side


def _as_weight(weight, name: str = "weight") -> np.ndarray:
    w = as_float_array(weight, name, allow_int=False)
    if w.ndim != 2:
        raise ValueError(f"{name} must be 2-D (out_features, in_features), got shape {w.shape}")
    return w.astype(compute_dtype(w.dtype), copy=False)


def _as_inputs(inputs, in_features: int, name: str = "inputs") -> np.ndarray:
    x = as_float_array(inputs, name, allow_int=False)
    if x.ndim < 2 or x.shape[-1] != in_features:
        raise ValueError(
            f"{name} must have shape (n, {in_features}) (or (..., {in_features})), one row per "
            f"calibration sample and in_features={in_features} columns, got shape {x.shape}"
        )
    return x.reshape(-1, in_features).astype(compute_dtype(x.dtype), copy=False)


def _grid_args(bits, symmetric, group_size, method):
    bits = check_bits(bits)
    symmetric = check_bool(symmetric, "symmetric")
    gs = None if group_size is None else check_int(group_size, "group_size", 1)
    method = check_choice(method, "method", _METHODS)
    return bits, symmetric, gs, method


def _hessian(inputs, hessian, in_features: int) -> np.ndarray:
    """``2 X^T X / n`` (accumulated in the inputs' precision), or the given Hessian, in float64."""
    if (inputs is None) == (hessian is None):
        raise TypeError("gptq_quantize() needs exactly one of inputs (n, in) or hessian (in, in), "
                        f"got {'both' if inputs is not None else 'neither'}")
    if inputs is not None:
        x = _as_inputs(inputs, in_features)
        return (x.T @ x).astype(np.float64) * (2.0 / x.shape[0])
    h = as_float_array(hessian, "hessian", allow_int=False).astype(np.float64)
    if h.shape != (in_features, in_features):
        raise ValueError(f"hessian must have shape (in, in) = ({in_features}, {in_features}) for a weight "
                         f"of {in_features} input columns, got {h.shape}")
    asym = float(np.max(np.abs(h - h.T)))
    if asym > 1e-6 * float(np.max(np.abs(h))):
        raise ValueError(f"hessian must be symmetric, got max |H - H^T| = {asym:.3g}")
    return (h + h.T) / 2


def _inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    r"""The upper triangular :math:`U` with positive diagonal and :math:`U^T U = h^{-1}`, for SPD ``h``.

    Recursive on :math:`h = [[A, B], [B^T, C]]`: :math:`U_{22}` of :math:`C`,
    :math:`V_{12} = B U_{22}^T`, :math:`U_{11}` of the Schur complement
    :math:`A - V_{12} V_{12}^T = A - B C^{-1} B^T`, and
    :math:`U_{12} = -U_{11} V_{12} U_{22}`, so the work is matrix products
    (numpy has no triangular solve). Small blocks: :math:`h = V V^T` with
    :math:`V` the reversed Cholesky factor of the reversed :math:`h`, and
    :math:`U = V^{-1}`. Raises ``numpy.linalg.LinAlgError`` if ``h`` is not
    positive definite.
    """
    n = h.shape[0]
    if n <= _BASE:
        v = np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
        u = np.zeros_like(v)  # V^-1 by back substitution (LAPACK's small inverses thread badly)
        for i in range(n - 1, -1, -1):
            u[i, i] = 1.0 / v[i, i]
            u[i, i + 1:] = -(v[i, i + 1:] @ u[i + 1:, i + 1:]) * u[i, i]
        return u
    k = n // 2
    u22 = _inverse_cholesky_upper(h[k:, k:])
    v12 = h[:k, k:] @ u22.T
    u11 = _inverse_cholesky_upper(h[:k, :k] - v12 @ v12.T)
    out = np.zeros_like(h)
    out[:k, :k], out[k:, k:] = u11, u22
    out[:k, k:] = -(u11 @ v12) @ u22
    return out


def round_to_nearest(weight, *, bits=4, symmetric=True, group_size=None, method="minmax") -> QuantizedWeight:
    """Round-to-nearest: the baseline of :func:`~qlib.gptq_quantize`, on the same grid.

    ``calibrate(W, bits=bits, symmetric=symmetric, axis=0, method=method)``
    per output channel, or ``axis=1, group_size=group_size`` per group of
    input columns, then ``quantize``. float16 weights are quantized in
    float32, as :func:`~qlib.gptq_quantize` does.

    Parameters
    ----------
    weight : array_like of float, shape (out, in)
    bits, symmetric, group_size, method
        As in :func:`~qlib.gptq_quantize`.

    Returns
    -------
    QuantizedWeight
        With ``proxy_loss`` and ``order`` ``None``.

    Raises
    ------
    TypeError, ValueError
        As :func:`~qlib.gptq_quantize`.

    Examples
    --------
    >>> w = np.array([[0.5, -1.75, 0.3]])
    >>> r = round_to_nearest(w, bits=4)
    >>> r.codes, r.weight
    (array([[ 2, -7,  1]], dtype=int8), array([[ 0.5 , -1.75,  0.25]], dtype=float32))
    """
    w = _as_weight(weight)
    bits, symmetric, gs, method = _grid_args(bits, symmetric, group_size, method)
    axis = 0 if gs is None else 1
    q = calibrate(w, bits=bits, symmetric=symmetric, axis=axis, group_size=gs, method=method)
    codes = quantize(w, q)
    return QuantizedWeight(codes=codes, quantizer=q, weight=dequantize(codes, q))


def gptq_quantize(weight, inputs=None, *, hessian=None, bits=4, symmetric=True, group_size=None,
                  method="minmax", damp=0.01, block_size=128, act_order=False) -> QuantizedWeight:
    r"""Quantize a linear layer's weight with GPTQ (Frantar et al. 2022, arXiv:2210.17323).

    The algorithm, as the paper's Algorithm 1 and its reference code:

    1. :math:`H = \tfrac2n X^T X` from ``inputs`` (accumulated in their
       precision, float32 for float32 inputs), or ``hessian``; then float64.
       *Dead* inputs (:math:`H_{ii} = 0`, never active) get :math:`H_{ii} = 1`
       and their weight columns are set to 0.
    2. The grid: per output channel, ``calibrate(W, axis=0)`` on the original
       :math:`W`, before any update. Per group of ``group_size`` input columns,
       each group's per-row scale is calibrated on the group's *current*
       (error-updated) columns when the loop reaches the first of them.
    3. ``act_order``: the columns are processed by decreasing :math:`H_{ii}`
       (ties in column order); the permutation is undone at the end.
    4. Dampening :math:`\lambda = \text{damp}\cdot\operatorname{mean}(H_{ii})`
       (after step 1) on the diagonal; :math:`U` upper with
       :math:`(H + \lambda I)^{-1} = U^T U`, via Cholesky.
    5. For each column :math:`j`: :math:`q_j = \operatorname{quant}(w_j)`
       (round to nearest on the row's grid), :math:`e_j = (w_j - q_j)/U_{jj}`,
       :math:`w_k \leftarrow w_k - e_j U_{jk}` for the later columns
       :math:`k` of the block of ``block_size`` columns; after each block the
       later columns receive the block's updates at once (the *lazy batch
       update*): :math:`W_{:, k} \leftarrow W_{:, k} - E\, U_{\text{block}, k}`.

    The result does not depend on ``block_size`` (up to float rounding): it
    only groups the same updates. In exact arithmetic
    :math:`W - \hat W = E U` (:math:`E` has the columns :math:`e_j`; the dead
    columns of :math:`W` zeroed), so
    the proxy loss :math:`\tfrac12 \lVert E\rVert_F^2` equals
    :math:`\tfrac12 \operatorname{tr}((W - \hat W)(H + \lambda I)(W - \hat W)^T)
    = \tfrac1n \lVert X(W - \hat W)^T\rVert_F^2 + \tfrac\lambda2 \lVert W - \hat W\rVert_F^2`.

    Parameters
    ----------
    weight : array_like of float, shape (out, in)
        The layer's weight, :math:`y = x W^T + b`. float32 and float64 are
        processed in their precision, float16 in float32.
    inputs : array_like of float, shape (n, in) or (..., in), optional
        Calibration inputs of the layer.
    hessian : array_like of float, shape (in, in), optional
        Instead of ``inputs``: :math:`H = \tfrac2n X^T X` (or any symmetric
        positive semi-definite matrix; a positive multiple of it gives the
        same codes, the dampening being relative).
    bits : int, default 4
        2 to 16.
    symmetric : bool, default True
        Symmetric grid (narrow, zero point 0) or asymmetric, as :func:`~qlib.calibrate`.
    group_size : int, optional
        Input columns per group; ``None``: one grid per output channel.
    method : {"minmax", "mse", "percentile"}, default "minmax"
        Range calibration, as :func:`~qlib.calibrate`.
    damp : float, default 0.01
        Dampening, relative to the mean of the Hessian's diagonal, >= 0.
    block_size : int, default 128
        Columns per lazy batch update, >= 1.
    act_order : bool, default False
        Quantize the columns by decreasing :math:`H_{ii}`.

    Returns
    -------
    QuantizedWeight
        The codes, the :class:`~qlib.Quantizer` (per channel, or per group in
        qlib's layout: scale shape ``(out, ceil(in / group_size))``), the
        dequantized float32 weight, ``proxy_loss`` and ``order``.

    Raises
    ------
    TypeError
        If not exactly one of ``inputs`` and ``hessian`` is given, or an
        argument has the wrong type (integer arrays are refused).
    ValueError
        On shapes that do not fit (``weight`` not 2-D, ``inputs`` without
        ``in`` columns, ``hessian`` not ``(in, in)``), values out of range
        (``bits`` outside [2, 16], ``group_size``/``block_size`` < 1,
        ``damp`` < 0), non-finite data, or a Hessian that is not positive
        semi-definite: checked are symmetry (relative tolerance 1e-6), a
        non-negative diagonal, zero rows for a zero diagonal entry, and that
        the Cholesky factorization of :math:`H + \lambda I` succeeds. A
        slightly indefinite :math:`H` that dampening makes positive definite is
        accepted (dampening is the paper's remedy); a singular :math:`H`
        (fewer samples than inputs) needs ``damp > 0``.

    Notes
    -----
    Deviations from the reference code, both for groups only: (1) when a
    group starts inside a block (``group_size`` not a multiple of
    ``block_size``), the reference calibrates it on weights that miss the
    updates of the block's earlier columns; here a group's grid always sees
    its current weights, so the result does not depend on ``block_size``.
    (2) With ``act_order`` the reference groups consecutive columns of the
    *permuted* order (stored with a column-to-group index); here groups are
    always consecutive input columns (qlib's per-group layout), each
    calibrated when the first of its columns is reached. Without
    ``act_order`` and with ``group_size`` a multiple of ``block_size`` (the
    usual 128 and 128) both agree. The Hessian is factored in float64
    whatever the weight's precision (the reference code uses float32).

    Examples
    --------
    Two anti-correlated inputs (:math:`H_{12} < 0`): the error of :math:`w_1`
    (0.59375 -> 0.5) is compensated in :math:`w_2`, moved by
    :math:`(w_1 - q_1) H_{12}/H_{22} = -0.140625` to 1.609375, which rounds
    to 6 instead of 7 and lowers the output error (the proxy loss of
    round-to-nearest is 0.017578125):

    >>> w = np.array([[0.59375, 1.75]])
    >>> h = np.array([[4.0, -1.5], [-1.5, 1.0]])
    >>> r = gptq_quantize(w, hessian=h, bits=4, damp=0.0)
    >>> r.codes, r.weight, r.proxy_loss
    (array([[2, 6]], dtype=int8), array([[0.5, 1.5]], dtype=float32), 0.013671875)
    >>> round_to_nearest(w, bits=4).codes
    array([[2, 7]], dtype=int8)
    """
    w0 = _as_weight(weight)
    out_f, in_f = w0.shape
    bits, symmetric, gs, method = _grid_args(bits, symmetric, group_size, method)
    damp = check_real(damp, "damp", lo=0.0)
    block = check_int(block_size, "block_size", 1)
    act_order = check_bool(act_order, "act_order")
    h = _hessian(inputs, hessian, in_f)

    diag = np.diag(h)
    if np.any(diag < 0):
        i = int(np.argmin(diag))
        raise ValueError(f"hessian is not positive semi-definite: hessian[{i}, {i}] = {diag[i]:.3g} < 0")
    dead = diag == 0
    if dead.any():
        bad = np.flatnonzero(np.any(h[dead] != 0, axis=1))
        if bad.size:
            i = int(np.flatnonzero(dead)[bad[0]])
            raise ValueError(f"hessian is not positive semi-definite: hessian[{i}, {i}] = 0 but row {i} "
                             f"has nonzero entries")
        h = h.copy()
        h[dead, dead] = 1.0
    w = w0.copy()
    w[:, dead] = 0
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(in_f)
    h = h[np.ix_(order, order)]
    h[np.diag_indices(in_f)] += damp * float(np.mean(np.diag(h)))
    try:
        u = _inverse_cholesky_upper(h)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"hessian + damp * mean(diag) * I is not positive definite (Cholesky failed, damp={damp}): the "
            f"Hessian is not positive semi-definite, or it is singular (e.g. fewer calibration samples than "
            f"in_features={in_f}) and damp is 0; use a larger damp"
        ) from None

    dtype = w.dtype
    uw = u.astype(dtype)
    wt = np.ascontiguousarray(w[:, order].T)  # row p: the column quantized p-th
    codes_t = np.empty(wt.shape, dtype=np.float64)
    if gs is None:
        quantizer = calibrate(w0, bits=bits, symmetric=symmetric, axis=0, method=method)
        scale, zero = quantizer.scale.astype(dtype), quantizer.zero_point.astype(dtype)
        qmin, qmax = quantizer.qmin, quantizer.qmax
    else:
        n_groups = -(-in_f // gs)
        position = np.empty(in_f, dtype=np.intp)
        position[order] = np.arange(in_f)
        group_of = order // gs
        scales = np.empty((out_f, n_groups), dtype=np.float32)
        zeros = np.empty((out_f, n_groups), dtype=np.int64)
        ready = np.zeros(n_groups, dtype=bool)
        g = -1

    loss = 0.0
    buf = np.empty((min(block, in_f), out_f), dtype=dtype)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        err = np.empty((i2 - i1, out_f), dtype=dtype)  # row j - i1: e_j
        for j in range(i1, i2):
            if gs is not None and group_of[j] != g:
                g = group_of[j]
                if not ready[g]:
                    p = position[g * gs: min((g + 1) * gs, in_f)]  # the group's columns, in input order
                    cur = wt[p]  # current, except the pending updates of this block's columns i1..j-1
                    later = p >= i2
                    if later.any() and j > i1:
                        cur[later] -= uw[i1:j, p[later]].T @ err[: j - i1]
                    gq = calibrate(cur.T, bits=bits, symmetric=symmetric, axis=0, method=method)
                    scales[:, g], zeros[:, g], ready[g] = gq.scale, gq.zero_point, True
                    qmin, qmax = gq.qmin, gq.qmax
                scale, zero = scales[:, g].astype(dtype), zeros[:, g].astype(dtype)
            col = wt[j]
            c = np.rint(col / scale)  # qlib.quantize's rule: divide in the weight's precision, round half even
            if zero.any():
                c += zero
                np.clip(c, qmin, qmax, out=c)
                codes_t[j] = c
                c -= zero
            else:
                np.clip(c, qmin, qmax, out=c)
                codes_t[j] = c
            c *= scale  # the quantized value q_j
            e = err[j - i1]
            np.subtract(col, c, out=e)
            e /= uw[j, j]
            col[...] = c
            if j + 1 < i2:
                upd = np.multiply(uw[j, j + 1: i2, None], e, out=buf[: i2 - j - 1])
                wt[j + 1: i2] -= upd
        loss += float(np.einsum("ij,ij->", err, err, dtype=np.float64))
        if i2 < in_f:
            wt[i2:] -= uw[i1:i2, i2:].T @ err

    if gs is not None:
        q0 = gq
        quantizer = Quantizer(scales, zeros, bits=q0.bits, signed=q0.signed, narrow_range=q0.narrow_range,
                              axis=1, group_size=gs)
    codes = np.empty((out_f, in_f), dtype=smallest_int_dtype(quantizer.qmin, quantizer.qmax))
    codes[:, order] = codes_t.T
    return QuantizedWeight(codes=codes, quantizer=quantizer, weight=dequantize(codes, quantizer),
                           proxy_loss=0.5 * loss, order=order)


def layer_output_error(weight, weight_hat, inputs) -> float:
    r"""The relative squared output error of a quantized linear layer on ``inputs``.

    .. math::

        \frac{\lVert X W^T - X \hat W^T \rVert_F^2}{\lVert X W^T \rVert_F^2},

    computed in float64 (the bias cancels in the difference and is left out
    of the denominator). 0 is exact; 1 is as large as the output itself.

    Parameters
    ----------
    weight, weight_hat : array_like of float, shape (out, in)
        The float weight and its quantized reconstruction.
    inputs : array_like of float, shape (n, in) or (..., in)

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If an argument is not a floating-point array.
    ValueError
        If the shapes do not fit, an array is empty or not finite, or
        :math:`X W^T` is zero (the relative error is undefined).

    Examples
    --------
    >>> x = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> layer_output_error(np.array([[1.0, 1.0]]), np.array([[1.0, 0.5]]), x)
    0.2
    """
    w = _as_weight(weight).astype(np.float64)
    w_hat = _as_weight(weight_hat, "weight_hat").astype(np.float64)
    if w_hat.shape != w.shape:
        raise ValueError(f"weight_hat must have the shape of weight {w.shape}, got {w_hat.shape}")
    x = _as_inputs(inputs, w.shape[1]).astype(np.float64)
    ref = float(np.sum((x @ w.T) ** 2))
    if ref == 0.0:
        raise ValueError("the layer's output inputs @ weight.T is zero: the relative error is undefined")
    return float(np.sum((x @ (w - w_hat).T) ** 2)) / ref
