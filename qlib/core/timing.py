"""Timing of a function call, for the book's speed comparisons."""

from __future__ import annotations

import timeit

import numpy as np

from qlib.core.validation import check_int

__all__ = ["median_ms"]


def median_ms(f, number=5, repeat=7) -> float:
    """The median over ``repeat`` runs of the time of one call of ``f``, in milliseconds.

    Each run calls ``f()`` ``number`` times in a row (``timeit.repeat``); the
    time of one call is the run's time divided by ``number``. The median of
    the runs resists a run slowed by another process better than the mean.

    Parameters
    ----------
    f : callable
        Called without arguments.
    number : int, default 5
        Calls per run, >= 1.
    repeat : int, default 7
        Runs, >= 1.

    Returns
    -------
    float
        Milliseconds per call.

    Raises
    ------
    TypeError
        If ``f`` is not callable or ``number``/``repeat`` not an integer.
    ValueError
        If ``number`` or ``repeat`` is below 1.

    Examples
    --------
    >>> calls = []
    >>> t = median_ms(lambda: calls.append(1), number=3, repeat=2)
    >>> len(calls), t >= 0.0
    (6, True)
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    n = check_int(number, "number", 1)
    runs = check_int(repeat, "repeat", 1)
    return 1000 * float(np.median(timeit.repeat(f, number=n, repeat=runs))) / n
