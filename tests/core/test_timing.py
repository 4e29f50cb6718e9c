"""Tests of qlib.core.timing: median_ms."""

import timeit

import numpy as np
import pytest

from qlib.core.timing import median_ms


def test_calls_and_units(monkeypatch):
    calls = []
    median_ms(lambda: calls.append(1), number=4, repeat=3)
    assert len(calls) == 12
    runs = iter([[0.010, 0.030, 0.020]])
    monkeypatch.setattr(timeit, "repeat", lambda f, number, repeat: next(runs))
    assert median_ms(lambda: None, number=5, repeat=3) == pytest.approx(1000 * 0.020 / 5)


def test_matches_chapter_4(monkeypatch):
    """Chapter 4's median_ms, on the same (fixed) timings."""
    timings = [0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.05]

    def notebook_median_ms(f, number=5, repeat=7):
        return 1000 * float(np.median(timeit.repeat(f, number=number, repeat=repeat))) / number

    monkeypatch.setattr(timeit, "repeat", lambda f, number, repeat: list(timings))
    assert median_ms(lambda: None) == notebook_median_ms(lambda: None)


def test_bad_input():
    with pytest.raises(TypeError, match="f"):
        median_ms(3)
    with pytest.raises(ValueError, match="number"):
        median_ms(lambda: None, number=0)
    with pytest.raises(TypeError, match="repeat"):
        median_ms(lambda: None, repeat=2.0)
