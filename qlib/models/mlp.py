r"""A small multilayer perceptron in numpy, its training, and the digits data: the book's test bed.

The methods of the book are measured on a model that learns something: a
fully connected network (multilayer perceptron, MLP) that classifies the
8 x 8 images of handwritten digits that scikit-learn ships
(:func:`~qlib.load_digits_split`). Everything is plain numpy, small enough to read
and fast enough to train in well under a second.

**Conventions** (PyTorch's). A dense layer ``fcK`` holds a weight of shape
``(out_features, in_features)`` and a bias of shape ``(out_features,)`` and
computes :math:`y = x W^\top + b` on a batch ``x`` of shape ``(n, in_features)``.
Per-output-channel quantization of a weight is therefore ``axis=0`` (one
scale per row). Parameters live in the ordered dict :attr:`~qlib.MLP.params` under
the names ``"fc1.weight"``, ``"fc1.bias"``, ``"fc2.weight"``, ... Every hidden
layer is followed by a ReLU; the last layer returns logits (no softmax).

**Training** (:func:`~qlib.train`) is minibatch Adam (Kingma and Ba, 2015,
arXiv:1412.6980) on the mean cross-entropy, or on the distillation loss of
:func:`qlib.distillation_loss_grad` when teacher logits are given. All the
randomness (initialization, the order of the minibatches) comes from the
``numpy.random.Generator`` passed in, so a run is reproducible bit for bit.

**Quantized evaluation.** :meth:`~qlib.MLP.forward` takes replacement parameters
(e.g. fake-quantized weights from :func:`~qlib.fake_quantize_weights`) and an
activation quantizer applied to the input of every dense layer (from
:func:`~qlib.calibrate_activations` and :func:`~qlib.activation_quantizer`), so
"int8 per-channel weights, int8 activations" is::

    wq = qlib.fake_quantize_weights(model.params, bits=8)
    aq = qlib.activation_quantizer(qlib.calibrate_activations(model, x_val, bits=8))
    model.accuracy(x_test, y_test, params=wq, act_quant=aq)

Integer-only inference of the same model is in :mod:`qlib.intinfer`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping

import numpy as np

from qlib.core.validation import as_float_array, check_int, check_rng
from qlib.core.calibration import calibrate
from qlib.core.uniform import fake_quantize

__all__ = [
    "load_digits_split",
    "MLP",
    "train",
    "fake_quantize_weights",
    "ActivationRanges",
    "calibrate_activations",
    "activation_quantizer",
]


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is a book dependency
        raise ImportError(
            "load_digits_split needs scikit-learn (pip install scikit-learn), "
            "which ships the digits data set"
        ) from exc
    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits_split(seed=0) -> dict[str, np.ndarray]:
    """The handwritten digits of scikit-learn, split 60/20/20 into train, validation and test.

    The data set (``sklearn.datasets.load_digits``, bundled with
    scikit-learn, no download) holds 1797 grey-level images of 8 x 8 pixels,
    each pixel an integer from 0 to 16, of the digits 0 to 9 (about 180 per
    class). Pixels are divided by 16 to lie in [0, 1] and flattened to 64
    features.

    The split is *stratified*: within each class, the samples are shuffled by
    ``numpy.random.default_rng(seed)`` and the first 60 % (rounded) go to the
    training set, the next 20 % to validation, the rest to test; each set is
    then shuffled. The same ``seed`` always gives the same split.

    Parameters
    ----------
    seed : int, default 0
        Seed of the split (a non-negative integer).

    Returns
    -------
    dict of numpy.ndarray
        ``"x_train"``, ``"x_val"``, ``"x_test"``: float32 arrays of shape
        ``(n, 64)`` with values in [0, 1]; ``"y_train"``, ``"y_val"``,
        ``"y_test"``: int64 labels 0 to 9. Sizes 1078, 359 and 360. The arrays
        are fresh copies (free to modify).

    Raises
    ------
    TypeError
        If ``seed`` is not an integer.
    ValueError
        If ``seed`` is negative.
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> d = load_digits_split(seed=0)
    >>> d["x_train"].shape, d["x_val"].shape, d["x_test"].shape
    ((1078, 64), (359, 64), (360, 64))
    >>> d["x_train"].dtype, d["y_train"].dtype, float(d["x_train"].max())
    (dtype('float32'), dtype('int64'), 1.0)
    >>> np.bincount(d["y_test"])
    array([35, 37, 36, 36, 36, 37, 36, 36, 35, 36])
    """
    s = check_int(seed, "seed", 0)
    x, y = _digits_raw()
    rng = np.random.default_rng(s)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(int(y.max()) + 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_train = int(round(0.6 * idx.size))
        n_val = int(round(0.2 * idx.size))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    out = {}
    for name, pieces in parts.items():
        idx = rng.permutation(np.concatenate(pieces))
        out[f"x_{name}"] = x[idx].copy()
        out[f"y_{name}"] = y[idx].copy()
    return {k: out[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


def _check_real(value, name: str, *, lo=None, lo_open=False, hi=None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
    return v


def _check_labels(y, n: int, n_classes: int, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an array of integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one label per row of x, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_classes):
        bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
        raise ValueError(f"{name} must hold class labels in [0, {n_classes - 1}], got {bad}")
    return arr.astype(np.int64, copy=False)


def _layer_names(params: Mapping) -> list[str]:
    """``["fc1", "fc2", ...]`` from the parameter names (checked to be complete)."""
    n = len(params) // 2
    names = [f"fc{i}" for i in range(1, n + 1)]
    expected = [f"{ln}.{kind}" for ln in names for kind in ("weight", "bias")]
    if len(params) == 0 or list(params) != expected:
        raise ValueError(
            f"params must hold exactly the names {expected or ['fc1.weight', 'fc1.bias', '...']} "
            f"in this order, got {list(params)}"
        )
    return names


def _check_params(params, name: str = "params", like: Mapping | None = None) -> dict[str, np.ndarray]:
    """Validated parameters: a dict of finite float arrays of consistent shapes."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a mapping of parameter name -> array, got {type(params).__name__}")
    try:
        layers = _layer_names(params)
    except ValueError as exc:
        raise ValueError(str(exc).replace("params must", f"{name} must", 1)) from None
    out: dict[str, np.ndarray] = {}
    prev_out = None
    for ln in layers:
        w = as_float_array(params[f"{ln}.weight"], f"{name}['{ln}.weight']", allow_int=False)
        b = as_float_array(params[f"{ln}.bias"], f"{name}['{ln}.bias']", allow_int=False)
        if w.ndim != 2:
            raise ValueError(f"{name}['{ln}.weight'] must be 2-D (out_features, in_features), got shape {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"{name}['{ln}.bias'] must have shape ({w.shape[0]},), got {b.shape}")
        if prev_out is not None and w.shape[1] != prev_out:
            raise ValueError(
                f"{name}['{ln}.weight'] must have {prev_out} input features (the previous layer's "
                f"outputs), got shape {w.shape}"
            )
        prev_out = w.shape[0]
        out[f"{ln}.weight"], out[f"{ln}.bias"] = w, b
    if like is not None:
        for k, v in like.items():
            if out[k].shape != v.shape:
                raise ValueError(f"{name}['{k}'] must have shape {v.shape} as the model's, got {out[k].shape}")
    return out


# ----------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


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


class MLP:
    r"""A multilayer perceptron with ReLU hidden layers, in numpy.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        ``"fc1.weight"`` (shape ``(h1, in)``), ``"fc1.bias"`` (``(h1,)``),
        ``"fc2.weight"`` (``(h2, h1)``), ... in this order; floating point,
        all of one dtype (the model computes in it). Copied. Usually built
        by :meth:`~qlib.MLP.init`.

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
        checked = _check_params(params)
        dtypes = {v.dtype for v in checked.values()}
        if len(dtypes) != 1:
            raise TypeError(f"params must all have one floating dtype, got {sorted(str(d) for d in dtypes)}")
        self.params: dict[str, np.ndarray] = {k: np.array(v) for k, v in checked.items()}
        self.layers: list[str] = _layer_names(self.params)

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
            The parameters' (and computation's) dtype.

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
        sz = [check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes)]
        check_rng(rng)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        params = {}
        for k, (n_in, n_out) in enumerate(zip(sz[:-1], sz[1:]), start=1):
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
        """The parameters' dtype, in which the model computes."""
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

    # -- computation --------------------------------------------------------

    def _input(self, x, name: str = "x") -> np.ndarray:
        xa = as_float_array(x, name)
        if xa.ndim != 2 or xa.shape[1] != self.sizes[0]:
            raise ValueError(
                f"{name} must have shape (n, {self.sizes[0]}), one row of {self.sizes[0]} features "
                f"per sample, got shape {xa.shape}"
            )
        return xa.astype(self.dtype, copy=False)

    def _params(self, params) -> dict[str, np.ndarray]:
        if params is None:
            return self.params
        p = _check_params(params, "params", like=self.params)
        return {k: v.astype(self.dtype, copy=False) for k, v in p.items()}

    def _forward(self, xa, p, quants, keep: bool):
        """Logits, and (if ``keep``) the input and pre-activation of each layer."""
        h = xa
        inputs, preacts = [], []
        last = len(self.layers) - 1
        for i, ln in enumerate(self.layers):
            if quants[i] is not None:
                h = np.asarray(quants[i](h)).astype(self.dtype, copy=False)
            if keep:
                inputs.append(h)
            z = h @ p[f"{ln}.weight"].T
            z += p[f"{ln}.bias"]
            if i < last:
                if keep:
                    preacts.append(z)
                h = np.maximum(z, 0)
            else:
                h = z
        return h, inputs, preacts

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
        xa = self._input(x)
        p = self._params(params)
        quants = _act_quantizers(act_quant, self.layers)
        return self._forward(xa, p, quants, keep=False)[0]

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
        xa = self._input(x)
        ya = _check_labels(y, xa.shape[0], self.sizes[-1])
        return float(np.mean(self.predict(xa, **kwargs) == ya))

    def loss_and_grads(self, x, y, *, teacher_logits=None, temperature=4.0, alpha=0.9):
        r"""The batch-mean loss and its gradient with respect to every parameter (backpropagation).

        Without ``teacher_logits`` the loss is the mean cross-entropy
        :math:`-\frac1n \sum_i \log \mathrm{softmax}(z_i)_{y_i}`, whose
        gradient with respect to the logits is
        :math:`(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / n`. With them,
        it is the distillation loss of :func:`qlib.distillation_loss_grad`
        (Hinton et al. 2015), which supplies the gradient with respect to the
        logits. That gradient is then propagated back through the layers:
        :math:`\partial W = \delta^\top h_{in}`, :math:`\partial b = \sum_i
        \delta_i`, and :math:`\delta_{prev} = (\delta W) \odot [z_{prev} > 0]`
        through each ReLU.

        Parameters
        ----------
        x : array_like of float, shape (n, in_features)
        y : array_like of int, shape (n,), or None
            Class labels in ``[0, out_features)``. May be None only with
            ``teacher_logits`` (pure distillation).
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
        xa = self._input(x)
        n = xa.shape[0]
        n_classes = self.sizes[-1]
        ya = None if y is None else _check_labels(y, n, n_classes)
        logits, inputs, preacts = self._forward(xa, self.params, [None] * len(self.layers), keep=True)
        if teacher_logits is None:
            if ya is None:
                raise ValueError("y must be given (class labels) unless teacher_logits is given")
            loss, delta = _cross_entropy_and_grad(logits, ya)
        else:
            t = as_float_array(teacher_logits, "teacher_logits")
            if t.shape != logits.shape:
                raise ValueError(
                    f"teacher_logits must have shape {logits.shape}, one row of {n_classes} logits "
                    f"per row of x, got {t.shape}"
                )
            loss, delta = _distillation_and_grad(logits, t, ya, temperature, alpha)
        delta = np.asarray(delta).astype(self.dtype, copy=False)
        return float(loss), self._backward(delta, inputs, preacts)

    def _backward(self, delta, inputs, preacts) -> dict[str, np.ndarray]:
        grads: dict[str, np.ndarray] = {}
        for i in range(len(self.layers) - 1, -1, -1):
            ln = self.layers[i]
            grads[f"{ln}.weight"] = delta.T @ inputs[i]
            grads[f"{ln}.bias"] = delta.sum(axis=0)
            if i > 0:
                delta = delta @ self.params[f"{ln}.weight"]
                delta *= preacts[i - 1] > 0
        return {k: grads[k] for k in self.params}


def _cross_entropy_and_grad(logits: np.ndarray, y: np.ndarray):
    n = logits.shape[0]
    logp = _log_softmax(logits.astype(np.float64))
    loss = -float(np.mean(logp[np.arange(n), y]))
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    grad /= n
    return loss, grad


def _distillation_and_grad(student, teacher, labels, temperature, alpha):
    """Loss and logit gradient of :func:`qlib.distillation_loss` (imported lazily)."""
    from qlib.methods.distillation import distillation_loss, distillation_loss_grad

    if labels is None and not (isinstance(alpha, numbers.Real) and float(alpha) == 1.0):
        raise ValueError(f"y (class labels) is required unless alpha == 1 (soft targets only), got alpha={alpha!r}")
    kw = {"temperature": temperature, "alpha": alpha}
    loss = distillation_loss(student, teacher, labels, **kw)
    grad = distillation_loss_grad(student, teacher, labels, **kw)
    return loss, grad


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------


def _check_masks(masks, params) -> dict[str, np.ndarray]:
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping parameter name -> bool array, got {type(masks).__name__}")
    out = {}
    for k, m in masks.items():
        if k not in params:
            raise ValueError(f"masks has key {k!r}, which is not a parameter of the model {list(params)}")
        arr = np.asarray(m)
        if arr.dtype != np.bool_:
            raise TypeError(f"masks[{k!r}] must be a bool array (True = keep), got dtype {arr.dtype}")
        if arr.shape != params[k].shape:
            raise ValueError(f"masks[{k!r}] must have shape {params[k].shape}, got {arr.shape}")
        out[k] = arr
    return out


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

    Each epoch visits the training rows once, in an order drawn from
    ``rng``, in minibatches of ``batch_size`` (the last one shorter). Each
    step computes :meth:`~qlib.MLP.loss_and_grads` on the minibatch and applies
    Adam (Kingma and Ba, 2015, arXiv:1412.6980; :math:`\beta_1 = 0.9`,
    :math:`\beta_2 = 0.999`, :math:`\epsilon = 10^{-8}`, bias-corrected
    moments): :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat
    v} + \epsilon)`. Adam was chosen over SGD with momentum because one
    learning rate works for every model and loss of the book (the teacher,
    smaller students, distillation and fine-tuning of pruned models).
    ``weight_decay`` adds :math:`\lambda W` to the gradient of every weight
    matrix (an L2 penalty :math:`\frac\lambda2\|W\|^2`; biases are not
    decayed).

    With ``masks``, each masked parameter is multiplied by its mask before
    training and after every step, and its gradient is masked too, so the
    pruned entries stay exactly zero (fine-tuning after pruning).

    The computation is deterministic: the same ``rng`` state, model and data
    give the same parameters bit for bit.

    Parameters
    ----------
    model : MLP
        Trained in place.
    x : array_like of float, shape (n, in_features)
    y : array_like of int, shape (n,), or None
        Labels; None only with ``teacher_logits`` (pure distillation).
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
    >>> d = load_digits_split()
    >>> model = MLP.init((64, 32, 10), np.random.default_rng(0))
    >>> hist = train(model, d["x_train"], d["y_train"], epochs=5, rng=np.random.default_rng(1))
    >>> len(hist["loss"]), hist["loss"][-1] < hist["loss"][0]
    (5, True)
    >>> model.accuracy(d["x_test"], d["y_test"]) > 0.9
    True
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    xa = model._input(x)
    n = xa.shape[0]
    n_classes = model.sizes[-1]
    ya = None if y is None else _check_labels(y, n, n_classes)
    n_epochs = check_int(epochs, "epochs", 1)
    check_rng(rng)
    eta = _check_real(lr, "lr", lo=0.0, lo_open=True)
    bs = check_int(batch_size, "batch_size", 1)
    wd = _check_real(weight_decay, "weight_decay", lo=0.0)
    mk = _check_masks(masks, model.params)
    t_all = None
    if teacher_logits is not None:
        t_all = as_float_array(teacher_logits, "teacher_logits")
        if t_all.shape != (n, n_classes):
            raise ValueError(
                f"teacher_logits must have shape {(n, n_classes)}, one row per row of x, got {t_all.shape}"
            )
        _check_real(temperature, "temperature", lo=0.0, lo_open=True)
        if _check_real(alpha, "alpha", lo=0.0, hi=1.0) != 1.0 and ya is None:
            raise ValueError(f"y (class labels) is required unless alpha == 1 (soft targets only), got alpha={alpha!r}")
    elif ya is None:
        raise ValueError("y must be given (class labels) unless teacher_logits is given")
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    if x_val is not None:
        xv = model._input(x_val, "x_val")
        yv = _check_labels(y_val, xv.shape[0], n_classes, "y_val")

    params = model.params
    dt = model.dtype
    for k, m in mk.items():
        params[k] *= m
    m1 = {k: np.zeros_like(v) for k, v in params.items()}
    m2 = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    history: dict[str, list[float]] = {"loss": []}
    if x_val is not None:
        history["val_accuracy"] = []
    for _ in range(n_epochs):
        order = rng.permutation(n)
        total, count = 0.0, 0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss, grads = model.loss_and_grads(
                xa[idx],
                None if ya is None else ya[idx],
                teacher_logits=None if t_all is None else t_all[idx],
                temperature=temperature,
                alpha=alpha,
            )
            total += loss * idx.size
            count += idx.size
            step += 1
            c1 = 1.0 - b1**step
            c2 = 1.0 - b2**step
            step_size = dt.type(eta * math.sqrt(c2) / c1)
            eps_hat = dt.type(eps * math.sqrt(c2))
            for k, g in grads.items():
                if wd and k.endswith(".weight"):
                    g += dt.type(wd) * params[k]
                if k in mk:
                    g *= mk[k]
                m1[k] *= dt.type(b1)
                m1[k] += dt.type(1.0 - b1) * g
                m2[k] *= dt.type(b2)
                m2[k] += dt.type(1.0 - b2) * (g * g)
                params[k] -= step_size * m1[k] / (np.sqrt(m2[k]) + eps_hat)
                if k in mk:
                    params[k] *= mk[k]
        history["loss"].append(total / count)
        if x_val is not None:
            history["val_accuracy"].append(model.accuracy(xv, yv))
    return history


# ----------------------------------------------------------------------------
# post-training quantization helpers
# ----------------------------------------------------------------------------


def fake_quantize_weights(params, *, bits=8, per_channel=True, symmetric=True, method="minmax", **calibrate_kwargs):
    """Fake-quantize every weight matrix of ``params``; biases are kept in float.

    Each ``"fcK.weight"`` is calibrated with :func:`qlib.calibrate` (per
    output channel, ``axis=0``, when ``per_channel``, else per tensor) and
    replaced by :func:`qlib.fake_quantize` of itself: the values its
    ``bits``-bit codes represent. Biases stay float (integer inference
    stores them as int32, whose error is negligible).

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        An MLP's parameters (:attr:`~qlib.MLP.params`).
    bits : int, default 8
    per_channel : bool, default True
    symmetric : bool, default True
        Symmetric restricted-range grid (zero point 0), as deployed int8
        weights are; False for the asymmetric (affine) grid.
    method : {"minmax", "percentile", "mse"}, default "minmax"
        The range of :func:`qlib.calibrate`.
    **calibrate_kwargs
        Passed on to :func:`qlib.calibrate` (``percentile``, ``num_candidates``).

    Returns
    -------
    dict of str to numpy.ndarray
        New parameters (same names, shapes, dtypes), for ``MLP.forward(params=...)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`qlib.calibrate`, or if ``params`` is not an MLP's parameters.

    Examples
    --------
    >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
    >>> wq = fake_quantize_weights(m.params, bits=2)      # ternary weights
    >>> [len(np.unique(wq["fc1.weight"][c])) <= 3 for c in range(3)]
    [True, True, True]
    >>> bool(np.all(wq["fc1.bias"] == m.params["fc1.bias"]))
    True
    """
    checked = _check_params(params)
    if not isinstance(per_channel, (bool, np.bool_)):
        raise TypeError(f"per_channel must be True or False, got {per_channel!r}")
    axis = 0 if per_channel else None
    out = {}
    for k, v in checked.items():
        if k.endswith(".weight"):
            s, z = calibrate(v, bits=bits, symmetric=symmetric, axis=axis, method=method, **calibrate_kwargs)
            out[k] = fake_quantize(v, s, z, bits=bits, axis=axis).astype(v.dtype, copy=False)
        else:
            out[k] = v.copy()
    return out


class ActivationRanges(dict):
    """Per-layer ``(scale, zero_point)`` of the inputs of an MLP's dense layers.

    A dict layer name (``"fc1"``, ...) -> ``(scale, zero_point)`` as returned
    by :func:`qlib.calibrate`, plus the grid they were computed for, so that
    :func:`~qlib.activation_quantizer` uses the same one.

    Attributes
    ----------
    bits : int
    signed : bool
    """

    def __init__(self, ranges, *, bits: int, signed: bool):
        super().__init__(ranges)
        self.bits = bits
        self.signed = signed

    def __repr__(self) -> str:
        items = ", ".join(f"{k!r}: ({float(s):.4g}, {int(z)})" for k, (s, z) in self.items())
        return f"ActivationRanges({{{items}}}, bits={self.bits}, signed={self.signed})"


def calibrate_activations(model: MLP, x, *, bits=8, signed=True, method="minmax", params=None,
                          include_output=False, **calibrate_kwargs) -> ActivationRanges:
    """Calibrate the quantization of the input of every dense layer on sample data.

    Runs the float model on ``x`` (a calibration set, e.g. the validation
    rows), records the input of each dense layer (the data itself for
    ``fc1``, the ReLU outputs after) and calls :func:`qlib.calibrate` on
    each, per tensor and asymmetric (affine), as activations usually are.

    Parameters
    ----------
    model : MLP
    x : array_like of float, shape (n, in_features)
        Calibration inputs.
    bits : int, default 8
    signed : bool, default True
        int8-style grid ``[-128, 127]`` (TensorFlow Lite's int8 scheme) or
        unsigned ``[0, 255]``.
    method : {"minmax", "percentile", "mse"}, default "minmax"
    params : mapping, optional
        Parameters to run instead of the model's (e.g. quantized weights).
    include_output : bool, default False
        Also calibrate the logits, under the key ``"output"``.
    **calibrate_kwargs
        Passed on to :func:`qlib.calibrate`.

    Returns
    -------
    ActivationRanges
        Layer name -> ``(scale, zero_point)``, with ``.bits`` and ``.signed``.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not an MLP, ``x`` does not fit it, or as :func:`qlib.calibrate`.

    Examples
    --------
    Pixels in [0, 1] get the int8 grid of step 1/255 with 0 at code -128:

    >>> d = load_digits_split()
    >>> m = MLP.init((64, 16, 10), np.random.default_rng(0))
    >>> r = calibrate_activations(m, d["x_val"])
    >>> s, z = r["fc1"]
    >>> round(float(s) * 255, 6), int(z), list(r), r.bits
    (1.0, -128, ['fc1', 'fc2'], 8)
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    if not isinstance(include_output, (bool, np.bool_)):
        raise TypeError(f"include_output must be True or False, got {include_output!r}")
    xa = model._input(x)
    p = model._params(params)
    logits, inputs, _ = model._forward(xa, p, [None] * len(model.layers), keep=True)
    tensors = dict(zip(model.layers, inputs))
    if include_output:
        tensors["output"] = logits
    ranges = {
        ln: calibrate(h, bits=bits, signed=signed, method=method, **calibrate_kwargs)
        for ln, h in tensors.items()
    }
    return ActivationRanges(ranges, bits=int(bits), signed=bool(signed))


def activation_quantizer(ranges, *, bits=None, signed=None) -> dict[str, Callable]:
    """Per-layer fake quantizers of activations, for ``MLP.forward(act_quant=...)``.

    Parameters
    ----------
    ranges : mapping of str to (scale, zero_point)
        Layer name -> quantization parameters, as from
        :func:`~qlib.calibrate_activations`. A key ``"output"`` is ignored.
    bits, signed : optional
        The grid; by default those recorded in ``ranges`` (an
        :class:`~qlib.ActivationRanges`), else 8 bits signed.

    Returns
    -------
    dict of str to callable
        Layer name -> ``h -> qlib.fake_quantize(h, scale, zero_point, bits=bits, signed=signed)``.

    Raises
    ------
    TypeError
        If ``ranges`` is not a mapping of pairs.

    Examples
    --------
    >>> aq = activation_quantizer({"fc1": (np.float32(0.5), np.int8(0))})
    >>> aq["fc1"](np.array([0.2, 0.3, 0.9], dtype=np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    if not isinstance(ranges, Mapping):
        raise TypeError(f"ranges must be a mapping layer name -> (scale, zero_point), got {type(ranges).__name__}")
    b = bits if bits is not None else getattr(ranges, "bits", 8)
    sg = signed if signed is not None else getattr(ranges, "signed", True)
    check_int(b, "bits", 2, 16)
    if not isinstance(sg, (bool, np.bool_)):
        raise TypeError(f"signed must be True or False, got {sg!r}")
    out = {}
    for ln, pair in ranges.items():
        if ln == "output":
            continue
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"ranges[{ln!r}] must be a pair (scale, zero_point), got {pair!r}")
        s, z = pair
        out[ln] = functools.partial(_fq, scale=s, zero_point=z, bits=int(b), signed=bool(sg))
    return out


def _fq(h, *, scale, zero_point, bits, signed):
    return fake_quantize(h, scale, zero_point, bits=bits, signed=signed)
