r"""Mixed-precision bit allocation: one bit width per layer, chosen under a size budget.

Layers differ in how much quantization hurts them, so a uniform width wastes
bytes on robust layers and accuracy on sensitive ones. Choosing widths
automatically has two steps, both on *tables* rather than models:

1. :func:`~qlib.layer_sensitivity` measures, for every layer :math:`l` and width
   :math:`b`, the loss increase :math:`\Delta_l(b)` when *only* layer
   :math:`l` is quantized at :math:`b` bits (the "one layer at a time"
   sensitivity of ZeroQ, Cai et al. 2020, arXiv:2001.00281; HAWQ, Dong et
   al. 2019, arXiv:1905.03696, estimates the same quantity from the Hessian
   spectrum instead of measuring it).
2. :func:`~qlib.allocate_bits` assumes the increases *add up*,
   :math:`\Delta(b_1, \dots, b_L) \approx \sum_l \Delta_l(b_l)`, and solves

   .. math::

      \min_{b_1, \dots, b_L} \sum_l \Delta_l(b_l)
      \quad \text{subject to} \quad \sum_l S_l(b_l) \le B,

   where :math:`S_l(b)` is the bytes layer :math:`l` takes at :math:`b` bits
   (packed codes plus scales) and :math:`B` the budget: a *multiple-choice
   knapsack* (Sinha & Zoltners 1979, Operations Research 27(3)), the integer
   program of HAWQ-V3 (Yao et al. 2021, arXiv:2011.10680). HAQ (Wang et al.
   2019, arXiv:1811.08886) searches the same space with reinforcement learning
   and hardware feedback; a table and an exact solver suffice here.

:func:`~qlib.allocation_frontier` gives every Pareto-optimal allocation (no other is
both smaller and cheaper), for plotting predicted loss against bytes, and
:func:`~qlib.pareto_front` the non-dominated points of any measured (bytes, loss)
pairs. The additivity assumption ignores interactions between layers: check
the chosen allocation by evaluating it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from qlib.core.validation import check_choice, check_int, check_real

__all__ = [
    "LayerSensitivity",
    "BitAllocation",
    "layer_sensitivity",
    "allocate_bits",
    "allocation_frontier",
    "pareto_front",
]

_METHODS = ("exact", "greedy")
# Frontier size above which greedy's comparison with the exact optimum is skipped.
_COMPARE_LIMIT = 1_000_000


@dataclass(frozen=True, eq=False)
class LayerSensitivity(Mapping):
    """What :func:`~qlib.layer_sensitivity` returns: ``table[layer][bits]`` = loss increase.

    A read-only mapping of layer -> (mapping of bits -> loss increase over the
    baseline), so it can be given to :func:`~qlib.allocate_bits` as it is.

    Attributes
    ----------
    increase : mapping of layer to (mapping of int to float)
        ``loss[layer][bits] - baseline``; may be negative when quantization
        happens to help.
    loss : mapping of layer to (mapping of int to float)
        The losses ``evaluate({layer: bits})`` returned.
    baseline : float
        The loss of the unquantized model.
    """

    increase: Mapping
    loss: Mapping
    baseline: float

    def __getitem__(self, layer):
        return self.increase[layer]

    def __iter__(self):
        return iter(self.increase)

    def __len__(self) -> int:
        return len(self.increase)

    def __repr__(self) -> str:
        rows = {layer: dict(row) for layer, row in self.increase.items()}
        return f"LayerSensitivity(baseline={self.baseline!r}, increase={rows!r})"


@dataclass(frozen=True)
class BitAllocation:
    """What :func:`~qlib.allocate_bits` returns: one width per layer and its predicted cost.

    Attributes
    ----------
    allocation : dict
        Layer -> chosen bit width, in the order of the sensitivity table.
    nbytes : int
        :math:`\\sum_l S_l(b_l)`, the total size of the allocation.
    cost : float
        :math:`\\sum_l \\Delta_l(b_l)`, the predicted loss increase.
    method : str
        ``"exact"`` or ``"greedy"``.
    budget : int, float or None
        The byte budget it was chosen under, as given (``None`` on the frontier).
    optimal_cost : float or None
        The exact optimum under the same budget: ``cost`` itself for
        ``"exact"``; for ``"greedy"`` computed by the exact solver, or ``None``
        if that was too large to compute (a frontier over a million points).
    """

    allocation: dict
    nbytes: int
    cost: float
    method: str
    budget: int | float | None
    optimal_cost: float | None

    @property
    def gap(self) -> float | None:
        """``cost - optimal_cost`` (>= 0): what the method loses to the exact optimum, or ``None``."""
        return None if self.optimal_cost is None else self.cost - self.optimal_cost


def layer_sensitivity(evaluate, layers, bits, *, baseline=None) -> LayerSensitivity:
    """Measure each layer's loss increase when it alone is quantized, at each width.

    For every layer :math:`l` of ``layers`` (outer loop) and width :math:`b`
    of ``bits`` (inner loop), calls ``evaluate({l: b})`` and records

    .. math:: \\Delta_l(b) = \\mathcal{L}(\\{l: b\\}) - \\mathcal{L}(\\{\\}),

    the "one layer at a time" sensitivity (Cai et al. 2020, ZeroQ,
    arXiv:2001.00281, Sec. 3.3). It takes ``len(layers) * len(bits)`` calls,
    plus one for the baseline ``evaluate({})`` when ``baseline`` is ``None``.
    :func:`~qlib.allocate_bits` then predicts the loss of a mixed allocation as
    :math:`\\sum_l \\Delta_l(b_l)`: it *assumes additivity*, i.e. that the
    errors of different layers do not interact, which holds to second order
    when the Hessian is block diagonal across layers (the HAWQ assumption,
    Dong et al. 2019, arXiv:1905.03696) and should be checked by evaluating
    the chosen allocation.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(widths) -> float``: quantizes ONLY the layers of the dict
        ``widths`` (layer -> bits), e.g. with :func:`~qlib.quantize_per_layer`,
        keeps the others in float, and returns a loss (lower is better), e.g.
        the validation cross-entropy. Each call gets a fresh dict.
    layers : sequence
        Layer names (hashable, distinct), e.g. ``["fc1", "fc2"]``.
    bits : sequence of int
        Widths to try (distinct, >= 1), e.g. ``[2, 3, 4, 8]``.
    baseline : float, optional
        The unquantized loss, if already known; saves a call.

    Returns
    -------
    LayerSensitivity
        ``result[layer][b]`` is :math:`\\Delta_l(b)`; ``result.loss`` the raw
        losses, ``result.baseline`` the baseline.

    Raises
    ------
    TypeError
        If ``evaluate`` is not callable, ``layers``/``bits`` are not sequences
        (a lone string or int), a width is not an integer, or ``evaluate``
        returns something other than a real number.
    ValueError
        If ``layers`` or ``bits`` is empty or has duplicates, a width is < 1,
        or a loss is NaN or infinite.

    Examples
    --------
    A toy loss: each quantized layer adds ``weight * 4**-b`` (the squared step of
    a ``b``-bit grid), exactly additive.

    >>> weight = {"fc1": 16.0, "fc2": 1.0}
    >>> def evaluate(widths):
    ...     return 1.0 + sum(weight[layer] * 4.0 ** -b for layer, b in widths.items())
    >>> s = layer_sensitivity(evaluate, ["fc1", "fc2"], [2, 4])
    >>> s["fc1"][2], s["fc2"][2], s["fc2"][4]
    (1.0, 0.0625, 0.00390625)
    >>> s.baseline
    1.0
    """
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable widths -> loss, got {type(evaluate).__name__}")
    names = _as_sequence(layers, "layers")
    if len(set(names)) != len(names):
        raise ValueError(f"layers must be distinct, got {names!r}")
    widths = [check_int(b, "bits", lo=1) for b in _as_sequence(bits, "bits")]
    if len(set(widths)) != len(widths):
        raise ValueError(f"bits must be distinct, got {widths!r}")
    base = _check_loss(evaluate({}) if baseline is None else baseline,
                       "evaluate({})" if baseline is None else "baseline")
    loss, increase = {}, {}
    for layer in names:
        row = {b: _check_loss(evaluate({layer: b}), f"evaluate({{{layer!r}: {b}}})") for b in widths}
        loss[layer] = MappingProxyType(row)
        increase[layer] = MappingProxyType({b: v - base for b, v in row.items()})
    return LayerSensitivity(MappingProxyType(increase), MappingProxyType(loss), base)


def allocate_bits(sensitivity, sizes, budget, *, method: str = "exact") -> BitAllocation:
    """Choose one width per layer minimizing the summed cost with total bytes <= ``budget``.

    Solves the multiple-choice knapsack
    :math:`\\min \\sum_l \\Delta_l(b_l)` s.t. :math:`\\sum_l S_l(b_l) \\le B`
    (see the module docstring; the cost is additive by assumption).

    ``method="exact"``
        The optimum, by dynamic programming over Pareto sets (Nemhauser &
        Ullmann 1969, Management Science 15(9)): the set of (bytes, cost) of
        partial allocations of the first :math:`k` layers is combined with
        every width of layer :math:`k+1`, and only non-dominated points are
        kept (sorted by bytes, a point survives if its cost is strictly below
        every smaller one's), together with a pointer to the choice that made
        it. Partial sums that cannot fit the budget even with the smallest
        widths of the remaining layers are dropped. No discretization of
        bytes is needed; the work is :math:`O(\\sum_k |F_k| \\, W \\log)` with
        :math:`|F_k|` the frontier size (at most the number of distinct byte
        sums). Among allocations of equal cost, the one of fewest bytes wins.
    ``method="greedy"``
        Start every layer at its largest choice (the widest width, most
        bytes) and, while the total exceeds the budget, apply the single move
        -- one layer to any choice with fewer bytes -- with the smallest cost
        increase per byte saved, :math:`(\\Delta_l(b') - \\Delta_l(b)) /
        (S_l(b) - S_l(b'))` (ties: more bytes saved, then earlier layer). It
        stops as soon as the budget is met, never widens a layer again, and
        can be far from optimal (it may spend a cheap-per-byte but large
        move where a small move would do). The exact optimum is computed too
        and stored in ``optimal_cost``, so ``result.gap`` says what greedy
        lost.

    Parameters
    ----------
    sensitivity : mapping of layer to (mapping of int to float)
        ``sensitivity[layer][b]``: the cost (e.g. loss increase) of layer
        ``layer`` at ``b`` bits; e.g. a :class:`~qlib.LayerSensitivity`. Any finite
        reals, negative allowed.
    sizes : mapping of layer to (mapping of int to int)
        ``sizes[layer][b]``: its bytes at ``b`` bits (packed weights plus
        scales, e.g. from :func:`~qlib.quantize_per_layer` or
        :func:`~qlib.packed_nbytes`); the same layers and widths as
        ``sensitivity``, integers >= 0.
    budget : int or float
        The largest total size allowed, in bytes, >= 0.
    method : {"exact", "greedy"}

    Returns
    -------
    BitAllocation

    Raises
    ------
    TypeError
        If a table is not a mapping of mappings, a width or size is not an
        integer, a cost not a real number, or ``method`` not a string.
    ValueError
        If the tables are empty or do not have the same layers and widths, a
        cost is not finite, a size is negative, ``method`` is unknown, or
        ``budget`` is below the smallest achievable size (the message gives
        that minimum).

    Examples
    --------
    >>> sens = {"fc1": {2: 5.0, 4: 1.0, 8: 0.0}, "fc2": {2: 3.0, 4: 0.2, 8: 0.0}}
    >>> sizes = {"fc1": {2: 200, 4: 400, 8: 800}, "fc2": {2: 20, 4: 40, 8: 80}}
    >>> r = allocate_bits(sens, sizes, budget=850)
    >>> r.allocation, r.nbytes, r.cost
    ({'fc1': 8, 'fc2': 4}, 840, 0.2)
    >>> g = allocate_bits(sens, sizes, budget=850, method="greedy")
    >>> g.allocation, g.nbytes, g.cost, g.gap     # greedy halves fc1 first: 0.0025 per byte
    ({'fc1': 4, 'fc2': 8}, 480, 1.0, 0.8)
    """
    check_choice(method, "method", _METHODS)
    layers, widths, costs, nbytes = _check_tables(sensitivity, sizes)
    cap = check_real(budget, "budget", lo=0)
    smallest = int(sum(s.min() for s in nbytes))
    if cap < smallest:
        raise ValueError(f"budget must be at least {smallest} bytes, the smallest achievable size "
                         f"(every layer at its smallest choice), got {budget!r}")
    if method == "exact":
        return _allocation(layers, widths, costs, nbytes, _pareto_merge(costs, nbytes, cap)[2][-1], method, budget)
    try:
        optimal = float(_pareto_merge(costs, nbytes, cap, limit=_COMPARE_LIMIT)[1][-1])
    except OverflowError:
        optimal = None
    return _allocation(layers, widths, costs, nbytes, _greedy(costs, nbytes, cap), method, budget, optimal)


def allocation_frontier(sensitivity, sizes) -> list[BitAllocation]:
    """Every Pareto-optimal allocation: no other is both smaller and cheaper, sorted by bytes.

    The frontier of the exact solver of :func:`~qlib.allocate_bits` without a budget:
    bytes strictly increase and costs strictly decrease along it, from every
    layer at its smallest choice to the cheapest allocation. ``allocate_bits(s,
    sizes, B)`` is the last point with ``nbytes <= B``. Plot ``[a.nbytes for a
    in front]`` against ``[a.cost for a in front]`` for predicted loss vs size
    (ZeroQ's Pareto frontier, Cai et al. 2020, arXiv:2001.00281).

    Parameters
    ----------
    sensitivity, sizes : mapping of layer to (mapping of int to number)
        As in :func:`~qlib.allocate_bits`.

    Returns
    -------
    list of BitAllocation
        With ``method="exact"``, ``budget=None`` and ``optimal_cost == cost``.

    Raises
    ------
    TypeError, ValueError
        As :func:`~qlib.allocate_bits` for the tables.

    Examples
    --------
    >>> sens = {"a": {2: 3.0, 8: 0.0}, "b": {2: 1.0, 8: 0.0}}
    >>> sizes = {"a": {2: 10, 8: 40}, "b": {2: 10, 8: 40}}
    >>> [(f.allocation, f.nbytes, f.cost) for f in allocation_frontier(sens, sizes)]
    [({'a': 2, 'b': 2}, 20, 4.0), ({'a': 8, 'b': 2}, 50, 1.0), ({'a': 8, 'b': 8}, 80, 0.0)]
    """
    layers, widths, costs, nbytes = _check_tables(sensitivity, sizes)
    _, _, choices = _pareto_merge(costs, nbytes, None)
    return [_allocation(layers, widths, costs, nbytes, choice, "exact", None) for choice in choices]


def pareto_front(points) -> np.ndarray:
    """Indices of the non-dominated (size, cost) points, sorted by size.

    A point is dominated when another has size <= and cost <= with one of
    them strict; lower is better for both (e.g. bytes and measured loss). Of
    exact duplicates the first is kept.

    Parameters
    ----------
    points : array_like, shape (n, 2)
        Rows ``(size, cost)``, finite reals.

    Returns
    -------
    numpy.ndarray of int64
        Row indices of the front, by increasing size (hence decreasing cost).

    Raises
    ------
    TypeError
        If ``points`` is not numeric.
    ValueError
        If it is not of shape (n, 2) with n >= 1, or holds NaN or infinities.

    Examples
    --------
    >>> pareto_front([(100, 0.5), (50, 0.9), (120, 0.5), (60, 1.0), (200, 0.1)])
    array([1, 0, 4])
    """
    arr = np.asarray(points)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"points must be numeric (size, cost) pairs, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"points must have shape (n, 2) with n >= 1, got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("points must be finite, got NaN or infinite values")
    order = np.lexsort((arr[:, 1], arr[:, 0]))  # by size, then cost; stable
    return order[_nondominated(arr[order, 1])].astype(np.int64)


# ---------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------


def _as_sequence(value, name: str) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence (e.g. a list), got {type(value).__name__} {value!r}")
    items = list(value)
    if not items:
        raise ValueError(f"{name} must not be empty")
    return items


def _check_loss(value, name: str) -> float:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must return a real number (the loss), got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite loss, got {v!r}")
    return v


def _check_tables(sensitivity, sizes):
    """Layers, per-layer widths (ascending), cost arrays (float64) and size arrays (int64)."""
    for table, name in ((sensitivity, "sensitivity"), (sizes, "sizes")):
        if not isinstance(table, Mapping):
            raise TypeError(f"{name} must be a mapping layer -> (mapping bits -> value), got {type(table).__name__}")
    if len(sensitivity) == 0:
        raise ValueError("sensitivity must have at least one layer")
    missing = [layer for layer in sensitivity if layer not in sizes]
    extra = [layer for layer in sizes if layer not in sensitivity]
    if missing or extra:
        problems = ([f"sizes lacks {missing}"] if missing else []) + ([f"sizes has extra {extra}"] if extra else [])
        raise ValueError(f"sensitivity and sizes must have the same layers: {'; '.join(problems)}")
    layers, widths, costs, nbytes = list(sensitivity), [], [], []
    for layer in layers:
        row_c, row_s = sensitivity[layer], sizes[layer]
        for row, name in ((row_c, "sensitivity"), (row_s, "sizes")):
            if not isinstance(row, Mapping):
                raise TypeError(f"{name}[{layer!r}] must be a mapping bits -> value, got {type(row).__name__}")
            if len(row) == 0:
                raise ValueError(f"{name}[{layer!r}] must have at least one bit width")
        keys = sorted(check_int(b, f"a bit width of sensitivity[{layer!r}]", lo=1) for b in row_c)
        keys_s = sorted(check_int(b, f"a bit width of sizes[{layer!r}]", lo=1) for b in row_s)
        if keys != keys_s:
            raise ValueError(f"sensitivity[{layer!r}] has widths {keys} but sizes[{layer!r}] has {keys_s}: "
                             "they must match")
        widths.append(keys)
        costs.append(np.array([check_real(row_c[b], f"sensitivity[{layer!r}][{b}]") for b in keys]))
        nbytes.append(np.array([check_int(row_s[b], f"sizes[{layer!r}][{b}]", lo=0) for b in keys], dtype=np.int64))
    return layers, widths, costs, nbytes


def _nondominated(cost_sorted) -> np.ndarray:
    """Mask of points, already sorted by (bytes, cost), whose cost is below every earlier one."""
    keep = np.ones(cost_sorted.shape[0], dtype=bool)
    if cost_sorted.shape[0] > 1:
        keep[1:] = cost_sorted[1:] < np.minimum.accumulate(cost_sorted)[:-1]
    return keep


def _pareto_merge(costs, nbytes, budget, limit=None):
    """Exact Pareto frontier of sum-of-choices: (bytes, cost, choices) sorted by bytes.

    ``choices[i, l]`` is the index into layer ``l``'s widths of frontier point ``i``.
    With a ``budget``, only points that can still fit are kept. Raises
    ``OverflowError`` when a frontier exceeds ``limit`` candidate points.
    """
    remaining = np.cumsum([int(s.min()) for s in nbytes][::-1])[::-1].tolist()[1:] + [0]
    fb, fc = np.zeros(1, dtype=np.int64), np.zeros(1)
    parents, picks = [], []
    for k, (c, s) in enumerate(zip(costs, nbytes)):
        if limit is not None and fb.size * s.size > limit:
            raise OverflowError("frontier too large")
        b = (fb[:, None] + s[None, :]).ravel()
        cc = (fc[:, None] + c[None, :]).ravel()
        parent = np.repeat(np.arange(fb.size), s.size)
        pick = np.tile(np.arange(s.size), fb.size)
        if budget is not None:
            fits = b + remaining[k] <= budget
            b, cc, parent, pick = b[fits], cc[fits], parent[fits], pick[fits]
        order = np.lexsort((cc, b))
        b, cc, parent, pick = b[order], cc[order], parent[order], pick[order]
        keep = _nondominated(cc)
        fb, fc = b[keep], cc[keep]
        parents.append(parent[keep])
        picks.append(pick[keep])
    choices = np.empty((fb.size, len(costs)), dtype=np.int64)
    idx = np.arange(fb.size)
    for k in range(len(costs) - 1, -1, -1):
        choices[:, k] = picks[k][idx]
        idx = parents[k][idx]
    return fb, fc, choices


def _greedy(costs, nbytes, budget) -> list[int]:
    """Greedy descent from the largest choices; see :func:`~qlib.allocate_bits`."""
    # Start: most bytes; ties -> lower cost, then wider width (higher index).
    cur = [max(range(s.size), key=lambda j, s=s, c=c: (s[j], -c[j], j)) for c, s in zip(costs, nbytes)]
    total = sum(int(s[j]) for s, j in zip(nbytes, cur))
    while total > budget:
        best = None
        for layer, (c, s) in enumerate(zip(costs, nbytes)):
            j = cur[layer]
            for t in range(s.size):
                saved = int(s[j] - s[t])
                if saved <= 0:
                    continue
                key = ((c[t] - c[j]) / saved, -saved, layer, -t)
                if best is None or key < best[0]:
                    best = (key, layer, t, saved)
        # Always found: the budget check of allocate_bits guarantees a smaller choice exists.
        _, layer, t, saved = best
        cur[layer] = t
        total -= saved
    return cur


def _allocation(layers, widths, costs, nbytes, choice, method, budget, optimal=None) -> BitAllocation:
    """The result for ``choice`` (per-layer width indices); ``optimal`` defaults to its own cost if exact."""
    choice = [int(j) for j in choice]
    allocation = {layer: widths[k][j] for k, (layer, j) in enumerate(zip(layers, choice))}
    total = int(sum(int(nbytes[k][j]) for k, j in enumerate(choice)))
    cost = float(sum(float(costs[k][j]) for k, j in enumerate(choice)))
    return BitAllocation(allocation, total, cost, method, budget, cost if method == "exact" else optimal)
