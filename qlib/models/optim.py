r"""Adam, the optimizer of the book's training (Kingma and Ba, 2015, arXiv:1412.6980).

:class:`~qlib.Adam` updates a dict of parameter arrays in place from a dict of
gradients of the same names. Adam was chosen over SGD with momentum because
one learning rate works for every model and loss of the book (the teacher,
smaller students, distillation and fine-tuning of pruned models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qlib.core.validation import check_real
from qlib.methods.params import is_weight

__all__ = ["Adam"]


class Adam:
    r"""Minibatch Adam with bias-corrected moments and optional L2 weight decay.

    Step :math:`t` (from 1) with gradient :math:`g` updates every parameter
    :math:`\theta`:

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \theta \leftarrow \theta - \eta \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
            \frac{m}{\sqrt v + \epsilon \sqrt{1 - \beta_2^t}},

    the bias-corrected update :math:`\eta\, \hat m / (\sqrt{\hat v} + \epsilon)`
    written with one scalar factor. ``weight_decay`` adds :math:`\lambda W` to
    the gradient of every weight (:func:`qlib.is_weight`): an L2 penalty
    :math:`\frac\lambda2\|W\|^2`; biases are not decayed. The moments are
    kept in the dtype of each parameter.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta`, > 0.
    beta1, beta2 : float, default 0.9 and 0.999
        Moment decay rates, in [0, 1).
    eps : float, default 1e-8
        :math:`\epsilon`, > 0.
    weight_decay : float, default 0
        :math:`\lambda \ge 0`.

    Attributes
    ----------
    steps : int
        Steps taken so far.

    Raises
    ------
    TypeError, ValueError
        If an argument is not a real number in its range (the message names it).

    Examples
    --------
    >>> params = {"w.weight": np.array([[1.0, -2.0]])}
    >>> opt = Adam(lr=0.1)
    >>> opt.step(params, {"w.weight": np.array([[0.5, -0.5]])})
    >>> params["w.weight"], opt.steps      # the first step moves every entry by about lr
    (array([[ 0.9, -1.9]]), 1)
    """

    def __init__(self, lr=0.01, *, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr = check_real(lr, "lr", lo=0.0, lo_open=True)
        self.beta1 = check_real(beta1, "beta1", lo=0.0, hi=1.0, hi_open=True)
        self.beta2 = check_real(beta2, "beta2", lo=0.0, hi=1.0, hi_open=True)
        self.eps = check_real(eps, "eps", lo=0.0, lo_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", lo=0.0)
        self.steps = 0
        self.first_moment: dict[str, np.ndarray] = {}
        self.second_moment: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return (f"Adam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")

    def step(self, params, grads) -> None:
        """Update ``params`` in place from ``grads`` (same names and shapes); ``grads`` may be modified.

        Raises
        ------
        TypeError, ValueError
            If ``params`` or ``grads`` is not a mapping, or a gradient has no parameter or another shape.
        """
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError("params and grads must be mappings of name -> array")
        for name, g in grads.items():
            if name not in params:
                raise ValueError(f"grads has {name!r}, which is not a parameter of {list(params)}")
            if np.shape(g) != params[name].shape:
                raise ValueError(f"grads[{name!r}] must have shape {params[name].shape}, got {np.shape(g)}")
        self.steps += 1
        bias1 = 1.0 - self.beta1**self.steps
        bias2 = 1.0 - self.beta2**self.steps
        for name, grad in grads.items():
            param = params[name]
            scalar = param.dtype.type
            step_size = scalar(self.lr * math.sqrt(bias2) / bias1)
            eps_hat = scalar(self.eps * math.sqrt(bias2))
            if self.weight_decay and is_weight(name, param):
                grad += scalar(self.weight_decay) * param
            if name not in self.first_moment:
                self.first_moment[name] = np.zeros_like(param)
                self.second_moment[name] = np.zeros_like(param)
            m1, m2 = self.first_moment[name], self.second_moment[name]
            m1 *= scalar(self.beta1)
            m1 += scalar(1.0 - self.beta1) * grad
            m2 *= scalar(self.beta2)
            grad *= grad
            grad *= scalar(1.0 - self.beta2)
            m2 += grad
            denominator = np.sqrt(m2)
            denominator += eps_hat
            update = step_size * m1
            update /= denominator
            param -= update
