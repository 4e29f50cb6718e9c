"""Checking a reader's implementation against qlib, for the book's from-scratch exercises.

An exercise asks the reader to write a method in plain numpy (a quantizer, the
zero-point integer matrix product, fixed-point requantization); the next cell
calls :func:`~qlib.compare_implementations` with the reader's function, qlib's
and a few inputs, and prints what differs: a wrong shape, a wrong dtype, the
number of values that differ and the first of them, or the exception the
reader's function raised. The worked solution passes the same check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from qlib.core.validation import check_bool, check_real

__all__ = ["ImplementationCheck", "compare_implementations"]


@dataclass(frozen=True)
class ImplementationCheck:
    """What :func:`~qlib.compare_implementations` found.

    Attributes
    ----------
    cases : int
        Number of inputs tried.
    failures : tuple of str
        One line per input on which the two functions disagree (empty when all agree).
    """

    cases: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when the functions agree on every input."""
        return not self.failures

    def __str__(self) -> str:
        if self.passed:
            return f"all {self.cases} cases agree"
        head = f"{len(self.failures)} of {self.cases} cases differ:"
        return "\n".join([head] + ["  " + line.replace("\n", "\n  ") for line in self.failures])


def _describe(args: tuple, kwargs: Mapping) -> str:
    def one(v):
        a = np.asarray(v) if isinstance(v, (np.ndarray, list)) else v
        if isinstance(a, np.ndarray) and a.ndim:
            return f"{a.dtype} array {a.shape}"
        return repr(v)

    parts = [one(v) for v in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _as_tuple(result) -> tuple:
    return tuple(result) if isinstance(result, tuple) else (result,)


def _compare_one(yours, ref, exact: bool, rtol: float, atol: float, check_dtype: bool) -> str | None:
    """``None`` if ``yours`` matches ``ref``, else a short description of the first difference."""
    y, r = np.asarray(yours), np.asarray(ref)
    if y.shape != r.shape:
        return f"shape {y.shape}, expected {r.shape}"
    if check_dtype and y.dtype != r.dtype:
        return f"dtype {y.dtype}, expected {r.dtype}"
    if y.dtype.kind not in "biuf" or r.dtype.kind not in "biuf":
        return None if np.array_equal(y, r) else "values differ"
    yf, rf = y.astype(np.float64), r.astype(np.float64)
    if exact:
        bad = yf != rf
    else:
        bad = ~np.isclose(yf, rf, rtol=rtol, atol=atol)
    bad |= np.isnan(yf) != np.isnan(rf)
    n_bad = int(np.count_nonzero(bad))
    if not n_bad:
        return None
    first = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
    where = f" at index {tuple(int(i) for i in first)}" if first else ""
    largest = float(np.nanmax(np.abs(yf - rf)[bad])) if np.any(~np.isnan(yf - rf)[bad]) else float("nan")
    yv, rv = (y[first].item(), r[first].item()) if first else (y[()].item(), r[()].item())
    return (f"{n_bad} of {bad.size} values differ, largest difference {largest:.6g}\n"
            f"    first{where}: yours {yv!r}, expected {rv!r}")


def compare_implementations(candidate: Callable, reference: Callable, cases: Iterable, *, exact=True,
                            rtol=1e-6, atol=0.0, check_dtype=False) -> ImplementationCheck:
    """Call ``candidate`` and ``reference`` on each input and report where they differ.

    Parameters
    ----------
    candidate, reference : callable
        The reader's function and the reference (usually a qlib function with
        its keywords bound, ``lambda x: qlib.quantize(x, qz)``).
    cases : iterable
        The inputs: each a tuple of positional arguments, a dict of keyword
        arguments, or a single argument.
    exact : bool, default True
        Compare values exactly (integer codes, bit-exact arithmetic); if
        false, with ``numpy.isclose(rtol, atol)``.
    rtol, atol : float
        Tolerances when ``exact=False``.
    check_dtype : bool, default False
        Also require the same dtype.

    Returns
    -------
    ImplementationCheck
        ``str()`` of it is the report to print; ``.passed`` is True when all agree.

    Raises
    ------
    TypeError
        If ``candidate`` or ``reference`` is not callable.

    Examples
    --------
    A quantizer that rounds half away from zero instead of half to even
    differs from qlib's on ties:

    >>> import qlib
    >>> def mine(x, s):
    ...     return np.clip(np.floor(np.abs(x) / s + 0.5) * np.sign(x), -127, 127).astype(np.int8)
    >>> ref = lambda x, s: qlib.quantize(x, s)
    >>> x = np.array([0.5, 1.5, 2.5, -2.5, 3.2], dtype=np.float32)
    >>> print(compare_implementations(mine, ref, [(x, 1.0), (x, 0.1)]))
    1 of 2 cases differ:
      case 1 (float32 array (5,), 1.0): 3 of 5 values differ, largest difference 1
          first at index (0,): yours 1, expected 0
    """
    if not callable(candidate):
        raise TypeError(f"candidate must be callable (your function), got {type(candidate).__name__}")
    if not callable(reference):
        raise TypeError(f"reference must be callable, got {type(reference).__name__}")
    exact = check_bool(exact, "exact")
    check_dtype = check_bool(check_dtype, "check_dtype")
    rtol = check_real(rtol, "rtol", lo=0.0)
    atol = check_real(atol, "atol", lo=0.0)
    failures, n = [], 0
    for n, case in enumerate(cases, start=1):
        if isinstance(case, Mapping):
            args, kwargs = (), dict(case)
        elif isinstance(case, tuple):
            args, kwargs = case, {}
        else:
            args, kwargs = (case,), {}
        label = f"case {n} {_describe(args, kwargs)}"
        expected = _as_tuple(reference(*args, **kwargs))
        try:
            got = _as_tuple(candidate(*args, **kwargs))
        except Exception as exc:  # the reader's code: report, do not crash the check
            failures.append(f"{label}: raised {type(exc).__name__}: {exc}")
            continue
        if len(got) != len(expected):
            failures.append(f"{label}: returned {len(got)} value(s), expected {len(expected)}")
            continue
        for k, (g, e) in enumerate(zip(got, expected)):
            problem = _compare_one(g, e, exact, rtol, atol, check_dtype)
            if problem:
                which = f" (output {k + 1})" if len(expected) > 1 else ""
                failures.append(f"{label}{which}: {problem}")
                break
    return ImplementationCheck(n, tuple(failures))
