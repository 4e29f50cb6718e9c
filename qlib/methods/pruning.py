r"""Weight pruning (权重裁剪) and structural pruning (剪枝).

*Unstructured* (magnitude) pruning sets the weights of smallest magnitude to
zero and keeps the tensor's shape: the model gets no smaller or faster unless
the zeros are stored and computed sparsely. *Structural* pruning removes whole
hidden units (rows of one weight matrix and the matching columns of the next),
so the remaining dense matrices are smaller.

Conventions shared by every function here:

- Weights follow PyTorch's layout: a dense layer has weight ``W`` of shape
  ``(out_features, in_features)`` and computes :math:`y = x W^\top + b`.
- A *mask* is a boolean array of the weight's shape, ``True`` = kept.
- The number of weights pruned out of :math:`n` at sparsity :math:`s` is
  exactly :math:`k = \operatorname{round}(s\,n)` with Python's ``round``
  (round half to even: :math:`s n = 2.5` prunes 2, :math:`3.5` prunes 4),
  so the achieved sparsity is :math:`k/n`, the closest attainable value.
- Ties in magnitude are broken deterministically by position: among weights of
  equal :math:`|w|`, the one with the lower flat (C-order) index is pruned
  first (a stable sort of :math:`|w|`). Hence a pruned weight never has a
  larger magnitude than a kept one.
- :func:`~qlib.gradual_sparsity` gives the sparsity target of the cubic schedule of
  Zhu & Gupta (2017, arXiv:1710.01878), which prunes fast at first, while
  there are many redundant weights, and slowly near the end.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from qlib.core.validation import as_float_array, check_int

__all__ = [
    "magnitude_prune",
    "global_magnitude_prune",
    "sparsity",
    "neuron_norms",
    "prune_neurons",
    "gradual_sparsity",
]


# ---------------------------------------------------------------------------
# Validation helpers (private)
# ---------------------------------------------------------------------------


def _check_unit_interval(value, name: str) -> float:
    """``value`` as a Python float in [0, 1]; TypeError for non-numbers and bools."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number in [0, 1], got {type(value).__name__} {value!r}"
        )
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _weight(w, name: str) -> np.ndarray:
    return as_float_array(w, name, allow_int=False)


def _n_pruned(fraction: float, n: int) -> int:
    """Exactly ``round(fraction * n)`` (round half to even), within [0, n]."""
    return min(max(round(fraction * n), 0), n)


def _check_ord(ord) -> float:
    if isinstance(ord, (bool, np.bool_)) or not isinstance(ord, numbers.Real):
        raise TypeError(f"ord must be a real number >= 1 or np.inf, got {type(ord).__name__} {ord!r}")
    v = float(ord)
    if not v >= 1.0:  # also rejects NaN
        raise ValueError(f"ord must be >= 1 (or np.inf) for a norm, got {ord!r}")
    return v


# ---------------------------------------------------------------------------
# Unstructured magnitude pruning
# ---------------------------------------------------------------------------


def magnitude_prune(w, sparsity) -> tuple[np.ndarray, np.ndarray]:
    r"""Zero the fraction ``sparsity`` of ``w``'s entries with the smallest magnitude.

    Exactly :math:`k = \operatorname{round}(s \cdot n)` of the :math:`n`
    entries are pruned (Python ``round``, half to even), those of smallest
    :math:`|w|`; among equal magnitudes the lower flat (C-order) index is pruned
    first. So every pruned weight satisfies :math:`|w_p| \le |w_j|` for every
    kept weight :math:`w_j`.

    Parameters
    ----------
    w : array_like of float
        Weights of any shape; finite, non-empty, floating point.
    sparsity : float
        Fraction of entries to zero, in [0, 1].

    Returns
    -------
    pruned : ndarray
        ``w * mask``, a new array of ``w``'s shape and dtype.
    mask : ndarray of bool
        ``True`` where the weight is kept.

    Raises
    ------
    TypeError
        If ``w`` is not a floating-point array, or ``sparsity`` is not a real
        number.
    ValueError
        If ``w`` is empty or not finite, or ``sparsity`` is outside [0, 1].

    See Also
    --------
    global_magnitude_prune : one threshold shared by several tensors.

    Examples
    --------
    >>> w = np.array([[0.5, -0.1, 0.3], [-0.8, 0.05, -0.3]])
    >>> pruned, mask = magnitude_prune(w, 0.5)
    >>> print(pruned)
    [[ 0.5  0.   0. ]
     [-0.8  0.  -0.3]]
    >>> print(mask.sum())
    3

    The two entries of magnitude 0.3 tie: the first one (flat index 2) goes
    first. At sparsity 0.25, :math:`0.25 \times 6 = 1.5` rounds to 2 entries.

    >>> print(magnitude_prune(w, 0.25)[1].sum())
    4
    """
    arr = _weight(w, "w")
    s = _check_unit_interval(sparsity, "sparsity")
    k = _n_pruned(s, arr.size)
    flat_mask = np.ones(arr.size, dtype=bool)
    if k:
        order = np.argsort(np.abs(arr).ravel(), kind="stable")
        flat_mask[order[:k]] = False
    mask = flat_mask.reshape(arr.shape)
    pruned = np.where(mask, arr, arr.dtype.type(0))
    return pruned, mask


def global_magnitude_prune(tensors, sparsity) -> tuple[dict, dict]:
    r"""Magnitude pruning with one threshold shared by several tensors.

    All entries of all tensors are ranked together by :math:`|w|` and exactly
    :math:`\operatorname{round}(s \cdot N)` of the :math:`N` entries in total
    are pruned, so a layer with many small weights loses more than one with
    large weights. Ties are broken by the mapping's iteration order, then by
    flat index within a tensor. Magnitudes are compared in float64, so tensors
    may have different float dtypes; each result keeps its tensor's dtype.

    Parameters
    ----------
    tensors : Mapping of str to array_like of float
        Named weight tensors (for instance ``{"fc1": w1, "fc2": w2}``), each
        finite, non-empty, floating point.
    sparsity : float
        Overall fraction of entries to zero, in [0, 1].

    Returns
    -------
    pruned : dict
        Same keys, each ``w * mask`` as a new array of ``w``'s dtype.
    masks : dict
        Same keys, boolean masks, ``True`` = kept.

    Raises
    ------
    TypeError
        If ``tensors`` is not a mapping, a tensor is not a float array, or
        ``sparsity`` is not a real number.
    ValueError
        If ``tensors`` is empty, a tensor is empty or not finite, or
        ``sparsity`` is outside [0, 1].

    Examples
    --------
    >>> layers = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([1.0, 2.0, 0.05])}
    >>> pruned, masks = global_magnitude_prune(layers, 0.5)
    >>> print(pruned["a"], pruned["b"])
    [0.  0.  0.3] [1. 2. 0.]

    Layer ``"a"`` loses two of its three weights, ``"b"`` only one. Pruning
    each layer by itself at 50% (:math:`\operatorname{round}(1.5) = 2` weights
    of each) would instead keep ``0.3`` of ``"a"`` and only ``2.0`` of ``"b"``.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"tensors must be a mapping of names to arrays, got {type(tensors).__name__}"
        )
    if len(tensors) == 0:
        raise ValueError("tensors must contain at least one array, got an empty mapping")
    s = _check_unit_interval(sparsity, "sparsity")
    arrays = {key: _weight(val, f"tensors[{key!r}]") for key, val in tensors.items()}
    sizes = [a.size for a in arrays.values()]
    total = sum(sizes)
    k = _n_pruned(s, total)
    flat_mask = np.ones(total, dtype=bool)
    if k:
        mags = np.concatenate([np.abs(a).ravel().astype(np.float64) for a in arrays.values()])
        order = np.argsort(mags, kind="stable")
        flat_mask[order[:k]] = False
    pruned, masks = {}, {}
    start = 0
    for (key, a), size in zip(arrays.items(), sizes):
        m = flat_mask[start : start + size].reshape(a.shape)
        start += size
        masks[key] = m
        pruned[key] = np.where(m, a, a.dtype.type(0))
    return pruned, masks


def sparsity(*arrays) -> float:
    """Fraction of entries that are exactly zero, over all the given arrays.

    ``-0.0`` counts as zero; NaN does not.

    Parameters
    ----------
    *arrays : array_like of real numbers
        One or more arrays (integer or float), not all empty.

    Returns
    -------
    float
        :math:`(\\text{number of zeros}) / (\\text{total number of entries})`.

    Raises
    ------
    TypeError
        If no array is given, or one is not numeric.
    ValueError
        If all arrays are empty.

    Examples
    --------
    >>> sparsity(np.array([0.0, 1.0, 0.0, 2.0]))
    0.5
    >>> sparsity(np.zeros(3), np.ones(1))
    0.75
    """
    if not arrays:
        raise TypeError("sparsity() needs at least one array")
    zeros = total = 0
    for i, a in enumerate(arrays):
        arr = np.asarray(a)
        if arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise TypeError(f"arrays[{i}] must be an array of real numbers, got dtype {arr.dtype}")
        zeros += arr.size - int(np.count_nonzero(arr))
        total += arr.size
    if total == 0:
        raise ValueError("arrays must hold at least one entry in total, got only empty arrays")
    return zeros / total


# ---------------------------------------------------------------------------
# Structural pruning of hidden units
# ---------------------------------------------------------------------------


def neuron_norms(w_in, ord=2) -> np.ndarray:
    r"""Norm of each hidden unit's incoming weights: one value per row of ``w_in``.

    .. math:: \nu_i = \lVert W_{\text{in}}[i, :] \rVert_p

    For a weight of more than two dimensions (a convolution's
    ``(out_channels, in_channels, kh, kw)``), each output channel's weights are
    flattened first, which with ``ord=1`` is the filter norm of Li et al.
    (2017).

    Parameters
    ----------
    w_in : array_like of float
        Weight of the layer feeding the hidden units, shape ``(h, d)`` (or
        ``(h, ...)``), finite floating point.
    ord : float, default 2
        The :math:`p` of the norm: any real :math:`\ge 1`, or ``np.inf``.

    Returns
    -------
    ndarray, shape (h,)
        The norms, in ``w_in``'s dtype.

    Raises
    ------
    TypeError
        If ``w_in`` is not a float array or ``ord`` not a real number.
    ValueError
        If ``w_in`` has fewer than two dimensions, is empty or not finite, or
        ``ord < 1``.

    Examples
    --------
    >>> w_in = np.array([[3.0, 4.0], [1.0, -1.0], [0.0, 0.5]])
    >>> print(np.round(neuron_norms(w_in), 4))
    [5.     1.4142 0.5   ]
    >>> print(neuron_norms(w_in, ord=1))
    [7.  2.  0.5]
    """
    arr = _weight(w_in, "w_in")
    if arr.ndim < 2:
        raise ValueError(
            f"w_in must have shape (h, d) (one row per hidden unit), got shape {arr.shape}"
        )
    p = _check_ord(ord)
    rows = arr.reshape(arr.shape[0], -1)
    return np.linalg.norm(rows, ord=p, axis=1)


def prune_neurons(w_in, b_in, w_out, fraction, *, ord=2):
    r"""Remove the hidden units with the smallest incoming-weight norm.

    For the two dense layers around a hidden layer of :math:`h` units,

    .. math:: y = W_{\text{out}}\, \phi(W_{\text{in}} x + b_{\text{in}}),

    the :math:`r = \operatorname{round}(f \cdot h)` units with the smallest
    :func:`~qlib.neuron_norms` (ties: lower index removed first) are deleted: their
    rows of ``w_in`` and ``b_in`` and their columns of ``w_out``. The result is
    a smaller dense network that computes exactly what the original computes
    when the removed units' outputs are zero (for instance when
    :math:`\phi(0) = 0` and their incoming weights and bias are zero); otherwise
    the removed contributions
    :math:`W_{\text{out}}[:, j]\,\phi(\ldots)_j` are lost and the network is
    usually fine-tuned afterwards. The bias of the *next* layer is unaffected.

    Parameters
    ----------
    w_in : array_like of float, shape (h, d)
        Weight of the layer producing the hidden units.
    b_in : array_like of float, shape (h,), or None
        Its bias (``None`` for a layer without bias).
    w_out : array_like of float, shape (k, h)
        Weight of the layer consuming the hidden units.
    fraction : float
        Fraction of the :math:`h` units to remove, in [0, 1); at least one
        unit must remain.
    ord : float, default 2
        Norm used to rank the units (see :func:`~qlib.neuron_norms`).

    Returns
    -------
    w_in_kept : ndarray, shape (h - r, d)
    b_in_kept : ndarray, shape (h - r,), or None
    w_out_kept : ndarray, shape (k, h - r)
    kept : ndarray of intp, shape (h - r,)
        Indices of the kept units in increasing order. All outputs are new
        arrays in their inputs' dtypes.

    Raises
    ------
    TypeError
        If an array is not floating point, or ``fraction``/``ord`` is not a
        real number.
    ValueError
        If the shapes do not match (the message names the arguments and their
        shapes), an array is empty or not finite, ``fraction`` is outside
        [0, 1] or would remove every unit, or ``ord < 1``.

    Examples
    --------
    >>> w_in = np.array([[1.0, 1.0], [0.1, 0.0], [2.0, 0.0], [0.0, 0.2]])
    >>> b_in = np.array([0.0, 0.5, 0.0, 0.0])
    >>> w_out = np.arange(8.0).reshape(2, 4)
    >>> w1, b1, w2, kept = prune_neurons(w_in, b_in, w_out, 0.5)
    >>> print(kept)
    [0 2]
    >>> print(w1)
    [[1. 1.]
     [2. 0.]]
    >>> print(b1, w2.shape)
    [0. 0.] (2, 2)
    """
    win = _weight(w_in, "w_in")
    if win.ndim != 2:
        raise ValueError(f"w_in must have shape (h, d), got shape {win.shape}")
    h = win.shape[0]
    wout = _weight(w_out, "w_out")
    if wout.ndim != 2 or wout.shape[1] != h:
        raise ValueError(
            f"w_out must have shape (k, h) with h = {h} to match w_in of shape {win.shape}, "
            f"got w_out of shape {wout.shape}"
        )
    if b_in is not None:
        bin_ = _weight(b_in, "b_in")
        if bin_.shape != (h,):
            raise ValueError(
                f"b_in must have shape ({h},) to match w_in of shape {win.shape}, "
                f"got b_in of shape {bin_.shape}"
            )
    f = _check_unit_interval(fraction, "fraction")
    p = _check_ord(ord)
    r = _n_pruned(f, h)
    if r >= h:
        raise ValueError(
            f"fraction must leave at least one of the {h} hidden units, "
            f"got {fraction!r}, which removes round({f} * {h}) = {r}"
        )
    norms = neuron_norms(win, ord=p)
    order = np.argsort(norms.astype(np.float64), kind="stable")
    kept = np.sort(order[r:]).astype(np.intp)
    b_kept = None if b_in is None else bin_[kept]
    return win[kept], b_kept, wout[:, kept], kept


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------


def gradual_sparsity(step, *, final_sparsity, begin_step, end_step, initial_sparsity=0.0):
    r"""Sparsity target at training step ``step``: Zhu & Gupta's cubic schedule.

    .. math::

        s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_{\text{end}} - t_0}\right)^3
        \quad \text{for } t_0 \le t \le t_{\text{end}},

    with :math:`s_t = s_i` before :math:`t_0` and :math:`s_t = s_f` after
    :math:`t_{\text{end}}` (Zhu & Gupta, 2017, arXiv:1710.01878, which
    evaluates it every :math:`\Delta t` steps; here ``step`` may be any
    integer). The slope is largest at :math:`t_0` and zero at
    :math:`t_{\text{end}}`: the network is pruned fast while many weights are
    redundant, and slowly as it approaches the final sparsity.

    Parameters
    ----------
    step : int or array_like of int
        Training step(s) :math:`t`.
    final_sparsity : float
        :math:`s_f`, in [0, 1].
    begin_step, end_step : int
        :math:`t_0 < t_{\text{end}}`.
    initial_sparsity : float, default 0.0
        :math:`s_i`, in [0, ``final_sparsity``].

    Returns
    -------
    float or ndarray of float64
        A float for a scalar ``step``, an array of ``step``'s shape otherwise.

    Raises
    ------
    TypeError
        If a step is not an integer, or a sparsity not a real number.
    ValueError
        If a sparsity is outside [0, 1], ``initial_sparsity > final_sparsity``,
        or ``end_step <= begin_step``.

    Examples
    --------
    >>> kw = dict(final_sparsity=0.8, begin_step=0, end_step=100)
    >>> [round(gradual_sparsity(t, **kw), 4) for t in (-5, 0, 50, 100, 200)]
    [0.0, 0.0, 0.7, 0.8, 0.8]
    """
    s_f = _check_unit_interval(final_sparsity, "final_sparsity")
    s_i = _check_unit_interval(initial_sparsity, "initial_sparsity")
    if s_i > s_f:
        raise ValueError(
            f"initial_sparsity must not exceed final_sparsity, got {initial_sparsity!r} > "
            f"{final_sparsity!r}"
        )
    t0 = check_int(begin_step, "begin_step")
    t1 = check_int(end_step, "end_step")
    if t1 <= t0:
        raise ValueError(f"end_step must be greater than begin_step, got {t1} <= {t0}")

    if np.ndim(step) == 0:
        t = check_int(step, "step")
        if t <= t0:
            return s_i
        if t >= t1:
            return s_f
        r = 1.0 - (t - t0) / (t1 - t0)
        return min(max(s_f + (s_i - s_f) * (r * r * r), s_i), s_f)   # r * r * r, not r ** 3: the same rounding
    arr = np.asarray(step)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"step must be an integer or an array of integers, got dtype {arr.dtype}")
    frac = np.clip((arr.astype(np.float64) - t0) / (t1 - t0), 0.0, 1.0)
    r = 1.0 - frac
    out = np.clip(s_f + (s_i - s_f) * (r * r * r), s_i, s_f)   # as the scalar branch (numpy's ** 3 may round otherwise)
    out[arr <= t0] = s_i  # exactly s_i, not s_f + (s_i - s_f) rounded
    return out
