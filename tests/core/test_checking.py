"""Tests of qlib.core.checking: comparing a reader's function with qlib's."""

import numpy as np
import pytest

import qlib
from qlib.core.checking import compare_implementations

X = np.array([[0.5, -1.5, 2.25], [3.0, -0.2, 0.0]], dtype=np.float32)


def reference(x):
    return qlib.quantize(x, 0.5)


def test_identical_functions_agree():
    report = compare_implementations(reference, reference, [X, X[:1]])
    assert report.passed and report.cases == 2 and str(report) == "all 2 cases agree"


def test_a_wrong_rounding_is_reported_with_its_first_difference():
    def half_up(x):
        return np.clip(np.floor(x / 0.5 + 0.5), -128, 127).astype(np.int8)

    report = compare_implementations(half_up, reference, [X])
    assert not report.passed
    assert "1 of 6 values differ" in str(report) and "first at index (0, 2): yours 5, expected 4" in str(report)


def test_shape_dtype_exceptions_and_output_count_are_reported():
    cases = [X]
    flat = compare_implementations(lambda x: reference(x).ravel(), reference, cases)
    assert "shape (6,), expected (2, 3)" in str(flat)
    wrong_dtype = compare_implementations(lambda x: reference(x).astype(np.int32), reference, cases, check_dtype=True)
    assert "dtype int32, expected int8" in str(wrong_dtype)
    assert compare_implementations(lambda x: reference(x).astype(np.int32), reference, cases).passed

    def broken(x):
        raise ValueError("not yet")

    assert "raised ValueError: not yet" in str(compare_implementations(broken, reference, cases))
    two = compare_implementations(lambda x: (reference(x), 0), reference, cases)
    assert "returned 2 value(s), expected 1" in str(two)


def test_tolerance_and_keyword_cases():
    def ref(x, scale):
        return qlib.dequantize(qlib.quantize(x, scale), scale)

    def close(x, scale):
        return ref(x, scale) * np.float32(1 + 1e-6)

    assert not compare_implementations(close, ref, [{"x": X, "scale": 0.25}]).passed
    assert compare_implementations(close, ref, [{"x": X, "scale": 0.25}], exact=False, rtol=1e-5).passed


def test_errors():
    with pytest.raises(TypeError, match="candidate must be callable"):
        compare_implementations(None, reference, [X])
    with pytest.raises(TypeError, match="exact must be True or False"):
        compare_implementations(reference, reference, [X], exact=1)
