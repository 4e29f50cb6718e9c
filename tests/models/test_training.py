"""Tests for qlib.models.training: fit (loss, optimizer, hooks), train, and the float64 training."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import qlib
from qlib.models.losses import CrossEntropyLoss, DistillationLoss, LogitLoss
from qlib.models.mlp import MLP
from qlib.models.optim import Adam
from qlib.models.training import KeepPruned, RecordAccuracy, fit, train

# fixtures `digits` and `trained` (model, history): tests/conftest.py


def test_training_reaches_95_percent(digits, trained):
    model, hist = trained
    assert model.accuracy(digits["x_test"], digits["y_test"]) >= 0.95
    assert len(hist["loss"]) == 20 and hist["loss"][-1] < 0.2 * hist["loss"][0]
    assert all(v.dtype == np.float32 for v in model.params.values())


def test_training_is_deterministic(digits):
    def run(seed):
        m = MLP.init((64, 16, 10), np.random.default_rng(5))
        h = train(m, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(seed),
                  x_val=digits["x_val"], y_val=digits["y_val"])
        return m, h

    (a, ha), (b, hb), (c, _) = run(1), run(1), run(2)
    assert ha == hb and len(ha["val_accuracy"]) == 2 and list(ha) == ["loss", "val_accuracy"]
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])


def test_trains_in_float64_and_rounds_once_in_place(digits):
    m = MLP.init((64, 16, 10), np.random.default_rng(5))
    arrays = {k: v for k, v in m.params.items()}
    m64 = m.astype(np.float64)
    train(m, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(1))
    train(m64, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(1))
    for k, v in m.params.items():
        assert v is arrays[k] and v.dtype == np.float32  # updated in place
        np.testing.assert_array_equal(v, m64.params[k].astype(np.float32))
    # dtype=np.float32 trains in float32 instead: another result
    m32 = MLP.init((64, 16, 10), np.random.default_rng(5))
    fit(m32, {"x": digits["x_train"], "y": digits["y_train"]}, epochs=2, rng=np.random.default_rng(1),
        dtype=np.float32)
    assert not np.array_equal(m32.params["fc1.weight"], m.params["fc1.weight"])
    np.testing.assert_allclose(m32.params["fc1.weight"], m.params["fc1.weight"], atol=1e-3)


def test_train_is_fit_with_a_loss_an_optimizer_and_hooks(digits, trained):
    x, y = digits["x_train"], digits["y_train"]
    rng = np.random.default_rng(0)
    masks = {k: rng.random(v.shape) > 0.5 for k, v in trained[0].params.items() if k.endswith("weight")}
    a, b = trained[0].copy(), trained[0].copy()
    ha = train(a, x, y, epochs=2, rng=np.random.default_rng(3), lr=0.003, weight_decay=0.01, masks=masks,
               x_val=digits["x_val"], y_val=digits["y_val"])
    hb = fit(b, {"x": x, "y": y}, epochs=2, rng=np.random.default_rng(3), loss=CrossEntropyLoss(),
             optimizer=Adam(lr=0.003, weight_decay=0.01),
             hooks=[KeepPruned(masks), RecordAccuracy(digits["x_val"], digits["y_val"])])
    assert ha == hb
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    t = trained[0].forward(x)
    c, d = MLP.init((64, 16, 10), np.random.default_rng(3)), MLP.init((64, 16, 10), np.random.default_rng(3))
    train(c, x, y, epochs=1, rng=np.random.default_rng(4), teacher_logits=t, temperature=2.0, alpha=0.5)
    fit(d, {"x": x, "y": y, "teacher_logits": t}, epochs=1, rng=np.random.default_rng(4),
        loss=DistillationLoss(temperature=2.0, alpha=0.5))
    assert all(np.array_equal(c.params[k], d.params[k]) for k in c.params)


def test_masks_keep_pruned_weights_at_zero(digits, trained):
    model = trained[0].copy()
    rng = np.random.default_rng(0)
    masks = {k: rng.random(v.shape) > 0.7 for k, v in model.params.items() if k.endswith("weight")}
    before = model.copy()
    train(model, digits["x_train"], digits["y_train"], epochs=2, rng=np.random.default_rng(1), masks=masks)
    for k, mk in masks.items():
        assert np.all(model.params[k][~mk] == 0)
        changed = model.params[k][mk] != before.params[k][mk]
        assert changed.mean() > 0.5  # kept weights train (not those of always-0 pixels or dead units)
    assert model.accuracy(digits["x_test"], digits["y_test"]) > 0.9


def test_weight_decay_shrinks_weights(digits):
    norms = []
    for wd in (0.0, 0.05):
        m = MLP.init((64, 16, 10), np.random.default_rng(0))
        train(m, digits["x_train"], digits["y_train"], epochs=3, rng=np.random.default_rng(1), weight_decay=wd)
        norms.append(np.linalg.norm(m.params["fc1.weight"]))
    assert norms[1] < norms[0]


def test_distillation_training(digits, trained):
    teacher = trained[0]
    t_logits = teacher.forward(digits["x_train"])
    student = MLP.init((64, 16, 10), np.random.default_rng(3))
    hist = train(student, digits["x_train"], digits["y_train"], epochs=10, rng=np.random.default_rng(4),
                 teacher_logits=t_logits, temperature=4.0, alpha=0.9)
    assert hist["loss"][-1] < hist["loss"][0]
    assert student.accuracy(digits["x_test"], digits["y_test"]) > 0.9
    soft = MLP.init((64, 16, 10), np.random.default_rng(3))
    train(soft, digits["x_train"], None, epochs=10, rng=np.random.default_rng(4), teacher_logits=t_logits, alpha=1.0)
    assert soft.accuracy(digits["x_test"], digits["y_test"]) > 0.9


class FakeQuantizedWeightsLoss(LogitLoss):
    """A quantization-aware loss written outside the training loop: forward on fake-quantized
    weights, straight-through gradient to the float weights."""

    def __init__(self, bits):
        self.bits = bits
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        wq = qlib.fake_quantize_weights(model.params, bits=self.bits)
        trace = model.trace(batch["x"], params=wq)
        value, grad = CrossEntropyLoss().logit_loss(trace.logits, batch)
        return value, model.backward(trace, grad)


def test_a_new_loss_needs_no_change_of_the_loop(digits):
    m = MLP.init((64, 16, 10), np.random.default_rng(0))
    loss = FakeQuantizedWeightsLoss(bits=3)
    hist = fit(m, {"x": digits["x_train"], "y": digits["y_train"]}, epochs=3, rng=np.random.default_rng(1),
               loss=loss)
    assert loss.calls == 3 * 34 and hist["loss"][-1] < hist["loss"][0]
    wq = qlib.fake_quantize_weights(m.params, bits=3)
    assert m.accuracy(digits["x_test"], digits["y_test"], params=wq) > 0.85


def test_hooks_see_every_step_and_epoch(digits):
    events = []

    class Recorder:
        def on_train_begin(self, model):
            events.append(("begin", model.dtype))

        def on_step_end(self, model, step):
            events.append(("step", step))

        def on_epoch_end(self, model, epoch, history):
            events.append(("epoch", epoch, len(history["loss"])))

    m = MLP.init((64, 8, 10), np.random.default_rng(0))
    x, y = digits["x_train"][:100], digits["y_train"][:100]
    fit(m, {"x": x, "y": y}, epochs=2, rng=np.random.default_rng(0), batch_size=40, hooks=[Recorder(), object()])
    assert events == [("begin", np.float64), ("step", 1), ("step", 2), ("step", 3), ("epoch", 0, 1),
                      ("step", 4), ("step", 5), ("step", 6), ("epoch", 1, 2)]


_BLAS_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np, qlib
    d = qlib.load_digits_split(seed=0)
    m = qlib.MLP.init((64, 64, 10), np.random.default_rng(0))
    qlib.train(m, d["x_train"], d["y_train"], epochs=20, rng=np.random.default_rng(1))
    im = qlib.IntegerMLP.from_float(m, d["x_val"])
    h = hashlib.sha256()
    for v in m.params.values():
        h.update(v.tobytes())
    for layer in im.layers:
        h.update(layer.multiplier.tobytes()); h.update(layer.shift.tobytes())
    print(h.hexdigest())
""")


def test_trained_weights_do_not_depend_on_the_blas_threads_or_kernels():
    """The conftest model, trained in processes with other BLAS settings, is the same bit for bit."""
    if "openblas" not in str(np.show_config(mode="dicts")).lower():
        pytest.skip("the BLAS settings varied here are OpenBLAS's")
    settings = [{}, {"OPENBLAS_NUM_THREADS": "1"}, {"OPENBLAS_CORETYPE": "Prescott"}]
    digests = set()
    for extra in settings:
        env = dict(os.environ, **extra)
        out = subprocess.run([sys.executable, "-c", _BLAS_SCRIPT], env=env, capture_output=True, text=True,
                             check=True, timeout=300)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_bad_inputs(digits):
    m = MLP.init((64, 8, 10), np.random.default_rng(0))
    x, y = digits["x_val"], digits["y_val"]
    rng = np.random.default_rng(0)
    t_ok = np.zeros((len(y), 10))
    cases = [
        (lambda: train(m, x, y, epochs=0, rng=rng), ValueError, "epochs"),
        (lambda: train(m, x, y, epochs=1, rng=1), TypeError, "rng"),
        (lambda: train(m, x, y, epochs=1, rng=rng, lr=-1), ValueError, "lr"),
        (lambda: train(m, x, y, epochs=1, rng=rng, batch_size=0), ValueError, "batch_size"),
        (lambda: train(m, x, y, epochs=1, rng=rng, weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda: train("m", x, y, epochs=1, rng=rng), TypeError, "model"),
        (lambda: train(m, x, y[:-1], epochs=1, rng=rng), ValueError, "y"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc1.weight": np.ones((8, 64))}), TypeError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc1.weight": np.ones((2, 2), bool)}), ValueError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, masks={"fc7.weight": np.ones((8, 64), bool)}), ValueError, "masks"),
        (lambda: train(m, x, y, epochs=1, rng=rng, teacher_logits=np.zeros((3, 10))), ValueError, "teacher_logits"),
        (lambda: train(m, x, None, epochs=1, rng=rng, teacher_logits=t_ok), ValueError, "y"),
        (lambda: train(m, x, y, epochs=1, rng=rng, teacher_logits=t_ok, alpha=2), ValueError, "alpha"),
        (lambda: train(m, x, y, epochs=1, rng=rng, teacher_logits=t_ok, temperature=0), ValueError, "temperature"),
        (lambda: train(m, x, y, epochs=1, rng=rng, x_val=x), ValueError, "y_val"),
        (lambda: train(m, x, y, epochs=1, rng=rng, x_val=x[:, :3], y_val=y), ValueError, "x_val"),
        (lambda: fit(m, x, epochs=1, rng=rng), TypeError, "data"),
        (lambda: fit(m, {"x": x, "y": y[:5]}, epochs=1, rng=rng), ValueError, "y"),
        (lambda: fit(m, {"x": x}, epochs=1, rng=rng), ValueError, "y"),
        (lambda: fit(m, {"x": x, "y": y}, epochs=1, rng=rng, loss="ce"), TypeError, "loss"),
        (lambda: fit(m, {"x": x, "y": y}, epochs=1, rng=rng, optimizer=0.01), TypeError, "optimizer"),
        (lambda: fit(m, {"x": x, "y": y}, epochs=1, rng=rng, dtype=np.int8), TypeError, "dtype"),
        (lambda: fit(m, {"x": x}, epochs=1, rng=rng, loss=DistillationLoss()), ValueError, "teacher_logits"),
        (lambda: KeepPruned([1]), TypeError, "masks"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()
