r"""A small multilayer perceptron in numpy: the book's test bed.

The methods of the book are measured on a model that learns something: a
fully connected network (multilayer perceptron, MLP) that classifies the
8 x 8 images of handwritten digits that scikit-learn ships
(:func:`~qlib.load_digits_split`). Everything is plain numpy, small enough to
read and fast enough to train in well under a second (:func:`~qlib.train`).

**Conventions** (PyTorch's). A dense layer ``fcK`` holds a weight of shape
``(out_features, in_features)`` and a bias of shape ``(out_features,)`` and
computes :math:`y = x W^\top + b` on a batch ``x`` of shape ``(n, in_features)``.
Per-output-channel quantization of a weight is therefore ``axis=0`` (one
scale per row). Parameters live in the ordered dict :attr:`~qlib.MLP.params` under
the names ``"fc1.weight"``, ``"fc1.bias"``, ``"fc2.weight"``, ... Every hidden
layer is followed by a ReLU; the last layer returns logits (no softmax).
:func:`~qlib.mlp_forward` is the same network on a plain dict of arrays.

**Precision.** The parameters and every tensor the model hands out (layer
inputs, pre-activations, logits, gradients) are in the model's dtype, float32
by default; the matrix products *accumulate in float64* and are rounded once
to that dtype. A float32 BLAS sums in an order that depends on the machine
and the number of threads, and the last bits of its results with it; a
float64 sum rounded to float32 is the same on every machine except for values
within about :math:`10^{-16}` relative of a float32 rounding boundary, so
calibrated ranges and quantized codes do not depend on the BLAS.

**Quantized evaluation.** :meth:`~qlib.MLP.forward` takes replacement
parameters (e.g. fake-quantized weights from :func:`~qlib.fake_quantize_weights`)
and an activation quantizer applied to the input of every dense layer (from
:func:`~qlib.calibrate_activations` and :func:`~qlib.activation_quantizer`), so
"int8 per-channel weights, int8 activations" is::

    wq = qlib.fake_quantize_weights(model.params, bits=8)
    aq = qlib.activation_quantizer(qlib.calibrate_activations(model, x_val, bits=8))
    model.accuracy(x_test, y_test, params=wq, act_quant=aq)

**Gradients.** :meth:`~qlib.MLP.trace` runs the network and keeps what
backpropagation needs; :meth:`~qlib.MLP.backward` turns the gradient of a loss
with respect to the logits into the gradient of every parameter. The losses
(:mod:`qlib.models.losses`) and the training loop (:mod:`qlib.models.training`)
are built on these two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qlib.core.validation import as_float_array, check_int, check_rng
from qlib.models.checks import check_labels, check_params, layer_names
from qlib.models.losses import CrossEntropyLoss, DistillationLoss

__all__ = ["MLP", "ForwardTrace", "mlp_forward"]

_ACCUMULATE = np.float64  # the dtype every matrix product accumulates in


def _act_quantizers(act_quant, layers: list[str]) -> list:
    """One callable (or None) per layer from ``act_quant``."""
    if act_quant is None:
        return [None] * len(layers)
    if isinstance(act_quant, Mapping):
        unknown = sorted(set(act_quant) - set(layers))
        if unknown:
            raise ValueError(f"act_quant has keys {unknown} that are not layers of the model {layers}")
        fns = [act_quant.get(ln) for ln in layers]
        for ln, f in zip(layers, fns):
            if f is not None and not callable(f):
                raise TypeError(f"act_quant['{ln}'] must be callable, got {type(f).__name__}")
        return fns
    if callable(act_quant):
        return [act_quant] * len(layers)
    raise TypeError(
        "act_quant must be a callable or a mapping layer name -> callable, "
        f"got {type(act_quant).__name__}"
    )


@dataclass(frozen=True, eq=False)
class ForwardTrace:
    """What :meth:`MLP.trace` keeps of a forward pass, for :meth:`MLP.backward`.

    Attributes
    ----------
    logits : numpy.ndarray, shape (n, out_features)
    inputs : list of numpy.ndarray
        The input of every dense layer (after its activation quantizer, if any).
    preacts : list of numpy.ndarray
        The pre-activation of every hidden layer (before its ReLU).
    params : dict of str to numpy.ndarray
        The parameters the pass used (the model's or replacements).
    """

    logits: np.ndarray
    inputs: list
    preacts: list
    params: dict


def _run(x: np.ndarray, params: Mapping, layers: list[str], quants: list, dtype, keep: bool):
    """The network on ``x``: logits, and (if ``keep``) each layer's input and pre-activation.

    Tensors are in ``dtype``; each product ``h @ W.T + b`` accumulates in
    float64 and is rounded once to ``dtype``.
    """
    h = x
    inputs, preacts = [], []
    last = len(layers) - 1
    for i, ln in enumerate(layers):
        if quants[i] is not None:
            h = np.asarray(quants[i](h)).astype(dtype, copy=False)
        if keep:
            inputs.append(h)
        w = params[f"{ln}.weight"].astype(_ACCUMULATE, copy=False)
        z = h.astype(_ACCUMULATE, copy=False) @ w.T
        z += params[f"{ln}.bias"]
        z = z.astype(dtype, copy=False)
        if i < last:
            if keep:
                preacts.append(z)
            h = np.maximum(z, 0)
        else:
            h = z
    return h, inputs, preacts


def mlp_forward(params, x, *, act_quant=None) -> np.ndarray:
    """The MLP's logits on a plain dict of parameters: ReLU after every layer but the last.

    The function form of :meth:`MLP.forward`, for parameters of any float
    dtypes (mixed too): the result has numpy's promoted dtype of ``x`` and
    the parameters, and each layer computes ``x @ W.T + b`` (accumulated in
    float64, see :mod:`qlib.models.mlp`), so for float64 arrays it is
    exactly the textbook loop::

        for i in range(1, n + 1):
            x = x @ params[f"fc{i}.weight"].T + params[f"fc{i}.bias"]
            x = np.maximum(x, 0) if i < n else x

    Parameters
    ----------
    params : mapping of str to array_like of float
        ``"fc1.weight"`` (shape ``(h1, in)``), ``"fc1.bias"``, ``"fc2.weight"``, ... in this order.
    x : array_like of float, shape (n, in_features)
    act_quant : callable or mapping of str to callable, optional
        As in :meth:`MLP.forward`.

    Returns
    -------
    numpy.ndarray, shape (n, out_features)

    Raises
    ------
    TypeError, ValueError
        If ``params`` is not an MLP's parameters or ``x`` does not fit them.

    Examples
    --------
    >>> net = {"fc1.weight": np.array([[1.0, -1.0]]), "fc1.bias": np.array([0.5]),
    ...        "fc2.weight": np.array([[2.0]]), "fc2.bias": np.array([0.0])}
    >>> mlp_forward(net, np.array([[1.0, 0.0], [0.0, 3.0]]))
    array([[3.],
           [0.]])
    """
    checked = check_params(params)
    xa = as_float_array(x, "x")
    n_in = checked["fc1.weight"].shape[1]
    if xa.ndim != 2 or xa.shape[1] != n_in:
        raise ValueError(f"x must have shape (n, {n_in}), one row of {n_in} features per sample, got shape {xa.shape}")
    dtype = np.result_type(xa, *checked.values())
    layers = layer_names(checked)
    return _run(xa.astype(dtype, copy=False), checked, layers, _act_quantizers(act_quant, layers), dtype, False)[0]


class MLP:
    r"""A multilayer perceptron with ReLU hidden layers, in numpy.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        ``"fc1.weight"`` (shape ``(h1, in)``), ``"fc1.bias"`` (``(h1,)``),
        ``"fc2.weight"`` (``(h2, h1)``), ... in this order; floating point,
        all of one dtype (the model's). Copied. Usually built by
        :meth:`~qlib.MLP.init`.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The parameters, in layer order. :func:`~qlib.train` updates them in place.
    sizes : tuple of int
        ``(in_features, hidden..., out_features)``.
    layers : list of str
        ``["fc1", "fc2", ...]``.

    Raises
    ------
    TypeError, ValueError
        If ``params`` is not a mapping of finite float arrays with the names
        and consistent shapes above, or mixes dtypes.

    Examples
    --------
    >>> model = MLP.init((4, 8, 3), np.random.default_rng(0))
    >>> model.sizes, model.layers
    ((4, 8, 3), ['fc1', 'fc2'])
    >>> {k: v.shape for k, v in model.params.items()}
    {'fc1.weight': (8, 4), 'fc1.bias': (8,), 'fc2.weight': (3, 8), 'fc2.bias': (3,)}
    >>> model.forward(np.ones((2, 4), dtype=np.float32)).shape
    (2, 3)
    """

    def __init__(self, params):
        checked = check_params(params)
        dtypes = {v.dtype for v in checked.values()}
        if len(dtypes) != 1:
            raise TypeError(f"params must all have one floating dtype, got {sorted(str(d) for d in dtypes)}")
        self.params: dict[str, np.ndarray] = {k: np.array(v) for k, v in checked.items()}
        self.layers: list[str] = layer_names(self.params)

    # -- construction -------------------------------------------------------

    @classmethod
    def init(cls, sizes, rng, *, dtype=np.float32) -> "MLP":
        r"""A new MLP with He (Kaiming) normal weights and zero biases.

        Weights of layer ``k`` are drawn from :math:`\mathcal N(0, 2 / n_{in})`
        with :math:`n_{in}` its fan-in (He et al. 2015, the initialization
        for ReLU networks), in float64 from ``rng``, then cast to ``dtype``.

        Parameters
        ----------
        sizes : sequence of int
            ``(in_features, hidden_1, ..., out_features)``, at least two
            positive sizes; e.g. ``(64, 64, 10)`` has one hidden layer.
        rng : numpy.random.Generator
            The source of randomness.
        dtype : float32 or float64, default float32
            The parameters' dtype.

        Returns
        -------
        MLP

        Raises
        ------
        TypeError
            If ``sizes`` is not a sequence of integers, ``rng`` not a
            Generator, or ``dtype`` not float32/float64.
        ValueError
            If ``sizes`` has fewer than two entries or a size is below 1.

        Examples
        --------
        >>> m = MLP.init((64, 32, 10), np.random.default_rng(0))
        >>> m.params["fc1.weight"].dtype, round(float(m.params["fc1.weight"].std()), 2)
        (dtype('float32'), 0.18)
        """
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a sequence of integers, got {type(sizes).__name__}")
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least two entries (inputs, outputs), got {list(sizes)}")
        widths = [check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes)]
        check_rng(rng)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        params = {}
        for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            w = rng.standard_normal((n_out, n_in)) * math.sqrt(2.0 / n_in)
            params[f"fc{k}.weight"] = w.astype(dt)
            params[f"fc{k}.bias"] = np.zeros(n_out, dtype=dt)
        return cls(params)

    def copy(self) -> "MLP":
        """A deep copy (parameters copied)."""
        return MLP(self.params)

    def astype(self, dtype) -> "MLP":
        """A copy with parameters in ``dtype`` (float32 or float64), e.g. for a gradient check.

        Examples
        --------
        >>> m = MLP.init((3, 2), np.random.default_rng(0)).astype(np.float64)
        >>> m.dtype
        dtype('float64')
        """
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        return MLP({k: v.astype(dt) for k, v in self.params.items()})

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype, that of every tensor the model computes."""
        return self.params["fc1.weight"].dtype

    @property
    def sizes(self) -> tuple[int, ...]:
        ws = [self.params[f"{ln}.weight"] for ln in self.layers]
        return (int(ws[0].shape[1]),) + tuple(int(w.shape[0]) for w in ws)

    @property
    def n_params(self) -> int:
        """The number of parameters (weights and biases)."""
        return int(sum(v.size for v in self.params.values()))

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, dtype={self.dtype})"

    # -- checks ------------------------------------------------------------

    def check_input(self, x, name: str = "x") -> np.ndarray:
        """``x`` as a batch for the model: a finite float array of shape ``(n, in_features)`` in its dtype.

        Raises
        ------
        TypeError, ValueError
            If ``x`` is not a finite real array of that shape (the message names ``name``).
        """
        xa = as_float_array(x, name)
        if xa.ndim != 2 or xa.shape[1] != self.sizes[0]:
            raise ValueError(
                f"{name} must have shape (n, {self.sizes[0]}), one row of {self.sizes[0]} features "
                f"per sample, got shape {xa.shape}"
            )
        return xa.astype(self.dtype, copy=False)

    def check_labels(self, y, n: int, name: str = "y") -> np.ndarray:
        """``y`` as int64 class labels of ``n`` rows, each in ``[0, out_features)``."""
        return check_labels(y, n, self.sizes[-1], name)

    def resolve_params(self, params=None) -> dict[str, np.ndarray]:
        """The parameters a pass uses: the model's, or ``params`` checked against them and cast to its dtype."""
        if params is None:
            return self.params
        checked = check_params(params, "params", like=self.params)
        return {k: v.astype(self.dtype, copy=False) for k, v in checked.items()}

    # -- computation --------------------------------------------------------

    def trace(self, x, *, params=None, act_quant=None) -> ForwardTrace:
        """Run the network and keep every layer's input and pre-activation (for :meth:`backward`).

        Parameters are as for :meth:`forward`.

        Returns
        -------
        ForwardTrace

        Examples
        --------
        >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
        >>> t = m.trace(np.ones((2, 4), dtype=np.float32))
        >>> t.logits.shape, [h.shape for h in t.inputs], [z.shape for z in t.preacts]
        ((2, 3), [(2, 4), (2, 8)], [(2, 8)])
        """
        xa = self.check_input(x)
        p = self.resolve_params(params)
        logits, inputs, preacts = _run(xa, p, self.layers, _act_quantizers(act_quant, self.layers), self.dtype, True)
        return ForwardTrace(logits, inputs, preacts, dict(p))

    def layer_inputs(self, x, *, params=None, act_quant=None) -> dict[str, np.ndarray]:
        """The input of every dense layer on ``x``, by layer name (GPTQ's and bias correction's calibration data).

        >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
        >>> {k: v.shape for k, v in m.layer_inputs(np.ones((2, 4), dtype=np.float32)).items()}
        {'fc1': (2, 4), 'fc2': (2, 8)}
        """
        return dict(zip(self.layers, self.trace(x, params=params, act_quant=act_quant).inputs))

    def forward(self, x, *, params=None, act_quant=None) -> np.ndarray:
        """The logits of a batch.

        Parameters
        ----------
        x : array_like of float, shape (n, in_features)
            The inputs, converted to the model's dtype.
        params : mapping, optional
            Parameters to use instead of :attr:`~qlib.MLP.params` (same names and
            shapes), e.g. dequantized weights.
        act_quant : callable or mapping of str to callable, optional
            Applied to the *input* of every dense layer: a callable
            ``f(h) -> h_hat`` for all layers, or a mapping layer name
            (``"fc1"``, ...) -> callable for per-layer quantizers (layers
            absent from the mapping are left in float), as
            :func:`~qlib.activation_quantizer` builds.

        Returns
        -------
        numpy.ndarray, shape (n, out_features)
            Logits, in the model's dtype.

        Raises
        ------
        TypeError, ValueError
            If ``x`` is not a finite float array of shape ``(n, in_features)``,
            ``params`` does not match the model, or ``act_quant`` is neither a
            callable nor a mapping of layer names to callables.

        Examples
        --------
        Fake-quantizing every layer input to 8 bits on [0, 4]:

        >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
        >>> x = np.random.default_rng(1).random((5, 4), dtype=np.float32)
        >>> from qlib import fake_quantize
        >>> q8 = lambda h: fake_quantize(h, 4 / 255, -128)
        >>> y, yq = m.forward(x), m.forward(x, act_quant=q8)
        >>> bool(np.abs(y - yq).max() < 0.05)
        True
        """
        xa = self.check_input(x)
        p = self.resolve_params(params)
        return _run(xa, p, self.layers, _act_quantizers(act_quant, self.layers), self.dtype, False)[0]

    __call__ = forward

    def predict(self, x, **kwargs) -> np.ndarray:
        """The predicted class (argmax of the logits) of each row; ``kwargs`` go to :meth:`~qlib.MLP.forward`."""
        return np.argmax(self.forward(x, **kwargs), axis=1)

    def accuracy(self, x, y, **kwargs) -> float:
        """The fraction of rows of ``x`` whose predicted class is ``y``; ``kwargs`` go to :meth:`~qlib.MLP.forward`.

        Examples
        --------
        >>> m = MLP.init((2, 2), np.random.default_rng(0))
        >>> m.params["fc1.weight"][:] = np.eye(2); m.params["fc1.bias"][:] = 0
        >>> m.accuracy(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]]), [0, 1, 1])
        0.6666666666666666
        """
        xa = self.check_input(x)
        ya = self.check_labels(y, xa.shape[0])
        return float(np.mean(self.predict(xa, **kwargs) == ya))

    def backward(self, trace: ForwardTrace, grad_logits) -> dict[str, np.ndarray]:
        r"""The gradient of a loss with respect to every parameter, from its gradient with respect to the logits.

        Backpropagation through the pass recorded in ``trace``:
        :math:`\partial W = \delta^\top h_{in}`, :math:`\partial b = \sum_i
        \delta_i`, and :math:`\delta_{prev} = (\delta W) \odot [z_{prev} > 0]`
        through each ReLU, with the weights the pass used. An activation
        quantizer of the pass is treated as the identity (the straight-through
        estimator).

        Parameters
        ----------
        trace : ForwardTrace
            From :meth:`trace`.
        grad_logits : array_like of float, shape (n, out_features)
            :math:`\partial L / \partial z` of the loss with respect to the logits.

        Returns
        -------
        dict of str to numpy.ndarray
            Same names, shapes and dtype as :attr:`~qlib.MLP.params`.

        Raises
        ------
        TypeError, ValueError
            If ``trace`` is not a :class:`ForwardTrace` or ``grad_logits`` does not match its logits.
        """
        if not isinstance(trace, ForwardTrace):
            raise TypeError(f"trace must be a ForwardTrace from MLP.trace, got {type(trace).__name__}")
        delta = as_float_array(grad_logits, "grad_logits")
        if delta.shape != trace.logits.shape:
            raise ValueError(f"grad_logits must have the shape of the logits {trace.logits.shape}, got {delta.shape}")
        delta = delta.astype(_ACCUMULATE, copy=False)
        dtype = self.dtype
        grads: dict[str, np.ndarray] = {}
        for i in range(len(self.layers) - 1, -1, -1):
            ln = self.layers[i]
            grad_weight = delta.T @ trace.inputs[i].astype(_ACCUMULATE, copy=False)
            grads[f"{ln}.weight"] = grad_weight.astype(dtype, copy=False)
            grads[f"{ln}.bias"] = delta.sum(axis=0).astype(dtype, copy=False)
            if i > 0:
                delta = delta @ trace.params[f"{ln}.weight"].astype(_ACCUMULATE, copy=False)
                delta *= trace.preacts[i - 1] > 0
        return {k: grads[k] for k in self.params}

    def loss_and_grads(self, x, y, *, teacher_logits=None, temperature=4.0, alpha=0.9):
        r"""The batch-mean loss and its gradient with respect to every parameter (backpropagation).

        Without ``teacher_logits`` the loss is the mean cross-entropy
        (:class:`~qlib.CrossEntropyLoss`); with them, the distillation loss of
        :func:`qlib.distillation_loss` (:class:`~qlib.DistillationLoss`,
        Hinton et al. 2015). The gradient with respect to the logits is then
        propagated back by :meth:`backward`.

        Parameters
        ----------
        x : array_like of float, shape (n, in_features)
        y : array_like of int, shape (n,), or None
            Class labels in ``[0, out_features)``. May be None only with
            ``teacher_logits`` and ``alpha=1`` (pure distillation).
        teacher_logits : array_like of float, shape (n, out_features), optional
            The teacher's logits for the same rows.
        temperature, alpha : float
            Passed to :func:`qlib.distillation_loss_grad` with ``teacher_logits``.

        Returns
        -------
        loss : float
        grads : dict of str to numpy.ndarray
            Same names, shapes and dtype as :attr:`~qlib.MLP.params`.

        Raises
        ------
        TypeError, ValueError
            If ``x``, ``y`` or ``teacher_logits`` has the wrong type or shape,
            or a label is out of range.

        Examples
        --------
        >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
        >>> x = np.random.default_rng(1).random((6, 4), dtype=np.float32)
        >>> loss, g = m.loss_and_grads(x, [0, 1, 2, 0, 1, 2])
        >>> round(loss, 4), g["fc1.weight"].shape, g["fc2.bias"].dtype
        (1.1101, (8, 4), dtype('float32'))
        """
        xa = self.check_input(x)
        batch = {"x": xa}
        if y is not None:
            batch["y"] = y
        if teacher_logits is None:
            loss = CrossEntropyLoss()
        else:
            batch["teacher_logits"] = teacher_logits
            loss = DistillationLoss(temperature=temperature, alpha=alpha)
        loss.validate(self, batch)
        return loss(self, batch)
