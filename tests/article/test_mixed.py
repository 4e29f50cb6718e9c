"""Tests of qlib.mixed: per-tensor choice of quantizer by name (the article's section 3.3)."""

import numpy as np
import pytest

import qlib


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": rng.standard_normal((4, 3)),
        "fc1.bias": rng.standard_normal(4),
        "fc2.weight": rng.standard_normal((2, 4)),
        "fc2.bias": rng.standard_normal(2),
    }


def subint8(t):
    return qlib.subinteger_quantize(t, frac_bits=8)


def test_article_plan_applies_each_scheme(tensors):
    mq = qlib.mixed_quantize(tensors, {"*.weight": subint8, "*.bias": qlib.integer_quantize})
    assert mq.assignment == {
        "fc1.weight": "*.weight", "fc1.bias": "*.bias", "fc2.weight": "*.weight", "fc2.bias": "*.bias",
    }
    for name, t in tensors.items():
        expected = subint8(t) if name.endswith("weight") else qlib.integer_quantize(t)
        np.testing.assert_array_equal(mq[name].codes, expected.codes)
        np.testing.assert_array_equal(mq.dequantize()[name], expected.dequantize())
    assert len(mq) == 4 and list(mq) == list(tensors)


def test_first_matching_pattern_wins(tensors):
    mq = qlib.mixed_quantize(tensors, {"fc2.*": qlib.integer_quantize, "*": subint8})
    assert mq.assignment["fc2.weight"] == "fc2.*"
    assert mq.assignment["fc1.weight"] == "*"
    assert mq["fc1.weight"].frac_bits == 8 and mq["fc2.weight"].frac_bits == 0


def test_mixed_formula_equals_subinteger_formula(tensors):
    # The article's mixed formula is its sub-integer formula: same plan for every tensor gives the same numbers.
    mq = qlib.mixed_quantize(tensors, {"*": subint8})
    for name, t in tensors.items():
        np.testing.assert_array_equal(mq.dequantize()[name], subint8(t).dequantize())


def test_quantizer_returning_array_is_taken_as_reconstruction(tensors):
    mq = qlib.mixed_quantize(tensors, {"*.weight": lambda t: np.round(t, 1), "*": qlib.integer_quantize})
    np.testing.assert_array_equal(mq.dequantize()["fc1.weight"], np.round(tensors["fc1.weight"], 1))


def test_unmatched_tensor_is_an_error(tensors):
    with pytest.raises(ValueError, match="fc1.bias"):
        qlib.mixed_quantize(tensors, {"*.weight": subint8, "fc2.bias": subint8})


def test_pattern_matching_nothing_is_an_error(tensors):
    with pytest.raises(ValueError, match="weights"):
        qlib.mixed_quantize(tensors, {"*.weights": subint8, "*": subint8})


def test_quantizer_errors_name_the_tensor():
    with pytest.raises(ValueError, match="'b'.*constant"):
        qlib.mixed_quantize({"w": np.arange(3.0), "b": np.zeros(3)}, {"*": qlib.integer_quantize})


@pytest.mark.parametrize(
    "tensors_, plan, err, match",
    [
        ([("w", np.arange(3.0))], {"*": subint8}, TypeError, "tensors"),
        ({"w": np.arange(3.0)}, [("*", subint8)], TypeError, "plan"),
        ({}, {"*": subint8}, ValueError, "tensors"),
        ({"w": np.arange(3.0)}, {}, ValueError, "plan"),
        ({"w": np.arange(3.0)}, {"*": "integer"}, TypeError, "callable"),
        ({"w": np.arange(3.0)}, {1: subint8}, TypeError, "plan"),
        ({1: np.arange(3.0)}, {"*": subint8}, TypeError, "tensors"),
        ({"w": np.arange(3.0)}, {"*": lambda t: t.tolist()}, TypeError, "dequantize"),
    ],
)
def test_bad_arguments(tensors_, plan, err, match):
    with pytest.raises(err, match=match):
        qlib.mixed_quantize(tensors_, plan)
