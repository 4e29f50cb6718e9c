r"""Quantizing :class:`qlib.MiniLM`, the pretrained sentence encoder, and measuring what it costs.

The study of the real transformer needs the same few steps many times:

- :func:`~qlib.quantize_minilm`: every linear weight of the model quantized with
  round-to-nearest or GPTQ, per tensor, per output channel or per group of input
  columns, returned as a :class:`~qlib.MiniLMQuantized` that holds the
  dequantized weights (to pass as ``MiniLM.encode(..., params=...)``), the bytes
  they are stored in and each layer's SQNR;
- :func:`~qlib.act_quantizer` and :func:`~qlib.static_act_quantizers`: fake
  quantizers for the inputs of the linear layers (``MiniLM.encode(..., act_quant=...)``);
- :func:`~qlib.layer_output_errors`: :func:`qlib.layer_output_error` of every layer.

:mod:`qlib.models.minilm_stats` holds the statistics that go with them (weight
statistics, outlier channels, cosine similarities, Spearman's correlation).

**Storage**, as :attr:`qlib.QuantizedWeight.nbytes` counts it: the codes packed in
their own width (:func:`qlib.packed_nbytes`), one float32 scale per tensor,
output channel or group, and with an asymmetric grid one int8 zero point per
scale. Every tensor that is not a linear weight (the embedding tables, biases
and LayerNorms) stays in float32 and counts at its own size.

**GPTQ's calibration inputs.** Given calibration *sentences*, the inputs of
encoder layer :math:`i`'s six linear layers are recorded with the layers before
:math:`i` already quantized (``sequential=True``, as the GPTQ paper quantizes
a model layer by layer), or all from the float model (``sequential=False``).
Given a mapping of input arrays, they are used as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.metrics import sqnr_db
from qlib.core.uniform import dequantize, fake_quantize, quantize
from qlib.core.validation import as_float_array, check_bool, check_choice, check_int, check_real
from qlib.methods.gptq import QuantizedWeight, gptq_quantize, layer_output_error, round_to_nearest
from qlib.models.minilm_stats import check_minilm

__all__ = ["MiniLMQuantized", "act_quantizer", "layer_output_errors", "quantize_minilm", "static_act_quantizers"]

GRANULARITIES = ("tensor", "channel", "group")
METHODS = ("rtn", "gptq")


# --- quantizing the weights ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MiniLMQuantized:
    """A MiniLM's linear weights quantized by :func:`quantize_minilm`.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        ``{name + ".weight": dequantized float32 weight}`` for every linear
        layer (and the word and position embedding tables if asked): pass it
        as ``model.encode(sentences, params=q.params)``.
    codes : dict of str to numpy.ndarray
        The integer codes, by the same names.
    quantizers : dict of str to Quantizer
        The grid of each weight (``qlib.dequantize(codes[k], quantizers[k])`` is ``params[k]``).
    nbytes : dict of str to int
        By layer name (without ``".weight"``): the packed codes plus the scales
        (and zero points).
    sqnr_db : dict of str to float
        By layer name: :func:`qlib.sqnr_db` of the weight.
    float_nbytes : int
        The tensors kept in float32 (embedding tables unless quantized, biases, LayerNorms).
    method, granularity : str
    bits : int
    group_size : int or None
    """

    params: dict
    codes: dict
    quantizers: dict
    nbytes: dict
    sqnr_db: dict
    float_nbytes: int
    method: str
    bits: int
    granularity: str
    group_size: int | None

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the quantized tensors (codes and scales)."""
        return int(sum(self.nbytes.values()))

    @property
    def total_nbytes(self) -> int:
        """Bytes of the whole model: the quantized tensors plus the tensors kept in float32."""
        return self.weight_nbytes + int(self.float_nbytes)

    def __repr__(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return (f"MiniLMQuantized(method={self.method!r}, bits={self.bits}, granularity={self.granularity!r}{g}, "
                f"{len(self.params)} weights, {self.weight_nbytes:,} bytes + {self.float_nbytes:,} in float32)")


def _calibration_inputs(calibration, names: list[str]):
    """``(sentences, None)`` or ``(None, {linear name: inputs})`` from GPTQ's ``calibration``, checked."""
    if isinstance(calibration, Mapping):
        missing = [n for n in names if n not in calibration]
        if missing:
            raise ValueError(f"calibration must hold the inputs of every linear layer; it lacks {missing[:3]}"
                             f"{' ...' if len(missing) > 3 else ''}")
        return None, dict(calibration)
    if isinstance(calibration, (str, bytes)) or not isinstance(calibration, Sequence):
        raise TypeError("calibration must be a list of sentences or a mapping linear name -> inputs "
                        f"(MiniLM.linear_inputs), got {type(calibration).__name__}")
    sentences = list(calibration)
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise TypeError("calibration must be a non-empty list of sentences (str) or a mapping of inputs")
    return sentences, None


def _quantize_weight(w, *, method, bits, granularity, group_size, symmetric, inputs, damp, act_order):
    """One weight as a :class:`qlib.QuantizedWeight` (per tensor: calibrated and rounded here)."""
    if method == "rtn" and granularity == "tensor":
        qz = calibrate(w, bits=bits, symmetric=symmetric)
        codes = quantize(w, qz)
        return QuantizedWeight(codes=codes, quantizer=qz, weight=dequantize(codes, qz))
    gs = group_size if granularity == "group" else None
    if method == "rtn":
        return round_to_nearest(w, bits=bits, symmetric=symmetric, group_size=gs)
    return gptq_quantize(w, inputs, bits=bits, symmetric=symmetric, group_size=gs, damp=damp, act_order=act_order)


def _store(key, name, w, r, params, codes, quantizers, nbytes, sqnr) -> None:
    """Record one quantized tensor: its dequantized float32 value, codes, grid, bytes and SQNR."""
    w_hat = np.ascontiguousarray(r.weight, dtype=np.float32)
    params[key], codes[key], quantizers[key] = w_hat, r.codes, r.quantizer
    nbytes[name] = r.nbytes  # packed codes + float32 scales (+ int8 zero points), as qlib counts them
    sqnr[name] = sqnr_db(w, w_hat)


def quantize_minilm(model, *, bits=8, granularity="channel", group_size=None, method="rtn", calibration=None,
                    symmetric=True, sequential=True, damp=0.01, act_order=False,
                    embeddings=False) -> MiniLMQuantized:
    r"""Quantize every linear weight of ``model`` (weight-only), and count the bytes it takes.

    Parameters
    ----------
    model : MiniLM
    bits : int, default 8
        Code width, 2 to 8.
    granularity : {"tensor", "channel", "group"}, default "channel"
        One scale per weight matrix, per output channel (row), or per group of
        ``group_size`` consecutive input columns of each row.
    group_size : int, optional
        Required with ``granularity="group"`` (and only then), >= 1.
    method : {"rtn", "gptq"}, default "rtn"
        Round-to-nearest (:func:`qlib.round_to_nearest`, or :func:`qlib.calibrate` per
        tensor) or :func:`qlib.gptq_quantize` (per channel or per group only).
    calibration : list of str or mapping of str to array, optional
        GPTQ only (required): calibration sentences, or the inputs of every
        linear layer (``model.linear_inputs(sentences)``).
    symmetric : bool, default True
        Symmetric grid (zero point 0, not stored) or asymmetric.
    sequential : bool, default True
        GPTQ with calibration sentences: record encoder layer :math:`i`'s inputs
        with the layers before it quantized (one trace of the calibration
        sentences per encoder layer), or all from the float model.
    damp : float, default 0.01
        GPTQ's dampening (:func:`qlib.gptq_quantize`).
    act_order : bool, default False
        GPTQ's column order (:func:`qlib.gptq_quantize`).
    embeddings : bool, default False
        Also quantize the word and position embedding tables (always with
        round-to-nearest, at the same ``bits`` and ``granularity``: a row of a
        table is one token's vector, so "channel" is one scale per token of the
        vocabulary). They are more than half of all-MiniLM-L6-v2's parameters.
        Their entries in ``nbytes`` and ``sqnr_db`` are named
        ``"embeddings.word_embeddings"`` and ``"embeddings.position_embeddings"``.

    Returns
    -------
    MiniLMQuantized
        ``.params`` for ``model.encode(..., params=...)``, ``.nbytes`` and
        ``.sqnr_db`` per layer, ``.weight_nbytes`` and ``.total_nbytes``.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`MiniLM`, ``calibration`` not sentences or
        a mapping, or an argument has the wrong type.
    ValueError
        If ``bits`` is outside [2, 8], ``granularity`` or ``method`` unknown,
        ``group_size`` missing for ``"group"`` or given otherwise, GPTQ asked
        per tensor or without ``calibration``, ``calibration`` given for
        round-to-nearest, or a calibration mapping lacks a layer.

    Examples
    --------
    >>> model = qlib.load_minilm()  # doctest: +SKIP
    >>> q = quantize_minilm(model, bits=4, granularity="group", group_size=128)  # doctest: +SKIP
    >>> q.weight_nbytes  # 4-bit codes of 21.3 M weights plus a float32 scale per 128  # doctest: +SKIP
    >>> e = model.encode(["A sentence."], params=q.params)  # doctest: +SKIP
    """
    model = check_minilm(model)
    b = check_int(bits, "bits", 2, 8)
    granularity = check_choice(granularity, "granularity", GRANULARITIES)
    method = check_choice(method, "method", METHODS)
    symmetric = check_bool(symmetric, "symmetric")
    sequential = check_bool(sequential, "sequential")
    embeddings = check_bool(embeddings, "embeddings")
    act_order = check_bool(act_order, "act_order")
    damp = check_real(damp, "damp", lo=0.0)
    if granularity == "group":
        if group_size is None:
            raise ValueError("granularity='group' needs group_size (input columns per scale), e.g. 128")
        group_size = check_int(group_size, "group_size", 1)
    elif group_size is not None:
        raise ValueError(f"group_size is for granularity='group' only, got granularity={granularity!r}")
    names = model.linear_names
    sentences, given = None, None
    if method == "gptq":
        if granularity == "tensor":
            raise ValueError("GPTQ quantizes per output channel or per group: granularity must be 'channel' "
                             "or 'group', got 'tensor'")
        if calibration is None:
            raise ValueError("method='gptq' needs calibration: sentences or model.linear_inputs(sentences)")
        sentences, given = _calibration_inputs(calibration, names)
    elif calibration is not None:
        raise ValueError("calibration is for method='gptq' only: round-to-nearest looks at the weights alone")

    params, codes, quantizers, nbytes, sqnr = {}, {}, {}, {}, {}
    n_layers = int(model.config["num_hidden_layers"])
    inputs = given
    if sentences is not None and not sequential:
        inputs = model.linear_inputs(sentences)
    for i in range(n_layers):
        layer = [n for n in names if n.startswith(f"encoder.layer.{i}.")]
        if sentences is not None and sequential:
            inputs = model.linear_inputs(sentences, params=params or None)
        for name in layer:
            key = name + ".weight"
            w = np.asarray(model.params[key])
            r = _quantize_weight(
                w, method=method, bits=b, granularity=granularity, group_size=group_size, symmetric=symmetric,
                inputs=None if inputs is None else inputs[name], damp=damp, act_order=act_order)
            _store(key, name, w, r, params, codes, quantizers, nbytes, sqnr)
    tables = ["embeddings.word_embeddings", "embeddings.position_embeddings"] if embeddings else []
    for name in tables:
        key = name + ".weight"
        w = np.asarray(model.params[key])
        r = _quantize_weight(w, method="rtn", bits=b, granularity=granularity, group_size=group_size,
                             symmetric=symmetric, inputs=None, damp=damp, act_order=False)
        _store(key, name, w, r, params, codes, quantizers, nbytes, sqnr)
    float_nbytes = sum(v.nbytes for k, v in model.params.items() if k not in params)
    return MiniLMQuantized(params=params, codes=codes, quantizers=quantizers, nbytes=nbytes, sqnr_db=sqnr,
                           float_nbytes=int(float_nbytes), method=method, bits=b, granularity=granularity,
                           group_size=group_size)


def layer_output_errors(model, params, inputs) -> dict[str, float]:
    r""":func:`qlib.layer_output_error` of every linear layer whose weight ``params`` replaces.

    Parameters
    ----------
    model : MiniLM
        The float model (its weights are the reference).
    params : mapping of str to array, or MiniLMQuantized
        Quantized weights by tensor name (``name + ".weight"``), e.g. ``quantize_minilm(...).params``.
    inputs : mapping of str to array
        The inputs of the layers, e.g. ``model.linear_inputs(held_out_sentences)``.

    Returns
    -------
    dict of str to float
        By linear layer name, in the model's order:
        :math:`\lVert X W^T - X\hat W^T\rVert^2 / \lVert X W^T\rVert^2`.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`MiniLM` or ``params``/``inputs`` are not mappings.
    ValueError
        If ``params`` holds no linear weight, or ``inputs`` lacks one of its layers.
    """
    model = check_minilm(model)
    if isinstance(params, MiniLMQuantized):
        params = params.params
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of tensor name -> array, got {type(params).__name__}")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping linear name -> (tokens, in) array, got {type(inputs).__name__}")
    layers = [n for n in model.linear_names if n + ".weight" in params]
    if not layers:
        raise ValueError("params holds no linear weight of the model (names like "
                         f"{model.linear_names[0] + '.weight'!r})")
    missing = [n for n in layers if n not in inputs]
    if missing:
        raise ValueError(f"inputs lacks the layers {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return {n: layer_output_error(model.params[n + ".weight"], params[n + ".weight"], inputs[n]) for n in layers}


# --- quantizing the activations ------------------------------------------------------------


def act_quantizer(bits=8, *, granularity="tensor"):
    """A dynamic fake quantizer for the inputs of the linear layers: ``MiniLM.encode(..., act_quant=...)``.

    Each call calibrates a symmetric grid (min-max) on the array it is given,
    one scale for the whole array (``"tensor"``: all tokens of the batch) or one
    per row (``"token"``), and returns :func:`qlib.fake_quantize` of it in float32.

    Parameters
    ----------
    bits : int, default 8
        2 to 16.
    granularity : {"tensor", "token"}, default "tensor"

    Returns
    -------
    callable
        ``x (tokens, features) -> x_hat`` of the same shape.

    Raises
    ------
    TypeError, ValueError
        If ``bits`` is not an integer in [2, 16] or ``granularity`` is not one of the two.

    Examples
    --------
    >>> q = act_quantizer(4, granularity="token")
    >>> q(np.array([[7.0, 1.2], [0.7, -0.3]], dtype=np.float32))
    array([[ 7. ,  1. ],
           [ 0.7, -0.3]], dtype=float32)
    """
    b = check_int(bits, "bits", 2, 16)
    axis = {"tensor": None, "token": 0}[check_choice(granularity, "granularity", ("tensor", "token"))]

    def quantize_input(x):
        qz = calibrate(x, bits=b, symmetric=True, axis=axis)
        return fake_quantize(x, qz).astype(np.float32, copy=False)

    return quantize_input


def static_act_quantizers(inputs, bits=8) -> dict:
    """Static per-tensor fake quantizers, one per linear layer, calibrated on recorded inputs.

    The scale of each layer's input is fixed from calibration activations
    (``model.linear_inputs(calibration_sentences)``, min-max, symmetric); at
    run time values beyond the calibrated range saturate, as deployed. Layers
    that share one input array (query, key and value) share one quantizer, so
    ``MiniLM.encode`` applies it once.

    Parameters
    ----------
    inputs : mapping of str to array
        ``{linear layer name: (tokens, in_features)}``.
    bits : int, default 8
        2 to 16.

    Returns
    -------
    dict of str to callable
        For ``MiniLM.encode(..., act_quant=...)``.

    Raises
    ------
    TypeError
        If ``inputs`` is not a mapping of arrays, or ``bits`` not an integer.
    ValueError
        If ``bits`` is outside [2, 16], ``inputs`` is empty or an array is empty or not finite.

    Examples
    --------
    >>> x = np.array([[2.0, -1.0], [0.5, 0.25]], dtype=np.float32)
    >>> qs = static_act_quantizers({"fc": x}, bits=8)
    >>> qs["fc"](np.array([[4.0, 0.5]], dtype=np.float32)).round(4)  # 4 saturates at the calibrated 2
    array([[2.    , 0.5039]], dtype=float32)
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping linear name -> (tokens, in) array, got {type(inputs).__name__}")
    if not inputs:
        raise ValueError("inputs must not be empty")
    b = check_int(bits, "bits", 2, 16)
    shared: dict[int, object] = {}
    out = {}
    for name, x in inputs.items():
        key = id(x)
        if key not in shared:
            qz = calibrate(as_float_array(x, f"inputs[{name!r}]", allow_int=False), bits=b, symmetric=True)

            def quantize_input(a, qz=qz):
                return fake_quantize(a, qz).astype(np.float32, copy=False)

            shared[key] = quantize_input
        out[name] = shared[key]
    return out
