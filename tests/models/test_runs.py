"""Tests of qlib.models.runs: DigitsRuns, chapter 4's network trained once per data split."""

import numpy as np
import pytest

import qlib
from qlib.models.runs import DigitsRuns

SEEDS = (3, 1)
RECIPE = dict(epochs=2, lr=0.005, batch_size=64)


@pytest.fixture(scope="module")
def runs():
    return DigitsRuns(seeds=SEEDS, sizes=(64, 16, 10), **RECIPE)


def explicit_run(seed, sizes=(64, 16, 10), epochs=2, lr=0.005, batch_size=64):
    """Chapter 4's recipe written out: split `seed`, one generator 100 + seed for init then batches."""
    split = qlib.load_digits_split(seed=seed)
    gen = np.random.default_rng(100 + seed)
    model = qlib.MLP.init(sizes, gen)
    qlib.train(model, split["x_train"], split["y_train"], rng=gen, epochs=epochs, lr=lr, batch_size=batch_size)
    return model, split


def test_runs_reproduce_the_explicit_recipe(runs):
    assert runs.seeds == SEEDS and len(runs) == 2
    for k, seed in enumerate(SEEDS):
        model, split = explicit_run(seed)
        assert runs.models[k].sizes == (64, 16, 10)
        assert list(runs.models[k].params) == list(model.params)
        for name, t in model.params.items():
            assert runs.models[k].params[name].dtype == np.float32
            np.testing.assert_array_equal(runs.models[k].params[name], t)
        for name, a in split.items():
            np.testing.assert_array_equal(runs.splits[k][name], a)
    # the two runs differ (other split, other generator)
    assert not np.array_equal(runs.models[0].params["fc1.weight"], runs.models[1].params["fc1.weight"])
    assert not np.array_equal(runs.splits[0]["y_test"], runs.splits[1]["y_test"])


def test_the_recipe_matters():
    # one epoch less, or another learning rate, gives other weights than the fixture's
    one = DigitsRuns(seeds=[np.int64(3)], sizes=(64, 16, 10), epochs=1, lr=0.005, batch_size=64)
    assert one.seeds == (3,) and type(one.seeds[0]) is int        # numpy integers accepted, stored as int
    model, _ = explicit_run(3, epochs=1)
    np.testing.assert_array_equal(one.models[0].params["fc2.weight"], model.params["fc2.weight"])
    two, _ = explicit_run(3)
    assert not np.array_equal(one.models[0].params["fc2.weight"], two.params["fc2.weight"])


def test_sequence_protocol(runs):
    model, split = runs[1]
    assert model is runs.models[1] and split is runs.splits[1]
    assert runs[-1][0] is runs.models[1]
    pairs = list(runs)
    assert len(pairs) == 2
    for (m, s), m_k, s_k in zip(pairs, runs.models, runs.splits):
        assert m is m_k and s is s_k
    sliced = runs[:1]
    assert len(sliced) == 1 and sliced[0][0] is runs.models[0] and sliced[0][1] is runs.splits[0]
    with pytest.raises(IndexError):
        runs[2]
    assert "seeds=(3, 1)" in repr(runs)


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_accuracy_is_each_models_accuracy_on_its_own_split(runs, part):
    acc = runs.accuracy(part)
    assert acc.shape == (2,) and acc.dtype == np.float64
    for k, (m, s) in enumerate(runs):
        assert acc[k] == m.accuracy(s[f"x_{part}"], s[f"y_{part}"])
    assert np.all((acc > 0.3) & (acc <= 1))          # trained, better than the 10 % of chance


def test_accuracy_with_params_act_quant_and_models(runs):
    default = runs.accuracy()                             # part "test"
    for k, (m, s) in enumerate(runs):
        assert default[k] == m.accuracy(s["x_test"], s["y_test"])
    # per-run params (None entries: the run's own)
    quantized = [qlib.fake_quantize_weights(runs.models[0].params, bits=2), None]
    acc = runs.accuracy("val", params=quantized)
    m0, s0 = runs[0]
    assert acc[0] == m0.accuracy(s0["x_val"], s0["y_val"], params=quantized[0])
    assert acc[1] == runs.accuracy("val")[1]

    # per-run activation quantizers
    def coarse(h):
        return np.round(h * 2) / 2
    acc = runs.accuracy("val", act_quant=[None, coarse])
    m1, s1 = runs[1]
    assert acc[1] == m1.accuracy(s1["x_val"], s1["y_val"], act_quant=coarse)
    assert acc[0] == runs.accuracy("val")[0]
    # other models, each on its run's split: swapping the models evaluates model 1 on split 0
    swapped = runs.accuracy("test", models=[runs.models[1], runs.models[0]])
    assert swapped[0] == m1.accuracy(s0["x_test"], s0["y_test"])
    assert swapped[1] == m0.accuracy(s1["x_test"], s1["y_test"])
    assert runs.accuracy("test", models=tuple(runs.models)).tolist() == default.tolist()


def test_accuracy_errors(runs):
    with pytest.raises(TypeError, match="one entry per run"):
        runs.accuracy(params=[None])
    with pytest.raises(TypeError, match="one entry per run"):
        runs.accuracy(act_quant=[None, None, None])
    with pytest.raises(TypeError, match="models"):
        runs.accuracy(models=runs.models[:1])
    with pytest.raises(TypeError, match="params"):
        runs.accuracy(params=runs.models[0].params)       # a mapping, not a list per run
    with pytest.raises(ValueError, match="part"):
        runs.accuracy("validation")
    with pytest.raises(ValueError, match="part"):
        runs.layer_inputs("x_val")


def test_layer_inputs(runs):
    inputs = runs.layer_inputs("val")
    assert len(inputs) == 2
    for k, (m, s) in enumerate(runs):
        assert list(inputs[k]) == ["fc1", "fc2"]
        np.testing.assert_array_equal(inputs[k]["fc1"], s["x_val"].astype(np.float32))
        expected = m.layer_inputs(s["x_val"])
        np.testing.assert_array_equal(inputs[k]["fc2"], expected["fc2"])
        assert inputs[k]["fc2"].shape == (len(s["x_val"]), 16) and np.all(inputs[k]["fc2"] >= 0)
    train = runs.layer_inputs("train")
    assert train[0]["fc1"].shape == runs.splits[0]["x_train"].shape


@pytest.mark.parametrize("seeds, error", [
    ((), TypeError),
    ([], TypeError),
    ("01", TypeError),
    ((0, "1"), TypeError),
    ((0, 1.0), TypeError),
    (5, TypeError),
    ((1, 1), ValueError),
    ((0, -1), ValueError),
])
def test_seeds_errors(seeds, error):
    with pytest.raises(error, match="seeds"):
        DigitsRuns(seeds=seeds, epochs=1)
