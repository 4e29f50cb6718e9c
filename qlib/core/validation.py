"""Input checks shared by every qlib module.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right
kind, wrong value) with a message that names the argument and says what was
expected, so that a reader never meets a bare numpy error from qlib.
"""

from __future__ import annotations

import math
import numbers
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


def check_bool(value, name: str) -> bool:
    """Return ``value`` as a Python bool; ``TypeError`` for anything but ``True``/``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_real(value, name: str, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> float:
    """Return ``value`` as a finite Python float in the interval from ``lo`` to ``hi``.

    ``lo_open``/``hi_open`` exclude the end points. Bools, strings and arrays
    are a ``TypeError``; NaN, infinities and values outside the interval a
    ``ValueError`` whose message states the interval.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)  # a Python float: never upcasts float32 arrays it meets (NEP 50)
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    high_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if not math.isfinite(v) or low_bad or high_bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"{name} must be a finite real number in {interval}, got {value!r}")
    return v


def as_int_array(x, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array of an integer dtype (bools and floats refused).

    An empty Python sequence counts as integer (``np.asarray([])`` is float64).
    Integer types of the ``ml_dtypes`` package (``int4``, ``uint4``, ``int2``,
    ``uint2``, as ONNX's test data hand out) are widened to ``int8``/``uint8``.
    """
    arr = np.asarray(x)
    if arr.size == 0 and not isinstance(x, np.ndarray) and arr.dtype == np.float64:
        return arr.astype(np.int64)
    if arr.dtype.name in _NARROW_INT_TYPES:
        return arr.astype(_NARROW_INT_TYPES[arr.dtype.name])
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        hint = ""
        if np.issubdtype(arr.dtype, np.floating):
            hint = "; round and cast first, e.g. np.rint(x).astype(np.int8)"
        raise TypeError(f"{name} must be an array of integers, got dtype {arr.dtype}{hint}")
    return arr


#: ml_dtypes' sub-byte integer types, by dtype name, and the numpy type that holds them.
_NARROW_INT_TYPES = {"int2": np.int8, "int4": np.int8, "uint2": np.uint8, "uint4": np.uint8}


def check_bits(bits, name: str = "bits") -> int:
    """Return ``bits`` as a Python int in [2, 16], the widths of qlib's integer grids.

    ``bits=1`` is refused: a signed 1-bit grid would be ``{-1, 0}``, not sign
    quantization.
    """
    return check_int(bits, name, 2, 16)
