r"""Export an MLP to ONNX, float or int8 in the QDQ form, and run it in ONNX Runtime.

:func:`~qlib.export_onnx` writes a :class:`qlib.MLP` as an ONNX graph built
with ``onnx.helper`` (no PyTorch), and :func:`~qlib.run_onnx` runs a graph
with ONNX Runtime's CPU execution provider. ``onnx`` and ``onnxruntime`` are
*optional*: qlib itself needs only numpy, so they are imported inside the
functions, which raise an :class:`ImportError` saying how to install them
when they are missing.

**The float graph.** Every dense layer ``fcK`` is ``MatMul`` by the
transposed weight (an initializer ``fcK.weight_t`` of shape ``(in, out)``:
ONNX's ``MatMul`` computes ``x @ B``, qlib stores ``W`` as ``(out, in)``),
``Add`` of the bias and, except after the last layer, ``Relu``. Input
``"x"``, float32 of shape ``(batch, in_features)``; output ``"logits"``.
A float64 model is exported in float32.

**The quantized graph** is the standard *QDQ* form (the one ONNX Runtime's
quantization tool writes): the float graph with ``QuantizeLinear`` ->
``DequantizeLinear`` pairs inserted where qlib's simulation rounds, and the
quantized parameters stored as integer initializers behind a
``DequantizeLinear``:

- the **input of every layer** (per tensor, int8 or uint8, asymmetric):
  ``QuantizeLinear(h, s, z)`` -> ``fcK.input_codes`` -> ``DequantizeLinear``;
  the ReLU output of a hidden layer is the next layer's input;
- the **weight**: int8 codes of :math:`W^\top`, initializer
  ``fcK.weight_codes`` of shape ``(in, out)``, with one scale per *output*
  channel. As the stored matrix is transposed, that is ``axis=1`` of the
  ``DequantizeLinear`` (``axis=0`` of qlib's ``(out, in)``), zero point 0 for
  symmetric weights;
- the **bias**: ``bias="int32"`` (default) stores int32 codes with scale
  :math:`s_{in} s_w[c]` and zero point 0 (Jacob et al. 2018), dequantized
  per channel; ``bias="float"`` stores it in float32. ONNX Runtime fuses
  both into the same kernel: given a float bias it quantizes it to int32 with
  that scale itself;
- the **logits**, if an output quantizer is given: ``QuantizeLinear`` ->
  ``logits_codes`` -> ``DequantizeLinear`` -> ``"logits"``.

The quantizers come from ``quantized``: an :class:`qlib.IntegerMLP` (its
weight and bias codes, scales and zero points, exactly), or a mapping as
:func:`qlib.calibrate_activations` returns (layer name -> quantizer of that
layer's input, optionally ``"output"``), to which ``"fcK.weight"`` entries may
add weight quantizers (by default, :func:`qlib.calibrate` symmetric per
channel, as :func:`qlib.fake_quantize_weights`).

**What ONNX Runtime makes of it.** With its default optimizations, ONNX Runtime
(1.32) rewrites each ``DequantizeLinear -> MatMul -> Add -> Relu ->
QuantizeLinear`` group into one ``QGemm`` kernel (domain ``com.microsoft``):
int8 x int8 products summed in int32, the int32 bias added, and the result
*requantized with a float multiplier* :math:`s_{in} s_w / s_{out}`, rounded
half to even; the ``Relu`` is dropped, since the output's zero point is the
lowest code and the clamp to the grid does its work. Its codes therefore
follow qlib's fake-quantized simulation (which rounds the real product once,
half to even) except on values within float32 rounding of a half-way point,
and differ from :meth:`qlib.IntegerMLP.forward_int` (TensorFlow Lite's
fixed-point multiplier, which rounds twice) by one code on the rare values
the module :mod:`qlib.models.integer_mlp` describes.
:func:`~qlib.optimized_op_types` lists the kernels chosen.

**uint8 activations.** With unsigned activations and 8-bit weights, ONNX
Runtime's U8S8 kernel on x86-64 processors without VNNI multiplies with
``vpmaddubsw``, which sums two uint8 x int8 products in a *saturating* int16
(:math:`2 \cdot 255 \cdot 127 > 2^{15} - 1`): codes then differ from qlib's by
tens of codes. int8 activations (qlib's default) do not have the problem;
with uint8 ones, 7-bit weights (ONNX Runtime's ``reduce_range``) avoid it.

Examples
--------
The examples need ``onnx`` and ``onnxruntime`` (they are skipped without them):

>>> import pytest; _ = pytest.importorskip("onnxruntime"); _ = pytest.importorskip("onnx")
>>> import qlib
>>> model = qlib.MLP.init((4, 8, 3), np.random.default_rng(0))
>>> proto = export_onnx(model)
>>> [node.op_type for node in proto.graph.node]
['MatMul', 'Add', 'Relu', 'MatMul', 'Add']
>>> x = np.random.default_rng(1).random((5, 4), dtype=np.float32)
>>> bool(np.allclose(run_onnx(proto, x)["logits"], model.forward(x), rtol=1e-5, atol=1e-6))
True
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.grid import Quantizer
from qlib.core.uniform import quantize
from qlib.core.validation import as_float_array, check_bool, check_choice, check_int
from qlib.models.integer_mlp import IntegerMLP
from qlib.models.mlp import MLP

__all__ = ["export_onnx", "onnx_session", "run_onnx", "optimized_op_types"]

#: The versions the book is tested with (requirements/lock.txt).
ONNX_VERSION, ONNXRUNTIME_VERSION = "1.23.2", "1.32.0"
_INSTALL = f"pip install onnx=={ONNX_VERSION} onnxruntime=={ONNXRUNTIME_VERSION}"
_MIN_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear
_BIAS = ("int32", "float")
_INT32_MAX = (1 << 31) - 1


def _require(package: str, caller: str):
    """Import ``package`` (``"onnx"`` or ``"onnxruntime"``), or say how to install it."""
    try:
        if package == "onnx":
            import onnx
            import onnx.checker
            import onnx.helper
            import onnx.numpy_helper

            return onnx
        import onnxruntime

        return onnxruntime
    except ImportError as err:
        raise ImportError(
            f"{caller} needs the optional packages onnx and onnxruntime, which qlib (numpy only) does not "
            f"install; {package} is missing ({err}). Install them with: {_INSTALL}"
        ) from err


# -- the quantized layers, in plain numpy ---------------------------------------


@dataclass(frozen=True)
class _ActQuant:
    """A per-tensor activation quantizer as ONNX stores it: float32 scale, int8/uint8 zero point."""

    scale: np.float32
    zero_point: np.integer


@dataclass(frozen=True)
class _QLayer:
    name: str
    act: _ActQuant  # of the layer's input
    weight_codes: np.ndarray  # (out, in), int8 or uint8
    weight_scale: np.ndarray  # (out,) or ()
    weight_zero_point: np.ndarray  # same shape, dtype of the codes
    bias: np.ndarray  # float32, or int32 codes
    bias_scale: np.ndarray | None  # float32 (out,) or (), for int32 codes
    relu: bool


def _act_quant(entry, where: str) -> _ActQuant:
    """A layer input's quantizer, checked: per tensor, on the full 8-bit grid QuantizeLinear saturates to."""
    if isinstance(entry, Quantizer):
        if entry.axis is not None:
            raise ValueError(f"{where} must be a per-tensor quantizer, got {entry!r}")
        if entry.bits != 8 or entry.narrow_range:
            raise ValueError(
                f"{where} must use the full 8-bit grid (int8 [-128, 127] or uint8 [0, 255]) that ONNX "
                f"QuantizeLinear saturates to, got {entry!r}"
            )
        signed = entry.signed
    elif isinstance(entry, tuple) and len(entry) == 2:
        signed = True
    else:
        raise TypeError(f"{where} must be a qlib.Quantizer or a pair (scale, zero_point), got {type(entry).__name__}")
    checked = Quantizer(entry[0], entry[1], bits=8, signed=signed)  # validates scale and zero point
    return _ActQuant(np.float32(checked.scale), checked.zero_point[()])


def _weight_quantizer(entry, weight: np.ndarray, where: str) -> Quantizer:
    if not isinstance(entry, Quantizer):
        raise TypeError(f"{where} must be a qlib.Quantizer, got {type(entry).__name__}")
    if entry.bits > 8 or entry.group_size is not None or entry.axis not in (None, 0):
        raise ValueError(
            f"{where} must be a per-tensor or per-output-channel (axis=0) quantizer of at most 8 bits, got {entry!r}"
        )
    if entry.axis == 0 and entry.scale.size not in (1, weight.shape[0]):
        raise ValueError(f"{where} has {entry.scale.size} scales for {weight.shape[0]} output channels")
    return entry


def _bias_codes(bias: np.ndarray, s_in: np.float32, s_w: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    scale = np.float64(s_in) * s_w.astype(np.float64)
    codes = np.rint(bias.astype(np.float64) / scale)
    if np.max(np.abs(codes)) > _INT32_MAX:
        raise ValueError(f"layer {layer}: a bias code is beyond int32 at scale s_in * s_w; use bias='float'")
    return codes.astype(np.int32), scale.astype(np.float32)


def _layers_from_mapping(model: MLP, quantized: Mapping, bias: str):
    layers = model.layers
    allowed = set(layers) | {f"{ln}.weight" for ln in layers} | {"output"}
    unknown = sorted(set(quantized) - allowed, key=str)
    if unknown:
        raise ValueError(
            f"quantized has keys {unknown}; allowed are the layer names {layers} (their input's quantizer), "
            f"'<layer>.weight' and 'output'"
        )
    missing = [ln for ln in layers if ln not in quantized]
    if missing:
        raise ValueError(f"quantized has no quantizer for the input of {missing}: every layer input is quantized")
    out = []
    for i, ln in enumerate(layers):
        act = _act_quant(quantized[ln], f"quantized[{ln!r}]")
        weight = model.params[f"{ln}.weight"].astype(np.float32)
        if f"{ln}.weight" in quantized:
            wq = _weight_quantizer(quantized[f"{ln}.weight"], weight, f"quantized['{ln}.weight']")
        else:
            wq = calibrate(weight, bits=8, symmetric=True, axis=0)
        codes = quantize(weight, wq)
        s_w = np.broadcast_to(wq.scale, wq.scale.shape).astype(np.float32)
        z_w = np.asarray(wq.zero_point).astype(codes.dtype)
        if z_w.shape != s_w.shape:
            z_w = np.broadcast_to(z_w, s_w.shape).copy()
        b = model.params[f"{ln}.bias"]
        if bias == "int32":
            b_vals, b_scale = _bias_codes(b, act.scale, s_w, ln)
        else:
            b_vals, b_scale = b.astype(np.float32), None
        out.append(_QLayer(ln, act, codes, s_w, z_w, b_vals, b_scale, i < len(layers) - 1))
    output = _act_quant(quantized["output"], "quantized['output']") if "output" in quantized else None
    return out, output


def _layers_from_integer(model: MLP, imodel: IntegerMLP, bias: str):
    if imodel.sizes != model.sizes:
        raise ValueError(f"quantized is an IntegerMLP of sizes {imodel.sizes}, the model has sizes {model.sizes}")
    if imodel.bits != 8:
        raise ValueError(
            f"quantized has {imodel.bits}-bit activations; ONNX QuantizeLinear to int8 saturates to [-128, 127], "
            f"so only act_bits=8 exports"
        )
    out = []
    for L in imodel.layers:
        act = _ActQuant(np.float32(L.input_scale), np.int8(L.input_zero_point))
        s_w = L.weight_scale.astype(np.float32)
        scale64 = np.float64(L.input_scale) * s_w.astype(np.float64)
        if bias == "int32":
            b_vals, b_scale = L.bias.astype(np.int32), scale64.astype(np.float32)
        else:  # the values the integer model adds: its bias codes times their scale
            b_vals, b_scale = (L.bias.astype(np.float64) * scale64).astype(np.float32), None
        out.append(_QLayer(L.name, act, L.weight, s_w, np.zeros(s_w.shape, np.int8), b_vals, b_scale, L.relu))
    return out, _ActQuant(np.float32(imodel.output_scale), np.int8(imodel.output_zero_point))


# -- the graph --------------------------------------------------------------------


class _GraphBuilder:
    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []

    def init(self, name: str, array) -> str:
        arr = np.array(array, order="C")  # a C-contiguous copy; a scalar stays 0-d (per tensor)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list, output: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs))
        return output

    def quantize(self, h: str, act: _ActQuant, prefix: str, codes: str) -> tuple[str, str]:
        """``QuantizeLinear`` then ``DequantizeLinear`` of ``h``: (codes tensor, dequantized tensor)."""
        s = self.init(f"{prefix}.scale", act.scale)
        z = self.init(f"{prefix}.zero_point", act.zero_point)
        q = self.node("QuantizeLinear", [h, s, z], codes)
        return q, self.node("DequantizeLinear", [q, s, z], f"{prefix}.dequantized")


def _float_graph(g: _GraphBuilder, model: MLP) -> str:
    h = "x"
    for i, ln in enumerate(model.layers):
        w_t = g.init(f"{ln}.weight_t", model.params[f"{ln}.weight"].T.astype(np.float32))
        b = g.init(f"{ln}.bias", model.params[f"{ln}.bias"].astype(np.float32))
        mm = g.node("MatMul", [h, w_t], f"{ln}.matmul")
        last = i == len(model.layers) - 1
        h = g.node("Add", [mm, b], "logits" if last else f"{ln}.preact")
        if not last:
            h = g.node("Relu", [h], f"{ln}.output")
    return h


def _qdq_graph(g: _GraphBuilder, layers: list, output: _ActQuant | None) -> list[tuple[str, np.dtype]]:
    """Build the QDQ graph; returns the code tensors (name, dtype) in order."""
    h, codes = "x", []
    for i, L in enumerate(layers):
        q, h = g.quantize(h, L.act, f"{L.name}.input", f"{L.name}.input_codes")
        codes.append((q, L.act.zero_point.dtype))
        per_channel = L.weight_scale.ndim == 1
        wc = g.init(f"{L.name}.weight_codes", L.weight_codes.T)  # (in, out): channels along axis 1
        ws = g.init(f"{L.name}.weight.scale", L.weight_scale)
        wz = g.init(f"{L.name}.weight.zero_point", L.weight_zero_point)
        w = g.node("DequantizeLinear", [wc, ws, wz], f"{L.name}.weight_t", **({"axis": 1} if per_channel else {}))
        mm = g.node("MatMul", [h, w], f"{L.name}.matmul")
        if L.bias_scale is None:
            b = g.init(f"{L.name}.bias", L.bias)
        else:
            bc = g.init(f"{L.name}.bias_codes", L.bias)
            bs = g.init(f"{L.name}.bias.scale", L.bias_scale)
            bz = g.init(f"{L.name}.bias.zero_point", np.zeros(L.bias_scale.shape, np.int32))
            b = g.node("DequantizeLinear", [bc, bs, bz], f"{L.name}.bias",
                       **({"axis": 0} if L.bias_scale.ndim == 1 else {}))
        last = i == len(layers) - 1
        h = g.node("Add", [mm, b], "logits" if last and output is None else f"{L.name}.preact")
        if L.relu:
            h = g.node("Relu", [h], f"{L.name}.output")
    if output is not None:
        s = g.init("logits.scale", output.scale)
        z = g.init("logits.zero_point", output.zero_point)
        q = g.node("QuantizeLinear", [h, s, z], "logits_codes")
        codes.append((q, output.zero_point.dtype))
        g.node("DequantizeLinear", [q, s, z], "logits")
    return codes


def export_onnx(model, path=None, *, quantized=None, opset=21, bias="int32", code_outputs=False):
    r"""The ONNX graph of an MLP: float, or int8 in the QDQ form (see :mod:`qlib.models.onnx_export`).

    Parameters
    ----------
    model : MLP
        The float model (float32 or float64; the graph is float32).
    path : str or os.PathLike, optional
        Also write the graph to this file (``.onnx``).
    quantized : None, IntegerMLP or mapping, optional
        ``None`` exports the float model. An :class:`~qlib.IntegerMLP` of the
        same sizes exports its weight codes, bias codes, scales and zero
        points. A mapping gives the quantizer of each layer's input (keys
        ``"fc1"``, ...: all layers; e.g. :func:`~qlib.calibrate_activations`'s
        result, or ``(scale, zero_point)`` pairs for int8), optionally of the
        logits (``"output"``; without it the logits stay float) and of weights
        (``"fc1.weight"``, ...: a :class:`~qlib.Quantizer` per tensor or per
        output channel, ``axis=0``; by default :func:`~qlib.calibrate` with
        ``bits=8, symmetric=True, axis=0``). Activation quantizers must be per
        tensor on the full int8 or uint8 grid, as ``QuantizeLinear``
        saturates to it.
    opset : int, default 21
        The ONNX operator set, from 13 (per-axis quantization) to the
        installed onnx's newest.
    bias : {"int32", "float"}, default "int32"
        How a quantized graph stores biases: int32 codes with scale
        :math:`s_{in} s_w` behind a ``DequantizeLinear``, or float32 values.
        Ignored for a float graph.
    code_outputs : bool, default False
        For a quantized graph, also return the output of every
        ``QuantizeLinear`` as a graph output: ``"fc1.input_codes"``, ...,
        ``"logits_codes"`` (the integer codes, for comparison with qlib).

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(full_check=True)``. Input
        ``"x"`` (float32, ``(batch, in_features)``), output ``"logits"``
        (then the code outputs, if asked for).

    Raises
    ------
    ImportError
        If ``onnx`` is not installed (the message says how to install it).
    TypeError
        If ``model`` is not an MLP, ``path`` not a path, ``quantized`` not
        one of the accepted types, or a quantizer of the wrong type.
    ValueError
        If ``quantized`` does not fit the model (sizes, keys, a missing layer
        input), a quantizer is not exportable (activations: not per tensor or
        not on the full 8-bit grid; weights: per group or wider than 8 bits),
        a bias code overflows int32, or ``opset``/``bias`` is invalid.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("onnx")
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> model = qlib.MLP.init((64, 16, 10), np.random.default_rng(0))
    >>> ranges = qlib.calibrate_activations(model, d["x_val"], include_output=True)
    >>> proto = export_onnx(model, quantized=ranges, code_outputs=True)
    >>> [o.name for o in proto.graph.output]
    ['logits', 'fc1.input_codes', 'fc2.input_codes', 'logits_codes']
    >>> sorted({node.op_type for node in proto.graph.node})
    ['Add', 'DequantizeLinear', 'MatMul', 'QuantizeLinear', 'Relu']
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be None or a file path (str or os.PathLike), got {type(path).__name__}")
    bias_kind = check_choice(bias, "bias", _BIAS)
    expose = check_bool(code_outputs, "code_outputs")
    if quantized is None:
        plan = None
    elif isinstance(quantized, IntegerMLP):
        plan = _layers_from_integer(model, quantized, bias_kind)
    elif isinstance(quantized, Mapping):
        plan = _layers_from_mapping(model, quantized, bias_kind)
    else:
        raise TypeError(
            f"quantized must be None, a qlib.IntegerMLP or a mapping of quantizers, got {type(quantized).__name__}"
        )
    onnx = _require("onnx", "export_onnx")
    version = check_int(opset, "opset", _MIN_OPSET, onnx.defs.onnx_opset_version())
    helper, tp = onnx.helper, onnx.TensorProto
    g = _GraphBuilder(onnx)
    n_in, n_out = model.sizes[0], model.sizes[-1]
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, ["batch", n_out])]
    if plan is None:
        _float_graph(g, model)
        name = "mlp_float32"
    else:
        codes = _qdq_graph(g, *plan)
        name = "mlp_int8_qdq"
        if expose:
            widths = [layer.weight_codes.shape[1] for layer in plan[0]] + [n_out]
            for (tensor, dtype), width in zip(codes, widths):
                elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
                outputs.append(helper.make_tensor_value_info(tensor, elem, ["batch", width]))
    graph = helper.make_graph(g.nodes, name, [helper.make_tensor_value_info("x", tp.FLOAT, ["batch", n_in])],
                              outputs, g.initializers)
    opsets = [helper.make_opsetid("", version)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="qlib",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


# -- running it -------------------------------------------------------------------


def _model_bytes(model_proto, onnx) -> bytes:
    if isinstance(model_proto, onnx.ModelProto):
        return model_proto.SerializeToString()
    if isinstance(model_proto, bytes):
        return model_proto
    raise TypeError(f"model_proto must be an onnx.ModelProto or its serialized bytes, got {type(model_proto).__name__}")


def onnx_session(model_proto, *, threads=1, optimized_model_path=None):
    """An ONNX Runtime inference session on the CPU execution provider.

    Parameters
    ----------
    model_proto : onnx.ModelProto or bytes
        The graph (e.g. from :func:`~qlib.export_onnx`), or its serialized bytes.
    threads : int, default 1
        ONNX Runtime's intra-op threads (``SessionOptions.intra_op_num_threads``),
        >= 1; operators run one after the other (one inter-op thread).
    optimized_model_path : str or os.PathLike, optional
        Save the graph as ONNX Runtime optimized it (all optimizations, the
        default level; ``SessionOptions.optimized_model_filepath``) to this file,
        to see which kernels it chose.

    Returns
    -------
    onnxruntime.InferenceSession

    Raises
    ------
    ImportError
        If ``onnx`` or ``onnxruntime`` is not installed.
    TypeError, ValueError
        On an invalid argument (the message names it).
    """
    n_threads = check_int(threads, "threads", 1)
    if optimized_model_path is not None and not isinstance(optimized_model_path, (str, os.PathLike)):
        raise TypeError(
            f"optimized_model_path must be None or a file path, got {type(optimized_model_path).__name__}"
        )
    onnx = _require("onnx", "onnx_session")
    ort = _require("onnxruntime", "onnx_session")
    data = _model_bytes(model_proto, onnx)
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no warning that a saved optimized graph is machine-specific
    if optimized_model_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_model_path)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(model_proto, x, *, threads=1, optimized_model_path=None):
    """Run a graph of :func:`~qlib.export_onnx` in ONNX Runtime (CPU) on a batch.

    Parameters
    ----------
    model_proto : onnx.ModelProto, bytes or onnxruntime.InferenceSession
        The graph, or a session from :func:`~qlib.onnx_session` (to run it
        many times without building a session each time; then ``threads``
        and ``optimized_model_path`` must be left at their defaults).
    x : array_like of float, shape (n, in_features)
        The input, converted to float32.
    threads, optimized_model_path
        As in :func:`~qlib.onnx_session`.

    Returns
    -------
    dict of str to numpy.ndarray
        Every graph output by name: ``"logits"`` (float32), and the codes
        (int8 or uint8) if the graph was exported with ``code_outputs=True``.

    Raises
    ------
    ImportError
        If ``onnx`` or ``onnxruntime`` is not installed.
    TypeError, ValueError
        If ``x`` is not a finite 2-D float array with the graph's number of
        features, or another argument is invalid.
    """
    xa = as_float_array(x, "x")
    ort = _require("onnxruntime", "run_onnx")
    if isinstance(model_proto, ort.InferenceSession):
        if threads != 1 or optimized_model_path is not None:
            raise ValueError("threads and optimized_model_path are set when the session is built, not with a session")
        session = model_proto
    else:
        session = onnx_session(model_proto, threads=threads, optimized_model_path=optimized_model_path)
    (inp,) = session.get_inputs()
    width = inp.shape[1] if len(inp.shape) == 2 else None
    if xa.ndim != 2 or (isinstance(width, int) and xa.shape[1] != width):
        raise ValueError(f"x must have shape (n, {width}), one row of features per sample, got shape {xa.shape}")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {inp.name: np.ascontiguousarray(xa, dtype=np.float32)})))


def optimized_op_types(model_proto, *, threads=1) -> list[str]:
    """The operators of a graph after ONNX Runtime's optimizations: the kernels it runs.

    The optimized graph is saved (``SessionOptions.optimized_model_filepath``)
    in a temporary directory, read back and deleted.

    Parameters
    ----------
    model_proto : onnx.ModelProto or bytes
    threads : int, default 1

    Returns
    -------
    list of str
        The op type of every node in execution order, prefixed by its domain
        when it is not the standard one: e.g. ``["QuantizeLinear",
        "com.microsoft.QGemm", "com.microsoft.QGemm", "DequantizeLinear"]``
        for the int8 digits MLP.

    Raises
    ------
    ImportError
        If ``onnx`` or ``onnxruntime`` is not installed.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("onnxruntime"); _ = pytest.importorskip("onnx")
    >>> import qlib
    >>> model = qlib.MLP.init((4, 8, 3), np.random.default_rng(0))
    >>> optimized_op_types(export_onnx(model))   # MatMul + Add -> Gemm, then Gemm + Relu -> FusedGemm
    ['com.microsoft.FusedGemm', 'Gemm']
    """
    onnx = _require("onnx", "optimized_op_types")
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "optimized.onnx")
        onnx_session(model_proto, threads=threads, optimized_model_path=target)
        graph = onnx.load(target).graph
    return [node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}" for node in graph.node]

