r"""Quantization-aware training (QAT) of the MLP, by composition with :func:`~qlib.fit`.

Post-training quantization rounds the weights of a trained model once and
lives with the damage; at 2 or 3 bits the damage is large. Quantization-aware
training lets the training see the rounding: the forward pass runs on
*fake-quantized* weights :math:`\hat W = Q(W)` while the optimizer updates the
float ("latent", "shadow") weights :math:`W`, so the weights move to where
their rounded values work (Jacob et al. 2018, arXiv:1712.05877; Courbariaux
et al. 2015, arXiv:1511.00363). Rounding has zero derivative almost
everywhere, so the backward pass uses the straight-through estimator (STE,
Bengio et al. 2013, arXiv:1308.3432): :math:`\partial \hat W / \partial W = 1`
inside the clipping range of the quantizer and 0 outside it
(:func:`~qlib.fake_quantize_backward`).

Nothing in the training loop changes: :class:`~qlib.QuantizationAwareLoss` is a loss
(``loss(model, batch) -> (value, grads)``, :mod:`qlib.models.losses`) that
wraps another one. On each call it

1. fake-quantizes every weight (the rule of :func:`~qlib.is_weight`) with its
   current :class:`~qlib.Quantizer`; biases stay in float;
2. runs the base loss on the model with those weights
   (:meth:`~qlib.MLP.trace` with replacement ``params``, the base loss's
   :meth:`~qlib.LogitLoss.logit_loss`, :meth:`~qlib.MLP.backward`), which gives
   :math:`\partial L / \partial \hat W` and the biases' gradients;
3. maps :math:`\partial L/\partial \hat W` to the float weights by the STE
   (``grad_x`` of :func:`~qlib.fake_quantize_backward`: zero outside the
   clipping range) and returns those gradients to :func:`~qlib.fit`'s optimizer.

**The scales.** Three policies (``learn_scale``, ``recalibrate``):

*fixed* (default)
    calibrated once, on the weights at the first call (or
    :meth:`~qlib.QuantizationAwareLoss.initialize`), with :func:`~qlib.calibrate`
    (``method``), and kept. A weight that grows past the range is clipped
    and gets no gradient.
*recalibrated* (``recalibrate=True``)
    recomputed from the current weights at every call, as Jacob et al. 2018
    do for weights (min-max of the weights at each step; their moving
    averages are for activations). With ``method="minmax"`` nothing is ever
    clipped, so the STE passes every gradient.
*learned* (``learn_scale=True``)
    LSQ (learned step size quantization, Esser et al. 2020,
    arXiv:1902.08153): each per-channel scale :math:`s` is a trainable
    parameter with the gradient :math:`\partial L/\partial s` of
    :func:`~qlib.fake_quantize_backward` (``grad_scale``), multiplied by
    LSQ's gradient scale :math:`g = 1/\sqrt{N_w q_{max}}` (:math:`N_w` weights
    per scale, :math:`q_{max}` LSQ's :math:`Q_P`: :math:`2^{b-1}-1` on the
    symmetric grid, :math:`2^b - 1` on an asymmetric one, as LSQ's unsigned
    data) and applied by an :class:`~qlib.Adam` of its own (learning
    rate ``scale_lr``) inside the loss call, after the gradients are
    computed: weights and scales take one simultaneous step. Scales are kept
    at least :math:`2^{-23}` (the floor of :func:`~qlib.calibrate`).

    The initial scales come from the calibration by default
    (``scale_init="calibrate"``): starting from a trained model, the first
    forward pass is then the post-training-quantized model (up to an ulp of
    the scale, see :meth:`~qlib.QuantizationAwareLoss.calibrate_weight`), so what
    QAT gains over PTQ is measured from the same start for fixed and
    learned scales. ``scale_init="lsq"`` is LSQ's own initialisation
    :math:`s = 2\,\overline{|w|}/\sqrt{q_{max}}` per channel, designed for
    training from scratch. On the trained test-bed MLP at 2 bits it is the
    better start (about a tenth of each row clipped, 42 % of the weights
    nonzero, against 20 % under min-max), and the
    better end point after fine-tuning; at 3 and 4 bits the two are within
    the noise of the 359 validation rows.

**Deviations from LSQ.** LSQ trains with SGD, where :math:`g` balances the
update of the scales against the weights'. Adam divides each gradient by
its own running magnitude, which cancels a constant factor such as
:math:`g` (up to Adam's :math:`\epsilon`): it is applied for fidelity, and the
step of the scales is set by ``scale_lr``. The zero point of an asymmetric
grid is kept fixed while its scale is learned (LSQ+, Bhalgat et al. 2020,
arXiv:2004.09576, learns an offset too).

**Activations** (``act_bits``, optional): the input of every dense layer is
fake-quantized per tensor on the int8-style signed grid (asymmetric), with
ranges calibrated once (:func:`~qlib.calibrate_activations`, min-max, run on
the fake-quantized weights) on the data given to
:meth:`~qlib.QuantizationAwareLoss.initialize`, or on the first minibatch;
:meth:`~qlib.MLP.backward` passes the gradient through them unchanged (STE
without a clipping mask). Jacob et al. track activation ranges by moving
averages; fixed calibrated ranges are used here.

After training, :meth:`~qlib.QuantizationAwareLoss.quantized_params` gives the
fake-quantized weights for ``model.accuracy(x, y, params=...)``,
:attr:`~qlib.QuantizationAwareLoss.quantizers` the quantizers (codes by
:func:`~qlib.quantize`) and :meth:`~qlib.QuantizationAwareLoss.nbytes` the storage.
:func:`~qlib.qat_finetune` is the one-call form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.fake_quant import fake_quantize_backward
from qlib.core.grid import Quantizer
from qlib.core.metrics import size_bytes
from qlib.core.packing import packed_nbytes
from qlib.core.uniform import fake_quantize
from qlib.core.validation import check_bits, check_bool, check_choice, check_real
from qlib.methods.params import is_weight
from qlib.models.losses import CrossEntropyLoss
from qlib.models.mlp import MLP
from qlib.models.optim import Adam
from qlib.models.simulate import activation_quantizer, calibrate_activations
from qlib.models.training import fit

__all__ = ["QuantizationAwareLoss", "RecordQuantizedAccuracy", "qat_finetune"]

_SCALE_FLOOR = float(np.finfo(np.float32).eps)  # as qlib.calibrate
_INITS = ("calibrate", "lsq")


def _with_scale(q: Quantizer, scale) -> Quantizer:
    """``q`` with another scale (same grid, zero point and granularity)."""
    return Quantizer(scale, q.zero_point, bits=q.bits, signed=q.signed, narrow_range=q.narrow_range,
                     axis=q.axis, group_size=q.group_size)


def _check_batch(batch) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of name -> array, got {type(batch).__name__}")
    if "x" not in batch:
        raise ValueError(f"batch must hold 'x' (the inputs), got keys {sorted(batch)}")


class QuantizationAwareLoss:
    r"""A loss that trains the float weights through their fake-quantized values (QAT, STE; optionally LSQ).

    See :mod:`qlib.models.qat` for the algorithm. Called as
    ``loss(model, batch) -> (value, grads)``: ``value`` is the base loss of
    the model with fake-quantized weights, ``grads`` the STE gradients with
    respect to the float weights (zero where a weight is clipped) and the
    biases. With ``learn_scale`` the call also updates the scales.

    Parameters
    ----------
    base_loss : loss, default CrossEntropyLoss()
        A :class:`~qlib.LogitLoss` (e.g. :class:`~qlib.CrossEntropyLoss`,
        :class:`~qlib.DistillationLoss`), run on the quantized model through
        :meth:`~qlib.LogitLoss.logit_loss`; or any ``loss(model, batch)``,
        then run on an :class:`~qlib.MLP` holding the quantized weights (no
        ``act_bits`` then).
    bits : int, default 4
        Width of the weights' grid, 2 to 16.
    per_channel : bool, default True
        One scale per output channel (``axis=0``), else one per tensor.
    symmetric : bool, default True
        Symmetric narrow grid :math:`[-(2^{b-1}-1), 2^{b-1}-1]`, zero point 0
        (as :func:`~qlib.calibrate`); False for the asymmetric grid.
    method : {"minmax", "mse", "percentile"}, default "minmax"
        The calibration of the initial (or recalibrated) scales.
    learn_scale : bool, default False
        Learn the scales (LSQ).
    recalibrate : bool, default False
        Recalibrate the scales from the current weights at every call
        (exclusive with ``learn_scale``).
    scale_init : {"calibrate", "lsq"}, default "calibrate"
        With ``learn_scale``: start from the calibration, or from LSQ's
        :math:`2\,\overline{|w|}/\sqrt{q_{max}}` (symmetric grids only).
    scale_lr : float, default 1e-3
        Learning rate of the scales' Adam.
    act_bits : int, optional
        Also fake-quantize the input of every dense layer on this many bits.
    ste : {"clipped", "identity"}, default "clipped"
        The weights' straight-through estimator: ``"clipped"`` passes the
        gradient only where a weight lies in the grid's range (LSQ,
        TensorFlow's FakeQuant); ``"identity"`` passes every gradient
        unchanged (the plain STE of Bengio et al. 2013), so that a weight
        beyond the range keeps moving although its code no longer changes.

    Attributes
    ----------
    quantizers : dict of str to Quantizer or None
        The weights' current quantizers (None before the first call or :meth:`~qlib.QuantizationAwareLoss.initialize`).
    scales, gradient_scale : dict
        With ``learn_scale``, the float64 scales being learned (updated by
        ``scale_optimizer``, an :class:`~qlib.Adam`); LSQ's :math:`g` of each weight.
    act_ranges, act_quant : ActivationRanges, dict of str to callable, or None
        With ``act_bits``: the activation quantizers, and as ``model.forward(act_quant=...)`` takes them.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or range, or the options contradict each other.

    Examples
    --------
    Ternary rows (2 bits: codes -1, 0, 1 times the row's max :math:`|w|`); the loss
    runs on the quantized weights, and a weight that has grown past the kept
    range gets no gradient (logits ``[1, 1.5]``, so
    :math:`\partial L/\partial z_0 = \sigma(-0.5) = 0.3775` and row 0 of the
    gradient is :math:`0.3775\,x = [0.3775, 0.7551]`, masked where clipped):

    >>> m = MLP({"fc1.weight": np.array([[1.0, -0.25], [0.5, 0.5]]), "fc1.bias": np.zeros(2)})
    >>> loss = QuantizationAwareLoss(bits=2)
    >>> loss.initialize(m)
    >>> loss.quantizers["fc1.weight"].scale
    array([1. , 0.5], dtype=float32)
    >>> loss.quantized_params(m)["fc1.weight"]
    array([[1. , 0. ],
           [0.5, 0.5]])
    >>> m.params["fc1.weight"][0, 0] = 2.0          # past the range [-1, 1] of row 0
    >>> value, grads = loss(m, {"x": np.array([[1.0, 2.0]]), "y": np.array([1])})
    >>> grads["fc1.weight"][0].round(4)
    array([0.    , 0.7551])
    """

    def __init__(self, base_loss=None, *, bits=4, per_channel=True, symmetric=True, method="minmax",
                 learn_scale=False, recalibrate=False, scale_init="calibrate", scale_lr=1e-3, act_bits=None,
                 ste="clipped"):
        self.base_loss = CrossEntropyLoss() if base_loss is None else base_loss
        if not callable(self.base_loss):
            raise TypeError(f"base_loss must be a loss, callable as loss(model, batch), got "
                            f"{type(self.base_loss).__name__}")
        self.bits = check_bits(bits)
        self.per_channel = check_bool(per_channel, "per_channel")
        self.symmetric = check_bool(symmetric, "symmetric")
        self.method = check_choice(method, "method", ("minmax", "mse", "percentile"))
        self.learn_scale = check_bool(learn_scale, "learn_scale")
        self.recalibrate = check_bool(recalibrate, "recalibrate")
        if self.learn_scale and self.recalibrate:
            raise ValueError("learn_scale and recalibrate exclude each other: learned scales are not recalibrated")
        self.scale_init = check_choice(scale_init, "scale_init", _INITS)
        if self.scale_init == "lsq" and not self.symmetric:
            raise ValueError("scale_init='lsq' needs a symmetric grid (symmetric=True)")
        self.scale_lr = check_real(scale_lr, "scale_lr", lo=0.0, lo_open=True)
        self.act_bits = None if act_bits is None else check_bits(act_bits, "act_bits")
        self.ste = check_choice(ste, "ste", ("clipped", "identity"))
        if self.act_bits is not None and not callable(getattr(self.base_loss, "logit_loss", None)):
            raise ValueError("act_bits needs a base loss with logit_loss(logits, batch) (a qlib.LogitLoss)")
        self.reset()

    def __repr__(self) -> str:
        mode = "learned (LSQ)" if self.learn_scale else ("recalibrated" if self.recalibrate else "fixed")
        return (f"QuantizationAwareLoss({self.base_loss!r}, bits={self.bits}, per_channel={self.per_channel}, "
                f"symmetric={self.symmetric}, method={self.method!r}, scales={mode}, act_bits={self.act_bits})")

    # -- state ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget the quantizers, learned scales and activation ranges (the next call re-initialises)."""
        self.quantizers: dict[str, Quantizer] | None = None
        self.scales: dict[str, np.ndarray] = {}
        self.gradient_scale: dict[str, float] = {}
        self.shapes: dict[str, tuple] = {}
        self.act_ranges = None
        self.act_quant = None
        self.scale_optimizer = Adam(self.scale_lr)

    def calibrate_weight(self, weight) -> Quantizer:
        r"""The quantizer :func:`~qlib.calibrate` gives ``weight`` with this loss's grid and ``method``.

        A symmetric min-max scale is then rounded *up* to float32 where needed
        (by an ulp, rarely two): :func:`~qlib.calibrate` rounds
        :math:`\max|w| / q_{max}` to the nearest float32, which may leave the
        largest weight of a channel a hair outside the range, where the STE
        would cut its gradient.
        """
        q = calibrate(weight, bits=self.bits, symmetric=self.symmetric, axis=0 if self.per_channel else None,
                      method=self.method)
        if not (self.symmetric and self.method == "minmax"):
            return q
        top = np.max(np.abs(np.asarray(weight, dtype=np.float64)), axis=1 if self.per_channel else None)
        scale = np.array(q.scale, dtype=np.float32)
        over = top / scale.astype(np.float64) > q.qmax
        while np.any(over):
            scale = np.where(over, np.nextafter(scale, np.float32(np.inf)), scale)
            over = top / scale.astype(np.float64) > q.qmax
        return _with_scale(q, scale)

    def initialize(self, model, x=None) -> None:
        r"""Calibrate the weights' quantizers on ``model`` (and the activations' on ``x`` with ``act_bits``).

        ``x`` (shape ``(n, in_features)``) is required with ``act_bits``. The first
        loss call initialises the loss if needed (its minibatch as ``x``); calling it
        again starts over (scales and their optimizer included). Raises TypeError or
        ValueError if ``model`` is not an MLP, or ``x`` is missing when needed or does not fit.
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
        if self.act_bits is not None and x is None:
            raise ValueError("x (calibration inputs) must be given to initialize activation ranges (act_bits)")
        self.reset()
        quantizers = {}
        for name, w in model.params.items():
            if not is_weight(name, w):
                continue
            q = self.calibrate_weight(w)
            n_per_scale = w.size / np.size(q.scale)
            positive_levels = q.qmax if self.symmetric else q.levels - 1
            self.gradient_scale[name] = 1.0 / math.sqrt(n_per_scale * positive_levels)
            if self.learn_scale and self.scale_init == "lsq":
                mean_abs = np.mean(np.abs(w.astype(np.float64)), axis=1 if self.per_channel else None)
                q = _with_scale(q, np.maximum(2.0 * mean_abs / math.sqrt(q.qmax), _SCALE_FLOOR))
            quantizers[name], self.shapes[name] = q, w.shape
            if self.learn_scale:
                self.scales[name] = np.array(q.scale, dtype=np.float64)
        self.quantizers = quantizers
        if self.act_bits is not None:
            self.act_ranges = calibrate_activations(model, x, bits=self.act_bits,
                                                    params=self.quantized_params(model))
            self.act_quant = activation_quantizer(self.act_ranges)

    def current_quantizers(self, model) -> dict[str, Quantizer]:
        """The quantizers of ``model``'s weights now: recalibrated on them with ``recalibrate``, else the kept ones.

        Raises
        ------
        ValueError
            If the loss has not been initialised, or was initialised on a model of other weights.
        """
        if self.quantizers is None:
            raise ValueError("the loss has no quantizers yet: call loss.initialize(model) or train with it first")
        names = [name for name, w in model.params.items() if is_weight(name, w)]
        if {n: model.params[n].shape for n in names} != self.shapes:
            raise ValueError(f"the loss was initialised on another model (weights {list(self.quantizers)}); "
                             f"call loss.initialize(model) or loss.reset() first")
        if self.recalibrate:
            self.quantizers = {name: self.calibrate_weight(model.params[name]) for name in names}
        return self.quantizers

    # -- the loss ------------------------------------------------------------

    def quantized_params(self, model) -> dict[str, np.ndarray]:
        """``model``'s parameters with every weight fake-quantized by its current quantizer (biases copied).

        In ``model``'s dtype, for ``model.accuracy(x, y, params=..., act_quant=loss.act_quant)``.
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
        return self.apply_quantizers(model, self.current_quantizers(model))

    @staticmethod
    def apply_quantizers(model, quantizers) -> dict[str, np.ndarray]:
        """``model``'s parameters with each weight named in ``quantizers`` fake-quantized by its quantizer."""
        return {name: fake_quantize(p, quantizers[name]).astype(p.dtype, copy=False) if name in quantizers
                else p.copy() for name, p in model.params.items()}

    def validate(self, model, data) -> None:
        """Check ``data`` before training: the base loss's checks."""
        validate = getattr(self.base_loss, "validate", None)
        if validate is not None:
            validate(model, data)

    def gradients(self, model, batch):
        r"""``(value, grads, scale_grads)`` at the current quantizers, without updating anything.

        ``scale_grads`` maps each weight name to :math:`\partial L/\partial s`
        (``grad_scale`` of :func:`~qlib.fake_quantize_backward`, float64, the
        shape of the quantizer's scale), *without* LSQ's factor :math:`g`. The
        first call initialises the quantizers (on ``batch["x"]`` for the
        activations).
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
        _check_batch(batch)
        if self.quantizers is None:
            self.initialize(model, batch["x"])
        quantizers = self.current_quantizers(model)
        params = self.apply_quantizers(model, quantizers)
        if callable(getattr(self.base_loss, "logit_loss", None)):
            trace = model.trace(batch["x"], params=params, act_quant=self.act_quant)
            value, grad_logits = self.base_loss.logit_loss(trace.logits, batch)
            grads = model.backward(trace, grad_logits)
        else:
            value, grads = self.base_loss(MLP(params), batch)
        scale_grads = {}
        for name, q in quantizers.items():
            grad_w, grad_scale = fake_quantize_backward(model.params[name], q, grads[name])
            grads[name] = grad_w if self.ste == "clipped" else grads[name]
            scale_grads[name] = np.array(grad_scale, dtype=np.float64)
        return float(value), grads, scale_grads

    def __call__(self, model, batch):
        """``(value, grads)`` of the quantized model on ``batch``; with ``learn_scale``, one LSQ step of the scales."""
        value, grads, scale_grads = self.gradients(model, batch)
        if self.learn_scale:
            self.scale_optimizer.step(self.scales, {name: g * self.gradient_scale[name]
                                                    for name, g in scale_grads.items()})
            for name, s in self.scales.items():
                np.maximum(s, _SCALE_FLOOR, out=s)
                self.quantizers[name] = _with_scale(self.quantizers[name], s)
        return value, grads

    def nbytes(self, model) -> int:
        """Storage of the quantized model in bytes: packed ``bits``-bit codes, float32 scales, float biases.

        The codes are counted by :func:`~qlib.packed_nbytes` (2 bytes a code
        above 8 bits), each scale as a float32, each nonzero zero point in
        the grid's integer type, every other tensor at its own dtype: the
        convention of :func:`~qlib.quantize_params`.
        """
        quantizers = self.current_quantizers(model)
        total = 0
        for name, p in model.params.items():
            if name not in quantizers:
                total += size_bytes(p)
                continue
            q = quantizers[name]
            total += packed_nbytes(p.size, self.bits) if self.bits <= 8 else 2 * p.size
            total += size_bytes(np.asarray(q.scale))
            if np.any(q.zero_point):
                total += size_bytes(np.asarray(q.zero_point))
        return int(total)


class RecordQuantizedAccuracy:
    """A training hook: after every epoch, the accuracy on ``(x, y)`` of the model as ``loss`` quantizes it.

    Appends ``model.accuracy(x, y, params=loss.quantized_params(model), act_quant=loss.act_quant)``
    to ``history[key]``.

    Parameters: ``loss`` (a :class:`~qlib.QuantizationAwareLoss`), ``x`` of shape
    ``(n, in_features)``, ``y`` of ``n`` labels, ``key`` (default ``"val_accuracy"``).
    """

    def __init__(self, loss, x, y, key="val_accuracy"):
        if not isinstance(loss, QuantizationAwareLoss):
            raise TypeError(f"loss must be a QuantizationAwareLoss, got {type(loss).__name__}")
        self.loss, self.x, self.y, self.key = loss, x, y, key

    def on_train_begin(self, model) -> None:
        self.x = model.check_input(self.x, "x_val")
        self.y = model.check_labels(self.y, self.x.shape[0], "y_val")

    def on_epoch_end(self, model, epoch, history) -> None:
        acc = model.accuracy(self.x, self.y, params=self.loss.quantized_params(model), act_quant=self.loss.act_quant)
        history.setdefault(self.key, []).append(acc)


def qat_finetune(model, data, *, bits=4, learn_scale=False, epochs, rng, lr=1e-3, batch_size=32, scale_lr=1e-3,
                 per_channel=True, symmetric=True, method="minmax", recalibrate=False, scale_init="calibrate",
                 act_bits=None, base_loss=None, x_val=None, y_val=None):
    """Fine-tune ``model`` in place by quantization-aware training; return its quantized form.

    :func:`~qlib.fit` with a :class:`~qlib.QuantizationAwareLoss` of these options
    (initialised on ``model`` and ``data["x"]``), :class:`~qlib.Adam` of
    learning rate ``lr`` for the weights and, with ``x_val``, the hook
    :class:`~qlib.RecordQuantizedAccuracy`. ``model`` keeps the float (latent)
    weights; fine-tune a ``model.copy()`` to keep the original.

    Parameters
    ----------
    model : MLP
        A trained float model, fine-tuned in place.
    data : mapping of str to array_like
        As for :func:`~qlib.fit`: ``"x"``, ``"y"`` (and what ``base_loss`` reads).
    bits, learn_scale, scale_lr, per_channel, symmetric, method, recalibrate, scale_init, act_bits, base_loss
        As in :class:`~qlib.QuantizationAwareLoss`.
    epochs, rng
        As for :func:`~qlib.fit`.
    lr : float, default 1e-3
        The weights' learning rate (lower than training from scratch: this is fine-tuning).
    batch_size : int, default 32
    x_val, y_val : array_like, optional
        Record the quantized model's accuracy on them after every epoch (``"val_accuracy"``).

    Returns
    -------
    params : dict of str to numpy.ndarray
        The fake-quantized parameters (model dtype), for ``model.accuracy(x, y, params=params)``.
    quantizers : dict of str to Quantizer
        The weights' quantizers; with ``act_bits`` also the activation
        quantizers under the layer names (``"fc1"``, ...), which
        ``qlib.activation_quantizer({k: quantizers[k] for k in model.layers})`` turns into ``act_quant``.
    history : dict
        As :func:`~qlib.fit` returns it.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type, shape or range.

    Examples
    --------
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> model = MLP.init((64, 32, 10), np.random.default_rng(0))
    >>> _ = qlib.train(model, d["x_train"], d["y_train"], epochs=10, rng=np.random.default_rng(1))
    >>> ptq = model.accuracy(d["x_val"], d["y_val"], params=qlib.fake_quantize_weights(model.params, bits=2))
    >>> params, quantizers, hist = qat_finetune(model, {"x": d["x_train"], "y": d["y_train"]}, bits=2,
    ...     epochs=3, rng=np.random.default_rng(2), x_val=d["x_val"], y_val=d["y_val"])
    >>> qat = model.accuracy(d["x_val"], d["y_val"], params=params)
    >>> qat > ptq + 0.05, len(hist["val_accuracy"]), quantizers["fc1.weight"].qmax
    (True, 3, 1)
    """
    loss = QuantizationAwareLoss(base_loss, bits=bits, per_channel=per_channel, symmetric=symmetric, method=method,
                                 learn_scale=learn_scale, recalibrate=recalibrate, scale_init=scale_init,
                                 scale_lr=scale_lr, act_bits=act_bits)
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    if not isinstance(data, Mapping) or "x" not in data:
        raise TypeError("data must be a mapping of name -> array with the inputs under 'x'")
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    loss.initialize(model, model.check_input(data["x"], "data['x']"))
    hooks = [] if x_val is None else [RecordQuantizedAccuracy(loss, x_val, y_val)]
    history = fit(model, data, epochs=epochs, rng=rng, loss=loss, optimizer=Adam(lr), batch_size=batch_size,
                  hooks=hooks)
    quantizers = dict(loss.current_quantizers(model))
    if loss.act_ranges is not None:
        quantizers.update({layer: q for layer, q in loss.act_ranges.items() if layer in model.layers})
    return loss.quantized_params(model), quantizers, history
