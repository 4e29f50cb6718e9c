r"""Layer-by-layer weight quantization of a whole model: round-to-nearest or GPTQ on every linear layer.

A model is a mapping of named tensors in which a linear layer ``L`` has the
weight ``"L.weight"`` (shape ``(out, in)``, :math:`y = x W^T + b`) and, if it
has one, the bias ``"L.bias"``. :func:`~qlib.quantize_layers` quantizes the
weights of the chosen layers one by one, with :func:`~qlib.round_to_nearest`
or with :func:`~qlib.gptq_quantize` on each layer's calibration inputs, and
returns one :class:`~qlib.QuantizedWeight` per layer (codes, grid, bytes);
:func:`~qlib.replace_weights` puts the dequantized weights back into the
model's tensors and, given calibration inputs, applies
:func:`~qlib.bias_correction` to each layer's bias.

Each layer is quantized against the inputs it receives in the *float* model
(as in the GPTQ paper's experiments the inputs can also be taken from the
partly quantized model; pass those as ``inputs`` to do so).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qlib.core.validation import check_choice
from qlib.methods.bias_correction import bias_correction
from qlib.methods.gptq import QuantizedWeight, gptq_quantize, round_to_nearest

__all__ = ["quantize_layers", "replace_weights"]

_METHODS = ("rtn", "gptq")


def _check_params(params) -> Mapping:
    params = getattr(params, "params", params)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of tensor names to arrays (or a model with .params), "
                        f"got {type(params).__name__}")
    return params


def _layer_list(params: Mapping, layers) -> list[str]:
    if layers is None:
        return [name[: -len(".weight")] for name, t in params.items()
                if isinstance(name, str) and name.endswith(".weight") and np.ndim(t) == 2]
    if isinstance(layers, str) or not all(isinstance(layer, str) for layer in layers):
        raise TypeError(f"layers must be a sequence of layer names (str), got {layers!r}")
    layers = list(layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {layers}")
    missing = [layer for layer in layers if f"{layer}.weight" not in params]
    if missing:
        raise ValueError(f"layers {missing} have no '<layer>.weight' in params (it holds {list(params)[:8]}...)")
    return layers


def quantize_layers(params, inputs=None, *, layers=None, method="rtn", bits=4, group_size=None, symmetric=True,
                    calibration="minmax", **gptq_options) -> dict[str, QuantizedWeight]:
    """Quantize the weight of every chosen linear layer, by round-to-nearest or GPTQ.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray, or a model with ``.params``
        The model's tensors; layer ``L``'s weight is ``params["L.weight"]``, 2-D ``(out, in)``.
    inputs : mapping of str to numpy.ndarray, optional
        Layer name -> calibration inputs of that layer, shape ``(n, in)``
        (e.g. :meth:`qlib.MLP.layer_inputs`). Needed for ``method="gptq"``,
        ignored by ``"rtn"``.
    layers : sequence of str, optional
        The layers to quantize; by default every ``"L.weight"`` that is 2-D.
    method : {"rtn", "gptq"}, default "rtn"
        :func:`~qlib.round_to_nearest` or :func:`~qlib.gptq_quantize`.
    bits, group_size, symmetric
        The grid, as :func:`~qlib.gptq_quantize` (per output channel, or per
        group of ``group_size`` input columns).
    calibration : {"minmax", "mse", "percentile"}, default "minmax"
        The range calibration of the grid (``method`` of :func:`~qlib.calibrate`).
    **gptq_options
        ``damp``, ``block_size``, ``act_order`` of :func:`~qlib.gptq_quantize`.

    Returns
    -------
    dict of str to QuantizedWeight
        Layer name -> the quantized weight, in the order of ``layers``. The
        total stored bytes are ``sum(r.nbytes for r in result.values())``.

    Raises
    ------
    TypeError
        If ``params`` or ``inputs`` is not a mapping, ``layers`` not a
        sequence of names, or GPTQ options are given to ``"rtn"``.
    ValueError
        If ``method`` is unknown, a layer has no weight, GPTQ lacks a layer's
        inputs, or as the method itself.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> params = {"fc1.weight": rng.normal(size=(8, 16)), "fc1.bias": np.zeros(8),
    ...           "fc2.weight": rng.normal(size=(4, 8)), "fc2.bias": np.zeros(4)}
    >>> x = {"fc1": rng.normal(size=(64, 16)), "fc2": rng.normal(size=(64, 8))}
    >>> q = quantize_layers(params, x, method="gptq", bits=4)
    >>> list(q), q["fc1"].codes.shape, sum(r.nbytes for r in q.values())
    (['fc1', 'fc2'], (8, 16), 128)
    """
    params = _check_params(params)
    method = check_choice(method, "method", _METHODS)
    names = _layer_list(params, layers)
    if method == "rtn" and gptq_options:
        raise TypeError(f"options {sorted(gptq_options)} are GPTQ's; method='rtn' takes none")
    if method == "gptq":
        if not isinstance(inputs, Mapping):
            raise TypeError(f"method='gptq' needs inputs, a mapping layer name -> calibration inputs, "
                            f"got {type(inputs).__name__}")
        missing = [layer for layer in names if layer not in inputs]
        if missing:
            raise ValueError(f"inputs has no calibration inputs for layers {missing}")
    grid = dict(bits=bits, group_size=group_size, symmetric=symmetric, method=calibration)
    out = {}
    for layer in names:
        w = params[f"{layer}.weight"]
        if method == "gptq":
            out[layer] = gptq_quantize(w, inputs[layer], **grid, **gptq_options)
        else:
            out[layer] = round_to_nearest(w, **grid)
    return out


def replace_weights(params, quantized, *, bias_inputs=None) -> dict[str, np.ndarray]:
    r"""The model's tensors with the quantized weights in place; optionally bias-corrected.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray, or a model with ``.params``
        The float model's tensors (not modified).
    quantized : mapping of str to QuantizedWeight or numpy.ndarray
        Layer name -> its quantized weight (as :func:`~qlib.quantize_layers`
        returns) or a plain dequantized weight array.
    bias_inputs : mapping of str to numpy.ndarray, optional
        Layer name -> calibration inputs: each layer's bias becomes
        :func:`~qlib.bias_correction`'s :math:`b - (\hat W - W)\,\mathbb E[x]`
        (every layer in ``quantized`` then needs a bias and inputs).

    Returns
    -------
    dict of str to numpy.ndarray
        A new mapping (the arrays not replaced are the model's own); weights
        and biases keep the dtype of the tensors they replace.

    Raises
    ------
    TypeError
        If an argument is not a mapping, or an entry of ``quantized`` is
        neither a QuantizedWeight nor an array.
    ValueError
        If a layer of ``quantized`` has no weight in ``params``, or its
        quantized weight has another shape, or bias correction lacks a bias
        or inputs.

    Examples
    --------
    >>> params = {"fc.weight": np.array([[1.0, 2.0]]), "fc.bias": np.array([0.25])}
    >>> w_hat = np.array([[1.5, 2.0]])
    >>> x = {"fc": np.array([[1.0, 3.0], [3.0, 1.0]])}
    >>> replace_weights(params, {"fc": w_hat}, bias_inputs=x)
    {'fc.weight': array([[1.5, 2. ]]), 'fc.bias': array([-0.75])}
    """
    params = _check_params(params)
    if not isinstance(quantized, Mapping):
        raise TypeError(f"quantized must be a mapping layer name -> QuantizedWeight, got {type(quantized).__name__}")
    if bias_inputs is not None and not isinstance(bias_inputs, Mapping):
        raise TypeError(f"bias_inputs must be a mapping layer name -> inputs, got {type(bias_inputs).__name__}")
    out = dict(params)
    for layer, q in quantized.items():
        name = f"{layer}.weight"
        if name not in params:
            raise ValueError(f"quantized[{layer!r}]: params has no {name!r}")
        if isinstance(q, QuantizedWeight):
            w_hat = q.weight
        elif isinstance(q, np.ndarray):
            w_hat = q
        else:
            raise TypeError(f"quantized[{layer!r}] must be a QuantizedWeight or an array, got {type(q).__name__}")
        w = np.asarray(params[name])
        if w_hat.shape != w.shape:
            raise ValueError(f"quantized[{layer!r}] has shape {w_hat.shape}, the weight {name!r} {w.shape}")
        out[name] = w_hat.astype(w.dtype, copy=False)
        if bias_inputs is not None:
            bias = f"{layer}.bias"
            if bias not in params:
                raise ValueError(f"bias correction of layer {layer!r}: params has no {bias!r}")
            if layer not in bias_inputs:
                raise ValueError(f"bias correction of layer {layer!r}: bias_inputs has no inputs for it")
            b = np.asarray(params[bias])
            out[bias] = bias_correction(w, w_hat, b, bias_inputs[layer]).astype(b.dtype, copy=False)
    return out
