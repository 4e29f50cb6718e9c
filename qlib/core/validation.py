"""Input checks shared by every qlib module.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right
kind, wrong value) with a message that names the argument and says what was
expected, so that a reader never meets a bare numpy error from qlib.
"""

from __future__ import annotations

import operator

import numpy as np

__all__: list[str] = []


def as_float_array(x, name: str = "x", *, allow_int: bool = True) -> np.ndarray:
    """Return ``x`` as a finite, non-empty floating-point array.

    Integer (and bool-free) input is converted to float64 when ``allow_int``
    is true, as the article's own examples quantize ``np.array([1, 2, 3])``.
    Float16/32/64 input keeps its dtype.
    """
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(
            f"{name} must be an array of real numbers, got dtype {arr.dtype}"
        )
    if np.issubdtype(arr.dtype, np.integer):
        if not allow_int:
            raise TypeError(
                f"{name} must be a floating-point array, got integer dtype {arr.dtype}; "
                f"convert it first, e.g. {name}.astype(np.float32)"
            )
        arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} must be finite, got {n_bad} NaN or infinite value(s)"
        )
    return arr


def check_int(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as a Python int in ``[lo, hi]``.

    Accepts Python and numpy integers; rejects bools, floats (even ``4.0``) and
    anything else with a ``TypeError``, and out-of-range values with a
    ``ValueError``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if (lo is not None and ivalue < lo) or (hi is not None and ivalue > hi):
        if hi is None:
            expect = f">= {lo}"
        elif lo is None:
            expect = f"<= {hi}"
        else:
            expect = f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {expect}, got {ivalue}")
    return ivalue


def check_axis(axis, ndim: int, name: str = "axis") -> int:
    """Return ``axis`` normalized to ``[0, ndim)``; negative values count from the end."""
    ax = check_int(axis, name)
    if not -ndim <= ax < ndim:
        raise ValueError(
            f"{name} must be in [{-ndim}, {ndim - 1}] for an array of {ndim} dimension(s), got {ax}"
        )
    return ax % ndim


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``; ``TypeError`` otherwise.

    qlib never draws from numpy's global state: every random function takes a
    seeded generator, so that results are reproducible.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name} must be a numpy.random.Generator, e.g. np.random.default_rng(0), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of the strings ``choices``; ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
