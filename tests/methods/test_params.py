"""Tests of qlib.methods.params: the one rule for which tensors are weights."""

import numpy as np
import pytest

import qlib
from qlib.methods.params import is_weight, weight_names, weights_of


def test_rule():
    assert is_weight("fc1.weight", np.zeros((3, 2)))
    assert is_weight("conv.weight", np.zeros((4, 3, 3, 3)))
    assert is_weight("embedding", np.zeros((10, 4)))
    assert not is_weight("fc1.bias", np.zeros(3))
    assert not is_weight("fc1.bias", np.zeros((3, 1)))  # a bias stored as a column
    assert not is_weight("norm.weight", np.ones(3))  # 1-D: a scale vector
    assert not is_weight("scalar", np.float32(1.0))
    with pytest.raises(TypeError, match="name"):
        is_weight(3, np.zeros((2, 2)))


def test_names_and_tensors_of_a_model():
    model = qlib.MLP.init((4, 5, 3), np.random.default_rng(0))
    assert weight_names(model) == weight_names(model.params) == ["fc1.weight", "fc2.weight"]
    w = weights_of(model)
    assert list(w) == ["fc1.weight", "fc2.weight"] and w["fc1.weight"] is model.params["fc1.weight"]


def test_weights_of_matches_chapter_4():
    """Chapter 4's weights_of(model): the names ending in ".weight"; the same tensors for an MLP."""
    model = qlib.MLP.init((64, 64, 10), np.random.default_rng(1))
    notebook = {n: t for n, t in model.params.items() if n.endswith(".weight")}
    got = weights_of(model)
    assert list(got) == list(notebook) and all(got[n] is notebook[n] for n in notebook)


def test_every_method_uses_the_rule():
    model = qlib.MLP.init((4, 5, 3), np.random.default_rng(2))
    wq = qlib.fake_quantize_weights(model.params, bits=2)
    changed = [n for n in model.params if not np.array_equal(wq[n], model.params[n])]
    assert changed == weight_names(model)
    r = qlib.quantize_params(model.params, "uniform", 4)
    assert list(r.codes) == weight_names(model)


def test_bad_input():
    with pytest.raises(TypeError, match="params"):
        weight_names([np.zeros((2, 2))])
    with pytest.raises(TypeError, match="params"):
        weights_of(3)
