r"""Training losses of the MLP, as objects that :func:`~qlib.fit` minimizes.

A loss is called as ``loss(model, batch) -> (value, grads)``: ``batch`` is a
dict of minibatch arrays (``"x"``, and what the loss needs: ``"y"``,
``"teacher_logits"``, ...), ``value`` the batch-mean loss and ``grads`` its
gradient with respect to every parameter of ``model``. :func:`~qlib.fit`
knows nothing else of it, so a new loss (a quantization-aware one that runs
the forward pass on fake-quantized weights, say) is a new class, not a change
of the training loop. ``loss.validate(model, data)`` checks the whole data
once before training.

The losses here depend on the logits only: :class:`~qlib.LogitLoss` runs
:meth:`qlib.MLP.trace`, asks the subclass for the loss and its gradient with
respect to the logits (:meth:`qlib.LogitLoss.logit_loss`), and backpropagates it
with :meth:`qlib.MLP.backward`. Both compute in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qlib.core.validation import as_float_array, check_real
from qlib.methods.distillation import distillation_loss, distillation_loss_grad
from qlib.models.checks import check_labels

__all__ = ["LogitLoss", "CrossEntropyLoss", "DistillationLoss"]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _check_batch(batch, key: str) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of name -> array, got {type(batch).__name__}")
    if key not in batch:
        raise ValueError(f"batch must hold {key!r} for this loss, got keys {sorted(batch)}")


class LogitLoss:
    """Base class of the losses that depend on the logits only.

    Subclasses implement :meth:`logit_loss`; calling the loss runs the
    forward pass, :meth:`logit_loss`, and the backward pass.
    """

    def __call__(self, model, batch):
        """``(value, grads)`` of the loss on ``batch`` (``batch["x"]`` the inputs)."""
        _check_batch(batch, "x")
        trace = model.trace(batch["x"])
        value, grad_logits = self.logit_loss(trace.logits, batch)
        return float(value), model.backward(trace, grad_logits)

    def logit_loss(self, logits, batch):
        """``(value, gradient with respect to the logits)``; to be implemented by a subclass."""
        raise NotImplementedError(f"{type(self).__name__} must implement logit_loss(logits, batch)")

    def validate(self, model, data) -> None:
        """Check ``data`` (all the rows) before training; raise TypeError/ValueError naming the problem."""
        _check_batch(data, "x")


class CrossEntropyLoss(LogitLoss):
    r"""The mean cross-entropy :math:`-\frac1n \sum_i \log \mathrm{softmax}(z_i)_{y_i}` of the labels ``batch["y"]``.

    Its gradient with respect to the logits is
    :math:`(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / n`.

    Examples
    --------
    >>> loss = CrossEntropyLoss()
    >>> value, grad = loss.logit_loss(np.zeros((2, 4)), {"y": np.array([0, 3])})
    >>> round(value, 6) == round(float(np.log(4)), 6), grad[0]
    (True, array([-0.375,  0.125,  0.125,  0.125]))
    """

    def logit_loss(self, logits, batch):
        _check_batch(batch, "y")
        z = np.asarray(logits, dtype=np.float64)
        y = check_labels(batch["y"], z.shape[0], z.shape[1])
        n = z.shape[0]
        logp = _log_softmax(z)
        value = -float(np.mean(logp[np.arange(n), y]))
        grad = np.exp(logp)
        grad[np.arange(n), y] -= 1.0
        grad /= n
        return value, grad

    def validate(self, model, data) -> None:
        super().validate(model, data)
        if data.get("y") is None:
            raise ValueError("y must be given (class labels) unless teacher_logits is given")
        model.check_labels(data["y"], len(data["x"]))

    def __repr__(self) -> str:
        return "CrossEntropyLoss()"


class DistillationLoss(LogitLoss):
    """Hinton et al.'s distillation loss (:func:`qlib.distillation_loss`) to ``batch["teacher_logits"]``.

    The hard-label term uses ``batch["y"]``, which may be absent when
    ``alpha == 1`` (soft targets only).

    Parameters
    ----------
    temperature : float, default 4.0
        Softening temperature, > 0.
    alpha : float, default 0.9
        Weight of the soft (teacher) term, in [0, 1].

    Raises
    ------
    TypeError, ValueError
        If ``temperature`` or ``alpha`` is not a real number in its range.

    Examples
    --------
    >>> loss = DistillationLoss(temperature=2.0, alpha=1.0)
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> value, grad = loss.logit_loss(t, {"teacher_logits": t})   # the student is the teacher
    >>> bool(np.allclose(grad, 0))
    True
    """

    def __init__(self, temperature=4.0, alpha=0.9):
        self.temperature = check_real(temperature, "temperature", lo=0.0, lo_open=True)
        self.alpha = check_real(alpha, "alpha", lo=0.0, hi=1.0)

    def _labels(self, batch):
        labels = batch.get("y")
        if labels is None and self.alpha != 1.0:
            raise ValueError(f"y (class labels) is required unless alpha == 1 (soft targets only), "
                             f"got alpha={self.alpha!r}")
        return labels

    def logit_loss(self, logits, batch):
        _check_batch(batch, "teacher_logits")
        z = np.asarray(logits, dtype=np.float64)
        teacher = as_float_array(batch["teacher_logits"], "teacher_logits")
        if teacher.shape != z.shape:
            raise ValueError(
                f"teacher_logits must have shape {z.shape}, one row of {z.shape[1]} logits "
                f"per row of x, got {teacher.shape}"
            )
        labels = self._labels(batch)
        options = {"temperature": self.temperature, "alpha": self.alpha}
        value = distillation_loss(z, teacher, labels, **options)
        grad = distillation_loss_grad(z, teacher, labels, **options)
        return value, grad

    def validate(self, model, data) -> None:
        super().validate(model, data)
        n, n_classes = len(data["x"]), model.sizes[-1]
        if data.get("teacher_logits") is None:
            raise ValueError("teacher_logits must be given for a DistillationLoss")
        teacher = as_float_array(data["teacher_logits"], "teacher_logits")
        if teacher.shape != (n, n_classes):
            raise ValueError(
                f"teacher_logits must have shape {(n, n_classes)}, one row per row of x, got {teacher.shape}"
            )
        labels = self._labels(data)
        if labels is not None:
            model.check_labels(labels, n)

    def __repr__(self) -> str:
        return f"DistillationLoss(temperature={self.temperature}, alpha={self.alpha})"
