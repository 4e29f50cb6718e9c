"""Shared by the benchmark scripts: round-robin median timing and the results table."""

from __future__ import annotations

import statistics
import time


def median_times(*fns, repeats: int, warmup: int = 1) -> list[float]:
    """Median wall time of each function, measured round-robin.

    Interleaving the candidates (one call of each per round) exposes them to
    the same machine load, so their ratios stay meaningful on a busy machine.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def print_rows(rows: list[tuple[str, str, float, str]]) -> None:
    """Print ``(case, method, seconds, note)`` rows as a table, each case named once."""
    w_case = max(len(r[0]) for r in rows)
    w_meth = max(len(r[1]) for r in rows)
    header = f"{'case':<{w_case}}  {'method':<{w_meth}}  {'median':>10}  vs baseline"
    print(header)
    print("-" * len(header))
    last = None
    for case, method, sec, note in rows:
        shown = case if case != last else ""
        last = case
        print(f"{shown:<{w_case}}  {method:<{w_meth}}  {sec * 1e3:8.1f}ms  {note}")
