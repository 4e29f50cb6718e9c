r"""Non-uniform (codebook) quantization: k-means weight sharing.

A uniform quantizer places its :math:`2^b` levels on an evenly spaced grid.
A *codebook* quantizer stores any :math:`k = 2^b` real levels
:math:`c_0 \le \dots \le c_{k-1}` (the codebook) and, for every value, the
``b``-bit index of its nearest level:

.. math::

    i(x) = \arg\min_j |x - c_j|, \qquad \hat x = c_{i(x)} .

Deep Compression (Han, Mao and Dally, ICLR 2016, arXiv:1510.00149, section 3,
"trained quantization and weight sharing") chooses the codebook of each layer
by **k-means** on the layer's weights, which minimizes the within-cluster sum
of squares :math:`\sum_i (x_i - c_{i(x_i)})^2`, and finds that the *linear*
initialization, :math:`k` levels evenly spaced over :math:`[\min x, \max x]`,
works best: unlike random (Forgy) or density-based initialization it keeps
levels on the rare large weights, which matter most.

- :func:`~qlib.kmeans_quantize` runs Lloyd's algorithm on the values and
  returns a :class:`~qlib.CodebookQuantized` (codebook, indices, size);
- :func:`~qlib.assign_to_codebook` maps values to the nearest entry of any
  sorted codebook (NF4's, for instance: :func:`qlib.nf4_quantize`).

**Lloyd's algorithm in one dimension** alternates two steps, each of which
can only lower the squared error, so the error never increases:

1. *assignment*: with the codebook sorted, the nearest level changes at the
   midpoints :math:`m_j = (c_j + c_{j+1})/2`, so the cluster of :math:`x`
   is the number of midpoints below it, ``np.searchsorted(midpoints, x)``
   (:math:`O(n \log k)`; a value exactly on a midpoint goes to the **lower**
   level). On the sorted data the clusters are contiguous runs, found with
   :math:`k - 1` binary searches;
2. *update*: each level moves to the (weighted) mean of its cluster.

It stops when an update leaves the assignment unchanged (``converged``: a
fixed point, the codebook can no longer change) or after ``iters`` updates.

**Empty clusters** (a level that no value is nearest to, as a linear
initialization produces whenever the data have a gap) would waste a code.
Each one, in increasing order of its level, is moved onto the value with
the largest (weighted) squared error to its cluster's updated mean, the
first such value in sorted order on ties, then the values equal to it are
excluded for the next empty cluster. This is deterministic, and cannot raise
the error: the moved level sits on a value it then represents exactly. When
no value has a positive error (fewer distinct values than levels) the level
stays where it is, unused. The codebook is sorted after every update.

Everything is computed in float64 on the sorted data; the codebook returned
is float32, the precision Deep Compression stores (its compression-rate
formula charges :math:`b = 32` bits per shared weight). Deep Compression
then fine-tunes the shared levels by gradient descent on the whole network;
that is a training method, not this primitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlib.core.packing import packed_nbytes
from qlib.core.validation import as_float_array, check_choice, check_int, check_rng

__all__ = ["CodebookQuantized", "kmeans_quantize", "assign_to_codebook"]


def _check_codebook(codebook) -> np.ndarray:
    cb = as_float_array(codebook, "codebook")
    if cb.ndim != 1:
        raise ValueError(f"codebook must be 1-D, got shape {cb.shape}")
    if cb.size > 1 << 16:
        raise ValueError(f"codebook must have at most 65536 entries, got {cb.size}")
    if np.any(np.diff(cb) < 0):
        raise ValueError("codebook must be sorted in increasing order; sort it first, e.g. np.sort(codebook)")
    return cb


def assign_to_codebook(x, codebook) -> np.ndarray:
    r"""Index of the nearest codebook entry of every value: :math:`\arg\min_j |x - c_j|`.

    The codebook is sorted, so the answer changes only at the midpoints
    :math:`(c_j + c_{j+1})/2`: the index is the number of midpoints strictly
    below :math:`x` (``np.searchsorted``, :math:`O(n \log k)`). A value exactly
    on a midpoint goes to the lower entry; of equal entries, the first.

    Parameters
    ----------
    x : array_like of real numbers
        Finite, non-empty.
    codebook : array_like of real numbers
        1-D, sorted in non-decreasing order, finite, 1 to 65536 entries.

    Returns
    -------
    numpy.ndarray
        Indices of ``x``'s shape, ``uint8`` for at most 256 entries, else
        ``uint16``.

    Raises
    ------
    TypeError
        If ``x`` or ``codebook`` is not an array of real numbers.
    ValueError
        If either is empty or non-finite, or the codebook is not 1-D and sorted.

    Examples
    --------
    >>> assign_to_codebook([-3.0, 0.4, 0.5, 0.6, 9.0], [-1.0, 0.0, 1.0])
    array([0, 1, 1, 2, 2], dtype=uint8)
    """
    xa = as_float_array(x, "x")
    cb = _check_codebook(codebook).astype(np.float64)
    mids = (cb[:-1] + cb[1:]) / 2
    idx = np.searchsorted(mids, xa.astype(np.float64, copy=False), side="left")
    return idx.astype(np.uint8 if cb.size <= 256 else np.uint16).reshape(xa.shape)


@dataclass(frozen=True, eq=False)
class CodebookQuantized:
    """A tensor quantized to a codebook: ``codebook[indices]`` approximates it.

    Attributes
    ----------
    codebook : numpy.ndarray
        float32, shape ``(2**bits,)``, sorted (read-only).
    indices : numpy.ndarray
        uint8, the shape of the quantized tensor (read-only).
    bits : int
        Width of an index, 1 to 8.
    n_iter : int
        Lloyd updates performed.
    converged : bool
        Whether the last update left the assignment unchanged (a fixed point).
    """

    codebook: np.ndarray
    indices: np.ndarray
    bits: int
    n_iter: int
    converged: bool

    def dequantize(self) -> np.ndarray:
        """The reconstruction ``codebook[indices]``, float32, of the tensor's shape."""
        return self.codebook[self.indices]

    @property
    def nbytes(self) -> int:
        """Storage in bytes: the indices packed at ``bits`` each, plus the float32 codebook.

        ``qlib.packed_nbytes(indices.size, bits) + 4 * 2**bits``, which is
        Deep Compression's count :math:`n \\log_2 k + 32 k` bits (rounded up to
        whole bytes). A float16 codebook would save ``2 * 2**bits`` bytes,
        negligible for any real layer.
        """
        return packed_nbytes(self.indices.size, self.bits) + int(self.codebook.nbytes)

    def __repr__(self) -> str:
        return (f"CodebookQuantized(bits={self.bits}, shape={self.indices.shape}, "
                f"n_iter={self.n_iter}, converged={self.converged})")


def _initial_codebook(xs: np.ndarray, w: np.ndarray | None, k: int, init: str, rng) -> np.ndarray:
    """The k starting levels, from the sorted data ``xs``, as Han et al. section 3.1 lists them."""
    if init == "linear":
        return np.linspace(xs[0], xs[-1], k)
    if init == "density":  # levels where the (weighted) CDF crosses (2j + 1) / 2k
        cdf = np.cumsum(w) if w is not None else np.arange(1, xs.size + 1, dtype=np.float64)
        targets = (2 * np.arange(k) + 1) / (2 * k) * cdf[-1]
        return xs[np.minimum(np.searchsorted(cdf, targets), xs.size - 1)]
    return np.sort(rng.choice(xs, size=k, replace=xs.size < k))  # "random": Forgy


def _partition(xs: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Start of each cluster's run in the sorted data (length k + 1, ends with n)."""
    mids = (c[:-1] + c[1:]) / 2
    inner = np.searchsorted(xs, mids, side="right")  # values on a midpoint go to the lower level
    return np.concatenate(([0], inner, [xs.size]))


def _update(xs: np.ndarray, w: np.ndarray | None, starts: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Lloyd's update: cluster means, then empty clusters re-seated; the new codebook, sorted."""
    counts = np.diff(starts)
    first = starts[:-1][counts > 0]  # runs between consecutive non-empty starts are the clusters
    wsum = np.zeros_like(c)
    sums = np.zeros_like(c)
    wsum[counts > 0] = counts[counts > 0] if w is None else np.add.reduceat(w, first)
    sums[counts > 0] = np.add.reduceat(xs if w is None else w * xs, first)
    full = wsum > 0
    new = c.copy()
    new[full] = sums[full] / wsum[full]
    empty = np.flatnonzero(~full)
    if empty.size:
        labels = np.repeat(np.arange(c.size), counts)
        err = (xs - new[labels]) ** 2  # to the updated means
        if w is not None:
            err *= w
        for j in empty:
            i = int(np.argmax(err))
            if err[i] <= 0:
                break
            new[j] = xs[i]
            err[xs == xs[i]] = 0.0
    return np.sort(new)


def kmeans_quantize(x, bits, *, iters=30, init="linear", sample_weight=None, rng=None) -> CodebookQuantized:
    r"""Quantize ``x`` to a k-means codebook of :math:`2^b` levels (Deep Compression's weight sharing).

    Lloyd's algorithm on the values of ``x`` (flattened), minimizing
    :math:`\sum_i w_i (x_i - c_{i(x_i)})^2` over the codebook :math:`c` and
    the assignment :math:`i(\cdot)`; see the module documentation for the
    assignment, the empty-cluster rule and convergence. Han, Mao and Dally
    (2016, arXiv:1510.00149), section 3.

    Parameters
    ----------
    x : array_like of real numbers
        The tensor, finite and non-empty, any shape.
    bits : int
        Index width, 1 to 8: a codebook of ``2**bits`` levels.
    iters : int, default 30
        Maximum number of Lloyd updates, ``>= 0``. With 0, the initial
        codebook is returned with the nearest-level assignment.
    init : {"linear", "density", "random"}, default "linear"
        Initial levels: evenly spaced over :math:`[\min x, \max x]` (the
        paper's recommendation); at the :math:`(2j+1)/2k` quantiles of the
        (weighted) values (the paper's "density-based"); or ``2**bits`` values
        drawn from ``x`` (Forgy; needs ``rng``).
    sample_weight : array_like of real numbers, optional
        Non-negative weight of each value, of ``x``'s shape, not all zero
        (an importance, e.g. a diagonal Fisher or Hessian estimate, as
        SqueezeLLM's sensitivity-weighted k-means, Kim et al. 2023,
        arXiv:2306.07629). Levels move to weighted means; a cluster of total
        weight 0 counts as empty. ``None``: all weights 1.
    rng : numpy.random.Generator, optional
        Only for ``init="random"`` (required then).

    Returns
    -------
    CodebookQuantized
        ``codebook`` (float32, ``2**bits`` levels, sorted), ``indices``
        (uint8, ``x``'s shape), ``n_iter``, ``converged``; ``.dequantize()``
        and ``.nbytes``.

    Raises
    ------
    TypeError
        If ``x`` or ``sample_weight`` is not an array of real numbers, ``bits``
        or ``iters`` not an integer, ``init`` not a string, or ``rng`` not a
        ``numpy.random.Generator`` when required.
    ValueError
        If ``x`` is empty or non-finite, ``bits`` is outside ``[1, 8]``,
        ``iters`` negative, ``init`` unknown, ``sample_weight`` of another
        shape, negative or all zero, or ``rng`` given without ``init="random"``.

    Examples
    --------
    Data with four distinct values are recovered exactly at 2 bits:

    >>> x = np.array([0.0, 1.0, 1.0, 2.0, 10.0, 0.0])
    >>> cq = kmeans_quantize(x, bits=2)
    >>> cq.codebook
    array([ 0.,  1.,  2., 10.], dtype=float32)
    >>> cq.indices, cq.converged
    (array([0, 1, 1, 2, 3, 0], dtype=uint8), True)

    On 1000 Gaussian values, the linear initialization keeps a level out on
    the smallest value (-3.9), as the paper intends; 1000 3-bit indices take
    375 bytes, the float32 codebook 32:

    >>> w = np.random.default_rng(0).normal(size=1000)
    >>> cq = kmeans_quantize(w, bits=3)
    >>> np.round(cq.codebook, 2)
    array([-3.18, -1.92, -1.17, -0.54, -0.02,  0.55,  1.2 ,  2.01],
          dtype=float32)
    >>> cq.n_iter, cq.converged, cq.nbytes
    (22, True, 407)
    """
    xa = as_float_array(x, "x")
    b = check_int(bits, "bits", 1, 8)
    n_max = check_int(iters, "iters", 0)
    init = check_choice(init, "init", ("linear", "density", "random"))
    if init == "random":
        check_rng(rng)
    elif rng is not None:
        raise ValueError(f"rng is used only with init='random', got init={init!r}")
    flat = xa.astype(np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    xs = flat[order]
    w = None
    if sample_weight is not None:
        wa = as_float_array(sample_weight, "sample_weight")
        if wa.shape != xa.shape:
            raise ValueError(f"sample_weight must have the shape of x {xa.shape}, got {wa.shape}")
        if np.any(wa < 0) or not np.any(wa > 0):
            raise ValueError("sample_weight must be non-negative and not all zero")
        w = wa.astype(np.float64).ravel()[order]
    k = 1 << b
    c = np.sort(_initial_codebook(xs, w, k, init, rng).astype(np.float64))
    starts = _partition(xs, c)
    n_iter, converged = 0, False
    while n_iter < n_max:
        c = _update(xs, w, starts, c)
        n_iter += 1
        new_starts = _partition(xs, c)
        if np.array_equal(new_starts, starts):
            converged = True
            break
        starts = new_starts
    codebook = c.astype(np.float32)
    # the returned assignment is nearest-level to the float32 codebook actually stored
    indices = assign_to_codebook(xa, codebook)
    codebook.flags.writeable = False
    indices.flags.writeable = False
    return CodebookQuantized(codebook=codebook, indices=indices, bits=b, n_iter=n_iter, converged=converged)
