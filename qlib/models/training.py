r"""Training of the MLP by composition: a loss, an optimizer and hooks.

:func:`~qlib.fit` is the training loop and nothing else: each epoch visits the
rows of ``data`` once, in an order drawn from ``rng``, in minibatches of
``batch_size`` (the last one shorter); each step asks the *loss* for the
minibatch loss and gradients (:mod:`qlib.models.losses`), lets the
*optimizer* update the parameters (:class:`~qlib.Adam`), then runs the
*hooks*. A hook is an object with any of the methods

- ``on_train_begin(model)``,
- ``on_step_end(model, step)``,
- ``on_epoch_end(model, epoch, history)``;

:class:`~qlib.KeepPruned` re-applies pruning masks after every step (pruned
weights stay exactly zero), :class:`~qlib.RecordAccuracy` records a validation
accuracy after every epoch.

**Precision.** The loop trains a float64 copy of the model and writes the
result back into the model's own arrays once, at the end, rounded to the
model's dtype (float32 by default). Two runs that differ only in the order a
BLAS sums (another machine, another thread count) differ in float64 by about
:math:`10^{-15}`, which rounding to float32 hides: the trained float32 weights
are the same bit for bit, but for a weight within that distance of a float32
rounding boundary. ``dtype=`` trains in another precision instead. The loss,
the optimizer and the hooks see that working copy (a float64 :class:`qlib.MLP`),
so a validation accuracy recorded during training is the float64 model's.

**In place.** Writing back overwrites the model's arrays themselves: an array
that is also held elsewhere (put into ``model.params`` from another model or
dict) changes there too. Train a :meth:`qlib.MLP.copy` (which copies the
arrays) to keep the original.

:func:`~qlib.train` is the book's one-call form with keyword options
(``masks``, ``teacher_logits``, ``x_val``, ...), mapped onto these pieces.
All the randomness comes from ``rng``: the same state, model and data give
the same parameters bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qlib.core.validation import as_float_array, check_int, check_real, check_rng
from qlib.models.losses import CrossEntropyLoss, DistillationLoss
from qlib.models.mlp import MLP
from qlib.models.optim import Adam

__all__ = ["fit", "train", "KeepPruned", "RecordAccuracy"]


class KeepPruned:
    """A training hook that keeps pruned weights at zero: ``param *= mask`` before training and after every step.

    Parameters
    ----------
    masks : mapping of str to bool array
        Parameter name -> mask of the parameter's shape, True where the
        entry is kept (as from :func:`qlib.magnitude_prune`).

    Raises
    ------
    TypeError
        If ``masks`` is not a mapping of bool arrays.
    """

    def __init__(self, masks):
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a mapping parameter name -> bool array, got {type(masks).__name__}")
        for name, mask in masks.items():
            dtype = np.asarray(mask).dtype
            if dtype != np.bool_:
                raise TypeError(f"masks[{name!r}] must be a bool array (True = keep), got dtype {dtype}")
        self.masks = {name: np.asarray(mask) for name, mask in masks.items()}

    def check(self, params) -> None:
        """Raise ValueError unless every mask names a parameter of ``params`` and has its shape."""
        for name, mask in self.masks.items():
            if name not in params:
                raise ValueError(f"masks has key {name!r}, which is not a parameter of the model {list(params)}")
            if mask.shape != params[name].shape:
                raise ValueError(f"masks[{name!r}] must have shape {params[name].shape}, got {mask.shape}")

    def apply(self, model) -> None:
        for name, mask in self.masks.items():
            model.params[name] *= mask

    def on_train_begin(self, model) -> None:
        self.check(model.params)
        self.apply(model)

    def on_step_end(self, model, step) -> None:
        self.apply(model)


class RecordAccuracy:
    """A training hook that appends the accuracy on ``(x, y)`` to ``history[key]`` after every epoch.

    Parameters
    ----------
    x : array_like of float, shape (n, in_features)
    y : array_like of int, shape (n,)
    key : str, default "val_accuracy"
    """

    def __init__(self, x, y, key="val_accuracy"):
        self.x, self.y, self.key = x, y, key

    def on_train_begin(self, model) -> None:
        self.x = model.check_input(self.x, "x_val")
        self.y = model.check_labels(self.y, self.x.shape[0], "y_val")

    def on_epoch_end(self, model, epoch, history) -> None:
        history.setdefault(self.key, []).append(model.accuracy(self.x, self.y))


def _call_hooks(hooks, event: str, *args) -> None:
    for hook in hooks:
        method = getattr(hook, event, None)
        if method is not None:
            method(*args)


def fit(model: MLP, data, *, epochs, rng, loss=None, optimizer=None, batch_size=32, hooks=(),
        dtype=np.float64) -> dict[str, list[float]]:
    r"""Train ``model`` in place: minimize ``loss`` on ``data`` with ``optimizer``; return the history.

    See the module documentation for the loop and its precision.

    Parameters
    ----------
    model : MLP
        Trained in place (its arrays are overwritten at the end).
    data : mapping of str to array_like
        Arrays with one row per sample, sliced into minibatches together:
        ``"x"`` (the inputs, required) and what the loss reads, e.g. ``"y"``
        (labels) or ``"teacher_logits"``.
    epochs : int
        Number of passes over the data (>= 1).
    rng : numpy.random.Generator
        Orders the minibatches.
    loss : callable, default CrossEntropyLoss()
        ``loss(model, batch) -> (value, grads)``; see :mod:`qlib.models.losses`.
    optimizer : object with ``step(params, grads)``, default Adam()
        E.g. :class:`~qlib.Adam`.
    batch_size : int, default 32
    hooks : sequence of objects, default ()
        Called as described in the module documentation.
    dtype : float32 or float64, default float64
        The precision of the training; the result is rounded to the model's dtype.

    Returns
    -------
    dict
        ``"loss"``: the mean training loss of each epoch (the average of its
        minibatch losses, computed before each step), and what the hooks record.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type, shape or range (each named).

    Examples
    --------
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> teacher = MLP.init((64, 32, 10), np.random.default_rng(0))
    >>> _ = fit(teacher, {"x": d["x_train"], "y": d["y_train"]}, epochs=5, rng=np.random.default_rng(1))
    >>> student = MLP.init((64, 16, 10), np.random.default_rng(2))
    >>> data = {"x": d["x_train"], "y": d["y_train"], "teacher_logits": teacher.forward(d["x_train"])}
    >>> hist = fit(student, data, epochs=5, rng=np.random.default_rng(3), loss=qlib.DistillationLoss(alpha=0.5),
    ...            optimizer=qlib.Adam(lr=0.01), hooks=[RecordAccuracy(d["x_val"], d["y_val"])])
    >>> list(hist), hist["val_accuracy"][-1] > 0.8
    (['loss', 'val_accuracy'], True)
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    if not isinstance(data, Mapping) or "x" not in data:
        raise TypeError("data must be a mapping of name -> array with the inputs under 'x'")
    n_epochs = check_int(epochs, "epochs", 1)
    check_rng(rng)
    size = check_int(batch_size, "batch_size", 1)
    work_dtype = np.dtype(dtype)
    if work_dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {work_dtype}")
    loss = CrossEntropyLoss() if loss is None else loss
    optimizer = Adam() if optimizer is None else optimizer
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(model, batch), got {type(loss).__name__}")
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"optimizer must have a step(params, grads) method, got {type(optimizer).__name__}")
    hooks = list(hooks)

    work = model.astype(work_dtype)
    arrays = {"x": work.check_input(data["x"])}
    n = arrays["x"].shape[0]
    for name, value in data.items():
        if name == "x" or value is None:
            continue
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"data[{name!r}] must have one row per row of x ({n}), got shape {arr.shape}")
        arrays[name] = arr
    validate = getattr(loss, "validate", None)
    if validate is not None:
        validate(work, arrays)

    _call_hooks(hooks, "on_train_begin", work)
    history: dict[str, list[float]] = {"loss": []}
    step = 0
    for epoch in range(n_epochs):
        order = rng.permutation(n)
        total, count = 0.0, 0
        for start in range(0, n, size):
            rows = order[start:start + size]
            value, grads = loss(work, {name: arr[rows] for name, arr in arrays.items()})
            total += value * rows.size
            count += rows.size
            optimizer.step(work.params, grads)
            step += 1
            _call_hooks(hooks, "on_step_end", work, step)
        history["loss"].append(total / count)
        _call_hooks(hooks, "on_epoch_end", work, epoch, history)
    for name, trained in work.params.items():
        model.params[name][...] = trained  # rounded once to the model's dtype
    return history


def train(
    model: MLP,
    x,
    y,
    *,
    epochs,
    rng,
    lr=0.01,
    batch_size=32,
    weight_decay=0.0,
    masks=None,
    teacher_logits=None,
    temperature=4.0,
    alpha=0.9,
    x_val=None,
    y_val=None,
) -> dict[str, list[float]]:
    r"""Train ``model`` in place by minibatch Adam; return the history.

    The one-call form of :func:`~qlib.fit`: the loss is the mean
    cross-entropy (:class:`~qlib.CrossEntropyLoss`), or the distillation loss
    (:class:`~qlib.DistillationLoss`) when ``teacher_logits`` are given; the
    optimizer is :class:`~qlib.Adam` with ``lr`` and ``weight_decay``;
    ``masks`` add the hook :class:`~qlib.KeepPruned` (each masked parameter
    is multiplied by its mask before training and after every step, so the
    pruned entries stay exactly zero: fine-tuning after pruning), and
    ``x_val``/``y_val`` the hook :class:`~qlib.RecordAccuracy`. Training runs
    in float64 and the result is rounded to the model's dtype (see
    :mod:`qlib.models.training`).

    Parameters
    ----------
    model : MLP
        Trained in place.
    x : array_like of float, shape (n, in_features)
    y : array_like of int, shape (n,), or None
        Labels; None only with ``teacher_logits`` and ``alpha=1`` (pure distillation).
    epochs : int
        Number of passes over the data (>= 1).
    rng : numpy.random.Generator
        Orders the minibatches.
    lr : float, default 0.01
        Adam's learning rate.
    batch_size : int, default 32
    weight_decay : float, default 0
    masks : mapping of str to bool array, optional
        Parameter name -> mask of the parameter's shape, True where the
        entry is kept (as from :func:`qlib.magnitude_prune`).
    teacher_logits : array_like of float, shape (n, out_features), optional
        The teacher's logits on ``x``: train on the distillation loss of
        :func:`qlib.distillation_loss_grad` instead of the cross-entropy.
    temperature, alpha : float
        The distillation temperature and weight of the soft loss.
    x_val, y_val : array_like, optional
        If given, the validation accuracy is recorded after every epoch.

    Returns
    -------
    dict
        ``"loss"``: the mean training loss of each epoch (the average of its
        minibatch losses, computed before each step); with ``x_val``,
        ``"val_accuracy"``: the accuracy on it after each epoch.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type, shape or range (each named).

    Examples
    --------
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> model = MLP.init((64, 32, 10), np.random.default_rng(0))
    >>> hist = train(model, d["x_train"], d["y_train"], epochs=5, rng=np.random.default_rng(1))
    >>> len(hist["loss"]), hist["loss"][-1] < hist["loss"][0]
    (5, True)
    >>> model.accuracy(d["x_test"], d["y_test"]) > 0.9
    True
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    xa = model.check_input(x)
    n = xa.shape[0]
    ya = None if y is None else model.check_labels(y, n)
    check_int(epochs, "epochs", 1)
    check_rng(rng)
    optimizer = Adam(lr, weight_decay=weight_decay)
    check_int(batch_size, "batch_size", 1)
    hooks = []
    if masks is not None:
        keep = KeepPruned(masks)
        keep.check(model.params)
        hooks.append(keep)
    data = {"x": xa, "y": ya}
    if teacher_logits is not None:
        data["teacher_logits"] = as_float_array(teacher_logits, "teacher_logits")
        check_real(temperature, "temperature", lo=0.0, lo_open=True)
        loss = DistillationLoss(temperature=temperature, alpha=alpha)
    elif ya is None:
        raise ValueError("y must be given (class labels) unless teacher_logits is given")
    else:
        loss = CrossEntropyLoss()
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    if x_val is not None:
        hooks.append(RecordAccuracy(model.check_input(x_val, "x_val"), y_val))
    return fit(model, data, epochs=epochs, rng=rng, loss=loss, optimizer=optimizer, batch_size=batch_size,
               hooks=hooks)
