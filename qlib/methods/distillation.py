r"""Knowledge distillation (知识蒸馏): Hinton, Vinyals & Dean (2015), arXiv:1503.02531.

A small *student* network is trained to match the *soft targets* of a large
*teacher*: the teacher's class probabilities at a raised temperature
:math:`T`,

.. math:: p_i = \operatorname{softmax}(t / T)_i = \frac{e^{t_i / T}}{\sum_j e^{t_j / T}},

which reveal how the teacher ranks the wrong classes ("dark knowledge"),
information that a one-hot label lacks. The loss mixes a soft and a hard term
(:func:`~qlib.distillation_loss`):

.. math::

    L = \alpha\, T^2\, \frac{1}{N}\sum_n H\bigl(p^{(n)}, q^{(n)}\bigr)
        + (1 - \alpha)\, \mathrm{CE}(s, y),
    \qquad q = \operatorname{softmax}(s / T),\quad H(p, q) = -\sum_i p_i \log q_i.

Conventions: logits have shape ``(N, C)`` (a batch of :math:`N` rows over
:math:`C` classes); every loss is a **mean over the batch** and is returned as
a Python float; labels are integer class indices of shape ``(N,)`` or rows of
probabilities of shape ``(N, C)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from qlib.core.validation import as_float_array, check_axis

__all__ = [
    "softmax",
    "log_softmax",
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_grad",
]


# ---------------------------------------------------------------------------
# Validation helpers (private)
# ---------------------------------------------------------------------------


def _check_temperature(temperature) -> float:
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"temperature must be a positive real number, got "
            f"{type(temperature).__name__} {temperature!r}"
        )
    t = float(temperature)  # a Python float: never upcasts float32 logits (NEP 50)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    return t


def _check_alpha(alpha) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number in [0, 1], got {type(alpha).__name__} {alpha!r}")
    a = float(alpha)
    if not (0.0 <= a <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def _logits(x, name: str, ndim2: bool = False) -> np.ndarray:
    """Finite float logits, computed in at least float32 (float16 is widened)."""
    arr = as_float_array(x, name)
    if ndim2 and arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {arr.shape}")
    return arr.astype(np.promote_types(arr.dtype, np.float32), copy=False)


def _targets(labels, n: int, c: int, dtype) -> np.ndarray:
    """``labels`` as probability rows of shape (N, C) in ``dtype``."""
    arr = np.asarray(labels)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(
            f"labels must be integer class indices of shape ({n},) or probabilities of "
            f"shape ({n}, {c}), got dtype {arr.dtype}"
        )
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"labels of shape (N,) must be integer class indices, got dtype {arr.dtype}"
            )
        if arr.shape != (n,):
            raise ValueError(
                f"labels must have shape ({n},) to match logits of shape ({n}, {c}), "
                f"got shape {arr.shape}"
            )
        if n and (arr.min() < 0 or arr.max() >= c):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise ValueError(f"labels must be class indices in [0, {c - 1}], got {bad}")
        onehot = np.zeros((n, c), dtype=dtype)
        onehot[np.arange(n), arr] = 1
        return onehot
    if arr.shape != (n, c):
        raise ValueError(
            f"labels must have shape ({n},) (class indices) or ({n}, {c}) (probabilities) "
            f"to match logits of shape ({n}, {c}), got shape {arr.shape}"
        )
    p = as_float_array(arr, "labels").astype(dtype, copy=False)
    if np.any(p < 0):
        raise ValueError(f"labels given as probabilities must be >= 0, got minimum {p.min()!r}")
    tol = max(1e-6, 10 * c * float(np.finfo(dtype).eps))
    sums = p.sum(axis=1)
    if np.any(np.abs(sums - 1) > tol):
        worst = float(sums[np.argmax(np.abs(sums - 1))])
        raise ValueError(
            f"labels given as probabilities must have rows summing to 1 (within {tol:.1e}), "
            f"got a row summing to {worst!r}"
        )
    return p


# ---------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------


def softmax(logits, temperature=1.0, axis=-1) -> np.ndarray:
    r"""Softmax with temperature, numerically stable.

    .. math::

        \operatorname{softmax}(z / T)_i = \frac{e^{(z_i - m)/T}}{\sum_j e^{(z_j - m)/T}},
        \qquad m = \max_j z_j,

    subtracting the maximum so that no exponential overflows (the largest is
    :math:`e^0 = 1`); the result is unchanged mathematically. :math:`T > 1`
    flattens the distribution, :math:`T \to 0` approaches the one-hot argmax.

    Parameters
    ----------
    logits : array_like of float
        Finite, non-empty; integers are converted to float64.
    temperature : float, default 1.0
        :math:`T > 0`, finite.
    axis : int, default -1
        Axis over which the probabilities sum to 1.

    Returns
    -------
    ndarray
        Same shape as ``logits``; float32 for float16/float32 input, else float64.

    Raises
    ------
    TypeError
        If ``logits`` is not numeric, ``temperature`` not a real number or
        ``axis`` not an integer.
    ValueError
        If ``logits`` is empty or not finite, ``temperature <= 0`` or not
        finite, or ``axis`` is out of range.

    Examples
    --------
    >>> z = np.array([1.0, 2.0, 3.0])
    >>> print(np.round(softmax(z), 4))
    [0.09   0.2447 0.6652]
    >>> print(np.round(softmax(z, temperature=4.0), 4))
    [0.2543 0.3265 0.4192]
    >>> print(softmax(np.array([1e4, 0.0])))
    [1. 0.]
    """
    z = _logits(logits, "logits")
    t = _check_temperature(temperature)
    ax = check_axis(axis, z.ndim)
    with np.errstate(over="ignore"):  # (z - m) / T -> -inf for tiny T: exp gives 0
        e = np.exp((z - z.max(axis=ax, keepdims=True)) / t)
    return e / e.sum(axis=ax, keepdims=True)


def log_softmax(logits, temperature=1.0, axis=-1) -> np.ndarray:
    r"""Logarithm of :func:`~qlib.softmax`, computed stably without taking ``log(0)``.

    .. math::

        \log \operatorname{softmax}(z/T)_i = \frac{z_i - m}{T}
            - \log \sum_j e^{(z_j - m)/T}, \qquad m = \max_j z_j.

    Parameters and errors are those of :func:`~qlib.softmax`.

    Examples
    --------
    >>> print(np.round(log_softmax(np.array([1.0, 2.0, 3.0])), 4))
    [-2.4076 -1.4076 -0.4076]
    >>> print(log_softmax(np.array([1e4, 0.0])))  # softmax would give log(0) = -inf
    [     0. -10000.]
    """
    z = _logits(logits, "logits")
    t = _check_temperature(temperature)
    ax = check_axis(axis, z.ndim)
    with np.errstate(over="ignore"):  # -inf for tiny T is the right limit, log 0
        shifted = (z - z.max(axis=ax, keepdims=True)) / t
    return shifted - np.log(np.exp(shifted).sum(axis=ax, keepdims=True))


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def cross_entropy(logits, labels) -> float:
    r"""Mean cross-entropy of ``softmax(logits)`` against ``labels``.

    .. math::

        \mathrm{CE}(s, y) = -\frac{1}{N}\sum_{n=1}^N \sum_{i=1}^C y_{ni}
            \log \operatorname{softmax}(s_n)_i,

    with :math:`y_n` the one-hot row of an integer label or a given row of
    probabilities. For integer labels this is :math:`-\frac1N\sum_n \log
    \operatorname{softmax}(s_n)_{y_n}`, PyTorch's ``F.cross_entropy`` with
    ``reduction="mean"``.

    Parameters
    ----------
    logits : array_like of float, shape (N, C)
    labels : array_like of int, shape (N,), or of float, shape (N, C)
        Class indices in ``[0, C)``, or non-negative rows summing to 1.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``logits`` or ``labels`` is not numeric, or labels of shape (N,) are
        not integers.
    ValueError
        If ``logits`` is not 2-D, empty or not finite, or ``labels`` has the
        wrong shape, an index out of range, a negative probability or a row not
        summing to 1.

    Examples
    --------
    >>> s = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(cross_entropy(s, np.array([0, 2])), 4)  # (0.2395 + log 3) / 2
    0.6691
    >>> round(cross_entropy(s, np.array([[1.0, 0, 0], [0, 0, 1.0]])), 4)
    0.6691
    """
    s = _logits(logits, "logits", ndim2=True)
    n, c = s.shape
    ls = log_softmax(s)
    arr = np.asarray(labels)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        _targets(arr, n, c, s.dtype)  # validation only
        return float(-np.take_along_axis(ls, arr.astype(np.intp)[:, None], axis=1).mean())
    return _mean_cross_entropy(_targets(arr, n, c, s.dtype), ls)


def _mean_cross_entropy(p: np.ndarray, log_q: np.ndarray) -> float:
    """:math:`-\\frac1N \\sum_n \\sum_i p_{ni} \\log q_{ni}` with :math:`0 \\log 0 = 0`."""
    with np.errstate(invalid="ignore"):  # 0 * -inf, replaced by 0 below
        terms = np.where(p > 0, p * log_q, 0.0)
    return float(-terms.sum(axis=1).mean())


def _prepare(student_logits, teacher_logits, labels, temperature, alpha):
    s = _logits(student_logits, "student_logits", ndim2=True)
    t = _logits(teacher_logits, "teacher_logits", ndim2=True)
    if s.shape != t.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got "
            f"{s.shape} and {t.shape}"
        )
    dtype = np.result_type(s, t)
    s, t = s.astype(dtype, copy=False), t.astype(dtype, copy=False)
    temp = _check_temperature(temperature)
    a = _check_alpha(alpha)
    if labels is None:
        if a != 1.0:
            raise ValueError(
                f"labels are required unless alpha == 1 (soft targets only), got alpha={alpha!r}"
            )
        y = None
    else:
        y = _targets(labels, s.shape[0], s.shape[1], dtype)
    return s, t, y, temp, a


def distillation_loss(
    student_logits, teacher_logits, labels=None, *, temperature=4.0, alpha=0.9
) -> float:
    r"""Hinton et al.'s distillation loss, a mean over the batch.

    .. math::

        L = \alpha\, T^2\, \frac{1}{N}\sum_{n} H\!\bigl(\operatorname{softmax}(t_n/T),
            \operatorname{softmax}(s_n/T)\bigr)
            + (1 - \alpha)\, \mathrm{CE}(s, y),
        \qquad H(p, q) = -\sum_i p_i \log q_i .

    **Why** :math:`T^2`: the gradient of the soft term with respect to a
    student logit is :math:`(q_i - p_i)/T`, and for large :math:`T` (logits
    of zero mean) :math:`q_i - p_i \approx (s_i - t_i)/(C\,T)`, so the soft
    gradients shrink as :math:`1/T^2`. Multiplying by :math:`T^2` keeps their
    magnitude comparable to the hard term's as :math:`T` changes, so
    ``alpha`` need not be retuned with ``T`` (Hinton et al., 2015, section 2).

    :math:`H(p, q) = \mathrm{KL}(p \,\|\, q) + H(p)`: the cross-entropy used here
    differs from the KL divergence (PyTorch's usual ``KLDivLoss`` recipe) only
    by the teacher's entropy, a constant for the student, so both give the same
    gradient; this one is not zero when the student matches the teacher.

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float, shape (N, C)
    labels : array_like, optional
        Hard labels for the second term: integer indices of shape (N,) or
        probability rows of shape (N, C). May be ``None`` only when
        ``alpha == 1``.
    temperature : float, default 4.0
        :math:`T > 0`, finite; applied to both teacher and student in the soft
        term, never in the hard term.
    alpha : float, default 0.9
        Weight of the soft term, in [0, 1]. ``alpha=0`` gives exactly
        ``cross_entropy(student_logits, labels)``.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If an argument has the wrong type (see :func:`~qlib.cross_entropy`).
    ValueError
        If the logits are not 2-D, of different shapes, empty or not finite;
        ``temperature`` is not positive and finite; ``alpha`` is outside
        [0, 1]; ``labels`` is ``None`` while ``alpha != 1``, or is invalid.

    Examples
    --------
    >>> s = np.array([[1.0, 0.0, -1.0]])
    >>> t = np.array([[3.0, 1.0, -2.0]])
    >>> round(distillation_loss(s, t, np.array([0]), temperature=2.0, alpha=0.5), 4)
    1.9313

    With ``alpha=0`` only the hard term remains:

    >>> distillation_loss(s, t, np.array([0]), alpha=0.0) == cross_entropy(s, np.array([0]))
    True
    """
    s, t, y, temp, a = _prepare(student_logits, teacher_logits, labels, temperature, alpha)
    loss = 0.0
    if a != 0.0:
        p = softmax(t, temp)
        soft = _mean_cross_entropy(p, log_softmax(s, temp))
        loss += a * temp * temp * soft
    if a != 1.0:
        hard = _mean_cross_entropy(y, log_softmax(s))
        loss += (1.0 - a) * hard
    return loss


def distillation_loss_grad(
    student_logits, teacher_logits, labels=None, *, temperature=4.0, alpha=0.9
) -> np.ndarray:
    r"""Gradient of :func:`~qlib.distillation_loss` with respect to ``student_logits``.

    .. math::

        \frac{\partial L}{\partial s_{ni}} =
            \frac{\alpha\, T}{N}\bigl(q_{ni} - p_{ni}\bigr)
            + \frac{1 - \alpha}{N}\bigl(\operatorname{softmax}(s_n)_i - y_{ni}\bigr),

    with :math:`q = \operatorname{softmax}(s/T)`, :math:`p =
    \operatorname{softmax}(t/T)` and :math:`y` the one-hot (or probability)
    labels. It follows from :math:`\partial H(p, \operatorname{softmax}(z)) /
    \partial z = \operatorname{softmax}(z) - p` (valid because :math:`p` sums
    to 1) and the chain rule through :math:`z = s/T`.

    Parameters, errors
        As :func:`~qlib.distillation_loss`.

    Returns
    -------
    ndarray, shape (N, C)
        In the common dtype of the two logits (float32 when both are
        float16/float32, else float64).

    Examples
    --------
    >>> s = np.array([[1.0, 0.0, -1.0]])
    >>> t = np.array([[3.0, 1.0, -2.0]])
    >>> g = distillation_loss_grad(s, t, np.array([0]), temperature=2.0, alpha=0.5)
    >>> print(np.round(g, 4))
    [[-0.3506  0.1758  0.1747]]
    >>> abs(float(g.sum())) < 1e-12  # each row sums to 0
    True
    """
    s, t, y, temp, a = _prepare(student_logits, teacher_logits, labels, temperature, alpha)
    n = s.shape[0]
    grad = np.zeros_like(s)
    if a != 0.0:
        grad += (a * temp / n) * (softmax(s, temp) - softmax(t, temp))
    if a != 1.0:
        grad += ((1.0 - a) / n) * (softmax(s) - y)
    return grad
