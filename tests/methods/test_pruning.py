"""Tests of qlib.pruning: magnitude pruning, neuron pruning, the cubic schedule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qlib
from qlib import pruning
from qlib.methods.pruning import (
    global_magnitude_prune,
    gradual_sparsity,
    magnitude_prune,
    neuron_norms,
    prune_neurons,
)

SPARSITIES = [0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]


def check_threshold(abs_w, mask):
    """No pruned magnitude exceeds any kept one."""
    if mask.all() or not mask.any():
        return
    assert abs_w[~mask].max() <= abs_w[mask].min()


def test_exported():
    for name in pruning.__all__:
        assert getattr(qlib, name) is getattr(pruning, name)


# ---------------------------------------------------------------------------
# magnitude_prune
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 64, 101, 1000])
@pytest.mark.parametrize("s", SPARSITIES)
def test_exact_count_and_threshold(n, s):
    rng = np.random.default_rng(n)
    w = rng.standard_normal(n)
    pruned, mask = magnitude_prune(w, s)
    k = round(s * n)
    assert mask.dtype == np.bool_ and mask.shape == w.shape
    assert int((~mask).sum()) == k
    assert int(np.count_nonzero(pruned == 0)) == k  # normal draws have no zeros
    assert pruning.sparsity(pruned) == k / n
    np.testing.assert_array_equal(pruned, w * mask)
    check_threshold(np.abs(w), mask)


def test_round_half_to_even_documented():
    w = np.arange(1.0, 11.0)
    assert (~magnitude_prune(w, 0.25)[1]).sum() == 2  # 2.5 -> 2
    assert (~magnitude_prune(w, 0.35)[1]).sum() == round(0.35 * 10)
    assert (~magnitude_prune(w[:6], 0.25)[1]).sum() == 2  # 1.5 -> 2


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_shape_and_new_array(dtype):
    w = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(dtype)
    w_copy = w.copy()
    pruned, mask = magnitude_prune(w, 0.4)
    assert pruned.dtype == dtype and pruned.shape == w.shape and mask.shape == w.shape
    assert not np.shares_memory(pruned, w)
    np.testing.assert_array_equal(w, w_copy)  # input untouched
    assert (~mask).sum() == 24


def test_ties_broken_by_flat_index():
    w = np.array([[0.5, -0.5, 0.5], [0.5, 2.0, -0.5]])
    _, mask = magnitude_prune(w, 0.5)
    np.testing.assert_array_equal(mask, [[False, False, False], [True, True, True]])
    # deterministic: the same call gives the same mask, and all-equal weights
    # are pruned in C order
    np.testing.assert_array_equal(magnitude_prune(w, 0.5)[1], mask)
    _, m = magnitude_prune(np.ones(10), 0.3)
    np.testing.assert_array_equal(m, [False] * 3 + [True] * 7)


def test_negative_zero_and_sign():
    w = np.array([-0.0, 0.0, -3.0, 1.0])
    pruned, mask = magnitude_prune(w, 0.75)
    np.testing.assert_array_equal(mask, [False, False, True, False])
    assert pruned[2] == -3.0


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    w=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 1e-300]),
    ),
    s=st.floats(0.0, 1.0),
)
def test_property_never_prunes_larger(w, s):
    pruned, mask = magnitude_prune(w, s)
    assert int((~mask).sum()) == round(s * w.size)
    check_threshold(np.abs(w), mask)
    np.testing.assert_array_equal(pruned, np.where(mask, w, 0.0))


@pytest.mark.parametrize(
    "w, s, exc, match",
    [
        (np.ones(3), 1.5, ValueError, "sparsity"),
        (np.ones(3), -0.1, ValueError, "sparsity"),
        (np.ones(3), float("nan"), ValueError, "sparsity"),
        (np.ones(3), "0.5", TypeError, "sparsity"),
        (np.ones(3), None, TypeError, "sparsity"),
        (np.ones(3), True, TypeError, "sparsity"),
        (np.array([1, 2, 3]), 0.5, TypeError, "w"),
        (np.array([True, False]), 0.5, TypeError, "w"),
        (np.array([]), 0.5, ValueError, "w"),
        (np.array([1.0, np.nan]), 0.5, ValueError, "w"),
        (np.array([1.0, np.inf]), 0.5, ValueError, "w"),
        (np.array(["a"]), 0.5, TypeError, "w"),
    ],
)
def test_magnitude_prune_bad_input(w, s, exc, match):
    with pytest.raises(exc, match=match):
        magnitude_prune(w, s)


def test_sparsity_accepts_numpy_and_int_scalars():
    w = np.arange(1.0, 5.0)
    assert (~magnitude_prune(w, np.float32(0.5))[1]).sum() == 2
    assert (~magnitude_prune(w, 1)[1]).sum() == 4
    assert magnitude_prune(w, np.int64(0))[1].all()


# ---------------------------------------------------------------------------
# global_magnitude_prune
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("s", SPARSITIES)
def test_global_exact_count_single_threshold(s):
    rng = np.random.default_rng(1)
    tensors = {
        "fc1": rng.standard_normal((8, 5)),
        "fc2": 0.1 * rng.standard_normal((3, 8)).astype(np.float32),
        "bias": 3.0 * rng.standard_normal(7),
    }
    pruned, masks = global_magnitude_prune(tensors, s)
    assert list(pruned) == list(tensors) == list(masks)
    total = sum(t.size for t in tensors.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(s * total)
    for key, t in tensors.items():
        assert pruned[key].dtype == t.dtype and masks[key].shape == t.shape
        np.testing.assert_array_equal(pruned[key], np.where(masks[key], t, 0))
    all_abs = np.concatenate([np.abs(t).ravel().astype(np.float64) for t in tensors.values()])
    all_mask = np.concatenate([m.ravel() for m in masks.values()])
    check_threshold(all_abs, all_mask)
    assert qlib.sparsity(*pruned.values()) == round(s * total) / total


def test_global_differs_from_per_layer_and_matches_single_tensor():
    layers = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([1.0, 2.0, 0.05])}
    _, masks = global_magnitude_prune(layers, 0.5)
    np.testing.assert_array_equal(masks["a"], [False, False, True])
    np.testing.assert_array_equal(masks["b"], [True, True, False])
    w = np.random.default_rng(2).standard_normal((6, 7))
    for s in SPARSITIES:
        p1, m1 = magnitude_prune(w, s)
        p2, m2 = global_magnitude_prune({"w": w}, s)
        np.testing.assert_array_equal(m1, m2["w"])
        np.testing.assert_array_equal(p1, p2["w"])


def test_global_ties_follow_mapping_order():
    _, masks = global_magnitude_prune({"x": np.ones(2), "y": np.ones(2)}, 0.5)
    np.testing.assert_array_equal(masks["x"], [False, False])
    _, masks = global_magnitude_prune({"y": np.ones(2), "x": np.ones(2)}, 0.5)
    np.testing.assert_array_equal(masks["y"], [False, False])


@pytest.mark.parametrize(
    "tensors, s, exc, match",
    [
        ([np.ones(3)], 0.5, TypeError, "tensors"),
        ({}, 0.5, ValueError, "tensors"),
        ({"a": np.ones(3)}, 2.0, ValueError, "sparsity"),
        ({"a": np.ones(3)}, "x", TypeError, "sparsity"),
        ({"a": np.ones(3), "b": np.array([1.0, np.nan])}, 0.5, ValueError, r"tensors\['b'\]"),
        ({"a": np.ones(3), "b": np.array([], dtype=float)}, 0.5, ValueError, r"tensors\['b'\]"),
        ({"a": np.arange(3)}, 0.5, TypeError, r"tensors\['a'\]"),
    ],
)
def test_global_bad_input(tensors, s, exc, match):
    with pytest.raises(exc, match=match):
        global_magnitude_prune(tensors, s)


# ---------------------------------------------------------------------------
# sparsity
# ---------------------------------------------------------------------------


def test_sparsity_counts_exact_zeros():
    assert pruning.sparsity(np.array([0.0, -0.0, 1e-300, np.nan])) == 0.5
    assert pruning.sparsity(np.zeros((2, 3)), np.arange(4)) == 7 / 10
    assert pruning.sparsity(np.ones(3), np.array([])) == 0.0
    assert isinstance(pruning.sparsity(np.ones(2)), float)


def test_sparsity_bad_input():
    with pytest.raises(TypeError, match="at least one"):
        pruning.sparsity()
    with pytest.raises(ValueError, match="arrays"):
        pruning.sparsity(np.array([]), np.zeros((0, 3)))
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        pruning.sparsity(np.ones(2), np.array(["a"]))
    with pytest.raises(TypeError, match=r"arrays\[0\]"):
        pruning.sparsity(np.array([True]))


# ---------------------------------------------------------------------------
# neuron_norms, prune_neurons
# ---------------------------------------------------------------------------


def test_neuron_norms():
    w = np.array([[3.0, 4.0], [1.0, -1.0], [0.0, -0.5]], dtype=np.float32)
    n2 = neuron_norms(w)
    assert n2.dtype == np.float32 and n2.shape == (3,)
    np.testing.assert_allclose(n2, [5.0, np.sqrt(2.0), 0.5], rtol=1e-6)
    np.testing.assert_allclose(neuron_norms(w, ord=1), [7.0, 2.0, 0.5])
    np.testing.assert_allclose(neuron_norms(w, ord=np.inf), [4.0, 1.0, 0.5])
    conv = np.random.default_rng(3).standard_normal((4, 2, 3, 3))
    np.testing.assert_allclose(neuron_norms(conv, ord=1), np.abs(conv).sum(axis=(1, 2, 3)))


@pytest.mark.parametrize(
    "w, ord, exc, match",
    [
        (np.ones(3), 2, ValueError, "w_in"),
        (np.ones((2, 2)), 0.5, ValueError, "ord"),
        (np.ones((2, 2)), 0, ValueError, "ord"),
        (np.ones((2, 2)), "fro", TypeError, "ord"),
        (np.ones((2, 2)), float("nan"), ValueError, "ord"),
        (np.ones((2, 2), dtype=int), 2, TypeError, "w_in"),
    ],
)
def test_neuron_norms_bad_input(w, ord, exc, match):
    with pytest.raises(exc, match=match):
        neuron_norms(w, ord=ord)


def mlp(x, w1, b1, w2, b2):
    return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("ord", [1, 2, np.inf])
def test_prune_neurons_keeps_largest_and_forward(fraction, ord):
    rng = np.random.default_rng(4)
    h, d, k = 12, 5, 3
    w1 = rng.standard_normal((h, d)) * rng.uniform(0.1, 2.0, size=(h, 1))
    b1 = rng.standard_normal(h)
    w2 = rng.standard_normal((k, h))
    b2 = rng.standard_normal(k)
    w1k, b1k, w2k, kept = prune_neurons(w1, b1, w2, fraction, ord=ord)
    r = round(fraction * h)
    assert kept.dtype == np.intp and kept.shape == (h - r,)
    assert np.all(np.diff(kept) > 0)
    removed = np.setdiff1d(np.arange(h), kept)
    norms = neuron_norms(w1, ord=ord)
    if r:
        assert norms[removed].max() <= norms[kept].min()
    np.testing.assert_array_equal(w1k, w1[kept])
    np.testing.assert_array_equal(b1k, b1[kept])
    np.testing.assert_array_equal(w2k, w2[:, kept])
    # the smaller net computes what the original computes with the removed
    # units' contributions zeroed (here through w_out's columns)...
    x = rng.standard_normal((20, d))
    w2_zeroed = w2.copy()
    w2_zeroed[:, removed] = 0.0
    small = mlp(x, w1k, b1k, w2k, b2)
    np.testing.assert_allclose(small, mlp(x, w1, b1, w2_zeroed, b2), rtol=1e-12, atol=1e-12)
    # ...or through zero incoming weights and bias (ReLU(0) = 0)
    w1_zeroed, b1_zeroed = w1.copy(), b1.copy()
    w1_zeroed[removed] = 0.0
    b1_zeroed[removed] = 0.0
    np.testing.assert_allclose(small, mlp(x, w1_zeroed, b1_zeroed, w2, b2), rtol=1e-12, atol=1e-12)


def test_prune_neurons_dead_units_change_nothing():
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((6, 4))
    b1 = rng.standard_normal(6)
    w1[[1, 4]] = 0.0
    b1[[1, 4]] = 0.0
    w2 = rng.standard_normal((2, 6))
    w1k, b1k, w2k, kept = prune_neurons(w1, b1, w2, 2 / 6)
    np.testing.assert_array_equal(kept, [0, 2, 3, 5])
    x = rng.standard_normal((10, 4))
    np.testing.assert_allclose(mlp(x, w1k, b1k, w2k, 0.0), mlp(x, w1, b1, w2, 0.0), rtol=1e-12)


def test_prune_neurons_ties_no_bias_and_dtypes():
    w1 = np.ones((4, 2), dtype=np.float32)
    w2 = np.ones((3, 4), dtype=np.float32)
    w1k, b1k, w2k, kept = prune_neurons(w1, None, w2, 0.5)
    assert b1k is None
    np.testing.assert_array_equal(kept, [2, 3])  # ties: lower index removed first
    assert w1k.dtype == np.float32 and w2k.dtype == np.float32
    assert w1k.shape == (2, 2) and w2k.shape == (3, 2)
    assert not np.shares_memory(w1k, w1)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.ones((4, 2)), np.ones(3), np.ones((3, 4)), 0.5), ValueError, r"b_in.*\(4,\).*\(3,\)"),
        ((np.ones((4, 2)), np.ones(4), np.ones((3, 5)), 0.5), ValueError, r"w_out.*\(4, 2\).*\(3, 5\)"),
        ((np.ones((4, 2)), np.ones(4), np.ones(4), 0.5), ValueError, "w_out"),
        ((np.ones(4), np.ones(4), np.ones((3, 4)), 0.5), ValueError, "w_in"),
        ((np.ones((4, 2, 1)), np.ones(4), np.ones((3, 4)), 0.5), ValueError, "w_in"),
        ((np.ones((4, 2)), np.ones((4, 1)), np.ones((3, 4)), 0.5), ValueError, "b_in"),
        ((np.ones((4, 2)), np.ones(4), np.ones((3, 4)), 1.0), ValueError, "at least one"),
        ((np.ones((4, 2)), np.ones(4), np.ones((3, 4)), 0.9), ValueError, "at least one"),
        ((np.ones((1, 2)), np.ones(1), np.ones((3, 1)), 0.6), ValueError, "at least one"),
        ((np.ones((4, 2)), np.ones(4), np.ones((3, 4)), -0.1), ValueError, "fraction"),
        ((np.ones((4, 2)), np.ones(4), np.ones((3, 4)), "half"), TypeError, "fraction"),
        ((np.ones((4, 2), dtype=int), np.ones(4), np.ones((3, 4)), 0.5), TypeError, "w_in"),
        ((np.ones((4, 2)), np.ones(4), np.full((3, 4), np.nan), 0.5), ValueError, "w_out"),
        ((np.ones((4, 2)), np.array([1.0, np.inf, 0, 0]), np.ones((3, 4)), 0.5), ValueError, "b_in"),
    ],
)
def test_prune_neurons_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        prune_neurons(*args)


def test_prune_neurons_bad_ord():
    with pytest.raises(ValueError, match="ord"):
        prune_neurons(np.ones((4, 2)), np.ones(4), np.ones((3, 4)), 0.5, ord=0)


# ---------------------------------------------------------------------------
# gradual_sparsity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("s_i, s_f", [(0.0, 0.8), (0.1, 0.7), (0.3, 0.3), (0.0, 1.0)])
def test_schedule_endpoints_monotone(s_i, s_f):
    kw = dict(final_sparsity=s_f, begin_step=100, end_step=1100, initial_sparsity=s_i)
    assert gradual_sparsity(100, **kw) == s_i
    assert gradual_sparsity(-7, **kw) == s_i
    assert gradual_sparsity(1100, **kw) == s_f
    assert gradual_sparsity(10**6, **kw) == s_f
    steps = np.arange(0, 1300)
    values = gradual_sparsity(steps, **kw)
    assert values.dtype == np.float64 and values.shape == steps.shape
    assert np.all(np.diff(values) >= 0)
    assert values.min() == s_i and values.max() == s_f
    np.testing.assert_array_equal(values, [gradual_sparsity(int(t), **kw) for t in steps])
    # formula in the middle, and concave (fast first): past the midpoint of
    # the sparsity range before the midpoint in time
    mid = gradual_sparsity(600, **kw)
    np.testing.assert_allclose(mid, s_f + (s_i - s_f) * 0.125, rtol=1e-15)
    assert mid >= (s_i + s_f) / 2


def test_schedule_numpy_ints_and_float_type():
    v = gradual_sparsity(np.int64(5), final_sparsity=0.5, begin_step=np.int32(0), end_step=10)
    assert isinstance(v, float)
    np.testing.assert_allclose(v, 0.5 - 0.5 * 0.125)


@pytest.mark.parametrize(
    "step, kw, exc, match",
    [
        (1.5, {}, TypeError, "step"),
        (np.array([1.0, 2.0]), {}, TypeError, "step"),
        (True, {}, TypeError, "step"),
        (0, {"final_sparsity": 1.2}, ValueError, "final_sparsity"),
        (0, {"final_sparsity": "a"}, TypeError, "final_sparsity"),
        (0, {"initial_sparsity": -0.1}, ValueError, "initial_sparsity"),
        (0, {"initial_sparsity": 0.9}, ValueError, "initial_sparsity"),
        (0, {"begin_step": 10, "end_step": 10}, ValueError, "end_step"),
        (0, {"begin_step": 20}, ValueError, "end_step"),
        (0, {"begin_step": 0.0}, TypeError, "begin_step"),
        (0, {"end_step": None}, TypeError, "end_step"),
    ],
)
def test_schedule_bad_input(step, kw, exc, match):
    args = dict(final_sparsity=0.8, begin_step=0, end_step=10)
    args.update(kw)
    with pytest.raises(exc, match=match):
        gradual_sparsity(step, **args)
