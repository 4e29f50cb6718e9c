"""Tests of qlib.methods.unit_pruning: structural pruning of every hidden layer."""

import numpy as np
import pytest

import qlib
from qlib.methods.unit_pruning import prune_hidden_units


def chapter2_net(rng):
    sizes = [32, 64, 64, 10]
    net = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        net[f"fc{i}.weight"] = rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in))
        net[f"fc{i}.bias"] = rng.normal(0, 0.1, n_out)
    return net


def notebook_prune_hidden(net, fraction):
    """Chapter 2's prune_hidden(net, fraction), verbatim."""
    small = dict(net)
    n = len(net) // 2
    for i in range(1, n):
        small[f"fc{i}.weight"], small[f"fc{i}.bias"], small[f"fc{i + 1}.weight"], _ = qlib.prune_neurons(
            small[f"fc{i}.weight"], small[f"fc{i}.bias"], small[f"fc{i + 1}.weight"], fraction)
    return small


def notebook_keep_units(model, keep):
    """Chapter 4's keep_units(model, keep), verbatim."""
    p = model.params
    w1, b1, w2, _ = qlib.prune_neurons(p["fc1.weight"], p["fc1.bias"], p["fc2.weight"], 1 - keep / model.sizes[1])
    return qlib.MLP({"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": p["fc2.bias"]})


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9])
def test_reproduces_chapter_2(fraction):
    net = chapter2_net(np.random.default_rng(0))
    expected = notebook_prune_hidden(net, fraction)
    got = prune_hidden_units(net, fraction)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert got["fc3.bias"] is net["fc3.bias"]  # untouched tensors are the input's own


@pytest.mark.parametrize("keep", [64, 32, 19, 13, 6, 3, 1])
def test_reproduces_chapter_4(keep):
    model = qlib.MLP.init((64, 64, 10), np.random.default_rng(1))
    model.params["fc1.bias"][:] = np.random.default_rng(2).normal(0, 0.1, 64)
    expected = notebook_keep_units(model, keep)
    got = prune_hidden_units(model, keep=keep)
    assert isinstance(got, qlib.MLP) and got.sizes == expected.sizes == (64, keep, 10)
    for name in expected.params:
        np.testing.assert_array_equal(got.params[name], expected.params[name])
    assert qlib.prune_hidden_units is prune_hidden_units


def test_keep_per_layer_and_the_forward_pass():
    net = chapter2_net(np.random.default_rng(3))
    small = prune_hidden_units(net, keep=[10, 20])
    assert [small[f"fc{i}.weight"].shape for i in (1, 2, 3)] == [(10, 32), (20, 10), (10, 20)]
    x = np.random.default_rng(4).normal(size=(8, 32))
    assert qlib.mlp_forward(small, x).shape == (8, 10)
    # pruning units that are dead (zero incoming weights and bias) changes nothing
    dead = dict(net)
    dead["fc1.weight"] = net["fc1.weight"].copy()
    dead["fc1.bias"] = net["fc1.bias"].copy()
    dead["fc1.weight"][:16] = 0
    dead["fc1.bias"][:16] = -1.0
    pruned = prune_hidden_units(dead, keep=[48, 64])
    np.testing.assert_allclose(qlib.mlp_forward(pruned, x), qlib.mlp_forward(dead, x), rtol=1e-12)


def test_no_bias_layers():
    rng = np.random.default_rng(5)
    p = {"a.weight": rng.normal(size=(6, 3)), "b.weight": rng.normal(size=(2, 6))}
    out = prune_hidden_units(p, 0.5)
    assert out["a.weight"].shape == (3, 3) and out["b.weight"].shape == (2, 3)


def test_bad_input():
    net = chapter2_net(np.random.default_rng(0))
    with pytest.raises(ValueError, match="fraction"):
        prune_hidden_units(net)
    with pytest.raises(ValueError, match="fraction"):
        prune_hidden_units(net, 0.5, keep=3)
    with pytest.raises(ValueError, match="keep"):
        prune_hidden_units(net, keep=0)
    with pytest.raises(ValueError, match="keep"):
        prune_hidden_units(net, keep=65)
    with pytest.raises(ValueError, match="keep"):
        prune_hidden_units(net, keep=[3])
    with pytest.raises(TypeError, match="keep"):
        prune_hidden_units(net, keep=2.5)
    with pytest.raises(ValueError, match="hidden"):
        prune_hidden_units({"fc1.weight": np.ones((2, 2)), "fc1.bias": np.ones(2)}, 0.5)
    with pytest.raises(TypeError, match="params"):
        prune_hidden_units(3, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        prune_hidden_units(net, 1.0)
