"""The simulation of a quantized MLP in float: fake-quantized weights and activations.

:func:`~qlib.fake_quantize_weights` replaces every weight of a model by the
values its codes represent, and :func:`~qlib.calibrate_activations` with
:func:`~qlib.activation_quantizer` builds, for :meth:`qlib.MLP.forward`, one
fake quantizer per dense layer input. Every quantizer is the
:class:`qlib.Quantizer` that :func:`qlib.calibrate` returned, applied with the
core kernel :func:`qlib.fake_quantize`: the grid chosen at calibration (the
narrow grid :math:`[-(2^{b-1}-1), 2^{b-1}-1]` of a symmetric calibration,
say) is the grid used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.grid import Quantizer
from qlib.core.uniform import fake_quantize
from qlib.core.validation import check_bool, check_choice, check_int, check_real
from qlib.methods.params import is_weight
from qlib.models.checks import check_params
from qlib.models.mlp import MLP

__all__ = [
    "fake_quantize_weights",
    "ActivationRanges",
    "calibrate_activations",
    "running_average_ranges",
    "activation_quantizer",
    "dynamic_quantizer",
]

_DYNAMIC = ("tensor", "batch", "token")


def fake_quantize_weights(params, *, bits=8, per_channel=True, symmetric=True, method="minmax", **calibrate_kwargs):
    """Fake-quantize every weight of ``params``; biases are kept in float.

    Each weight (:func:`qlib.is_weight`) is calibrated with
    :func:`qlib.calibrate` (per output channel, ``axis=0``, when
    ``per_channel``, else per tensor) and replaced by
    :func:`qlib.fake_quantize` of itself with that quantizer: the values its
    ``bits``-bit codes represent. Biases stay float (integer inference
    stores them as int32, whose error is negligible).

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        An MLP's parameters (:attr:`~qlib.MLP.params`).
    bits : int, default 8
    per_channel : bool, default True
    symmetric : bool, default True
        Symmetric grid (zero point 0, the narrow range of
        :func:`qlib.calibrate`), as deployed int8 weights are; False for the
        asymmetric (affine) grid.
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
    checked = check_params(params)
    axis = 0 if check_bool(per_channel, "per_channel") else None
    out = {}
    for name, tensor in checked.items():
        if is_weight(name, tensor):
            quantizer = calibrate(tensor, bits=bits, symmetric=symmetric, axis=axis, method=method, **calibrate_kwargs)
            out[name] = fake_quantize(tensor, quantizer).astype(tensor.dtype, copy=False)
        else:
            out[name] = tensor.copy()
    return out


class ActivationRanges(dict):
    """Per-layer quantizers of the inputs of an MLP's dense layers.

    A dict layer name (``"fc1"``, ...) -> the :class:`qlib.Quantizer` that
    :func:`qlib.calibrate` returned (it unpacks as ``scale, zero_point``),
    plus the grid they were computed for.

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
    rows; :meth:`qlib.MLP.trace`), records the input of each dense layer
    (the data itself for ``fc1``, the ReLU outputs after) and calls
    :func:`qlib.calibrate` on each, per tensor and asymmetric (affine), as
    activations usually are.

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
        Layer name -> :class:`qlib.Quantizer`, with ``.bits`` and ``.signed``.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not an MLP, ``x`` does not fit it, or as :func:`qlib.calibrate`.

    Examples
    --------
    Pixels in [0, 1] get the int8 grid of step 1/255 with 0 at code -128:

    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> m = MLP.init((64, 16, 10), np.random.default_rng(0))
    >>> r = calibrate_activations(m, d["x_val"])
    >>> s, z = r["fc1"]
    >>> round(float(s) * 255, 6), int(z), list(r), r.bits
    (1.0, -128, ['fc1', 'fc2'], 8)
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    check_bool(include_output, "include_output")
    trace = model.trace(x, params=params)
    tensors = dict(zip(model.layers, trace.inputs))
    if include_output:
        tensors["output"] = trace.logits
    ranges = {
        layer: calibrate(h, bits=bits, signed=signed, method=method, **calibrate_kwargs)
        for layer, h in tensors.items()
    }
    return ActivationRanges(ranges, bits=int(bits), signed=bool(signed))


def running_average_ranges(model: MLP, x, *, bits=8, signed=True, batch_size=32, momentum=0.9) -> ActivationRanges:
    r"""Calibrate every dense layer's input on a running average of batch ranges, as training frameworks do.

    Static activation ranges measured during training are usually an
    exponential moving average of each batch's minimum and maximum (the
    "moving average min-max" observer of quantization-aware training):
    over the batches of ``batch_size`` consecutive rows of ``x``,

    .. math:: m_t = \mu\, m_{t-1} + (1 - \mu)\, \min(h_t), \qquad
              M_t = \mu\, M_{t-1} + (1 - \mu)\, \max(h_t),

    starting from the first batch's range, with :math:`\mu` = ``momentum``;
    the final :math:`[m, M]` is then calibrated min-max (asymmetric, as
    :func:`~qlib.calibrate_activations`). Unlike the min-max of the whole
    set, the average is not pulled to the most extreme batch.

    Parameters
    ----------
    model : MLP
    x : array_like of float, shape (n, in_features)
    bits, signed
        The grid, as :func:`~qlib.calibrate_activations`.
    batch_size : int, default 32
    momentum : float, default 0.9
        In [0, 1): the weight of the running range (0: the last batch's range).

    Returns
    -------
    ActivationRanges

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not an MLP, ``x`` does not fit it, ``batch_size`` < 1
        or ``momentum`` outside [0, 1).

    Examples
    --------
    >>> m = MLP.init((4, 8, 3), np.random.default_rng(0))
    >>> x = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)     # batches of 1 row: max 3/7, then 1
    >>> r = running_average_ranges(m, x, batch_size=1, momentum=0.5)
    >>> round(float(r["fc1"].scale) * 255, 4)                          # (3/7 + 1) / 2 - 0
    0.7143
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    xa = model.check_input(x)
    batch_size = check_int(batch_size, "batch_size", 1)
    momentum = check_real(momentum, "momentum", lo=0.0, hi=1.0, hi_open=True)
    lo = hi = None
    for start in range(0, len(xa), batch_size):
        inputs = model.trace(xa[start:start + batch_size]).inputs
        b_lo, b_hi = np.array([h.min() for h in inputs]), np.array([h.max() for h in inputs])
        if lo is None:
            lo, hi = b_lo, b_hi
        else:
            lo, hi = momentum * lo + (1 - momentum) * b_lo, momentum * hi + (1 - momentum) * b_hi
    ranges = {layer: calibrate(np.array([a, b], dtype=np.float32), bits=bits, signed=signed)
              for layer, a, b in zip(model.layers, lo, hi)}
    return ActivationRanges(ranges, bits=int(bits), signed=bool(signed))


def dynamic_quantizer(bits=8, *, per="tensor", batch_size=32, signed=True) -> Callable:
    """A *dynamic* activation fake quantizer: the range is measured on the tensor itself, at run time.

    Static quantizers (:func:`~qlib.calibrate_activations`) fix a range before
    inference; dynamic ones compute it from each tensor they quantize, at the
    cost of a min and max per tensor (and of the integer kernel's output
    scale being known only then). For a matrix of rows (tokens, images):

    - ``per="tensor"``: one min-max range for the whole tensor;
    - ``per="batch"``: one per block of ``batch_size`` consecutive rows (the
      last block may be shorter), as when a server quantizes each request batch;
    - ``per="token"``: one per row, as LLM.int8() and most language-model
      runtimes quantize activations.

    A scale per row can be factored out of a matrix product ``x @ W.T`` (it
    multiplies the row of the output), so per-token dynamic quantization
    keeps integer kernels; a scale per *column* of ``x`` could not (see
    section 5.4 of the book).

    Parameters
    ----------
    bits : int, default 8
    per : {"tensor", "batch", "token"}, default "tensor"
    batch_size : int, default 32
        ``per="batch"`` only: rows per range.
    signed : bool, default True
        The grid, asymmetric min-max as :func:`~qlib.calibrate`.

    Returns
    -------
    callable
        ``h -> fake-quantized h`` (float32 in, float32 out), for
        ``MLP.forward(act_quant={layer: ...})``.

    Raises
    ------
    TypeError, ValueError
        On a bad ``bits``, ``per``, ``batch_size`` or ``signed``; the callable
        raises on an input that is not 2-D.

    Examples
    --------
    >>> h = np.array([[0.0, 1.0], [0.0, 100.0]], dtype=np.float32)
    >>> dynamic_quantizer(8, per="token")(h)[0]          # row 0 keeps its own small range
    array([0., 1.], dtype=float32)
    >>> dynamic_quantizer(8, per="tensor")(h)[0]         # steps of 100/255: 1 becomes 3 steps
    array([0.       , 1.1764706], dtype=float32)
    """
    bits = check_int(bits, "bits", 2, 16)
    per = check_choice(per, "per", _DYNAMIC)
    batch_size = check_int(batch_size, "batch_size", 1)
    signed = check_bool(signed, "signed")

    def quantize(h):
        h = np.asarray(h)
        if h.ndim != 2:
            raise ValueError(f"a dynamic per-{per} quantizer takes a 2-D (rows, features) array, got shape {h.shape}")
        if per == "token":
            return calibrate(h, bits=bits, signed=signed, axis=0).fake_quantize(h)
        if per == "tensor":
            return calibrate(h, bits=bits, signed=signed).fake_quantize(h)
        blocks = np.split(h, range(batch_size, len(h), batch_size))
        return np.concatenate([calibrate(b, bits=bits, signed=signed).fake_quantize(b) for b in blocks])

    return quantize


def _fake_quantizer(quantizer: Quantizer) -> Callable:
    def apply(h):
        return fake_quantize(h, quantizer)

    return apply


def activation_quantizer(ranges, *, bits=None, signed=None) -> dict[str, Callable]:
    """Per-layer fake quantizers of activations, for ``MLP.forward(act_quant=...)``.

    Parameters
    ----------
    ranges : mapping of str to Quantizer or (scale, zero_point)
        Layer name -> quantizer, as from :func:`~qlib.calibrate_activations`,
        or a plain ``(scale, zero_point)`` pair. A key ``"output"`` is ignored.
    bits, signed : optional
        The grid of plain pairs, or a grid that replaces the quantizers' own;
        by default that of each :class:`qlib.Quantizer`, else those recorded
        in ``ranges`` (an :class:`~qlib.ActivationRanges`), else 8 bits signed.

    Returns
    -------
    dict of str to callable
        Layer name -> ``h -> qlib.fake_quantize(h, quantizer)``.

    Raises
    ------
    TypeError
        If ``ranges`` is not a mapping of quantizers or pairs.

    Examples
    --------
    >>> aq = activation_quantizer({"fc1": (np.float32(0.5), np.int8(0))})
    >>> aq["fc1"](np.array([0.2, 0.3, 0.9], dtype=np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    if not isinstance(ranges, Mapping):
        raise TypeError(f"ranges must be a mapping layer name -> (scale, zero_point), got {type(ranges).__name__}")
    grid_bits = None if bits is None else check_int(bits, "bits", 2, 16)
    grid_signed = None if signed is None else check_bool(signed, "signed")
    default_bits = check_int(getattr(ranges, "bits", 8), "bits", 2, 16)
    default_signed = check_bool(getattr(ranges, "signed", True), "signed")
    out = {}
    for layer, entry in ranges.items():
        if layer == "output":
            continue
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise TypeError(f"ranges[{layer!r}] must be a Quantizer or a pair (scale, zero_point), got {entry!r}")
        if not isinstance(entry, Quantizer) or grid_bits is not None or grid_signed is not None:
            own_bits = entry.bits if isinstance(entry, Quantizer) else default_bits
            own_signed = entry.signed if isinstance(entry, Quantizer) else default_signed
            scale, zero_point = entry
            entry = Quantizer(scale, zero_point,
                              bits=own_bits if grid_bits is None else grid_bits,
                              signed=own_signed if grid_signed is None else grid_signed)
        out[layer] = _fake_quantizer(entry)
    return out
