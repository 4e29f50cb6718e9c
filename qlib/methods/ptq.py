r"""Post-training quantization of a whole model's parameters, with honest storage counts.

The other modules quantize one tensor. A model is a mapping of named tensors
(``{"fc1.weight": ..., "fc1.bias": ..., ...}``, as :class:`qlib.MLP` keeps
them), and comparing quantization methods on it needs two things per method
and bit width: the *reconstructed* parameters, to measure accuracy, and the
number of bytes the quantized model really occupies, to measure compression.
:func:`~qlib.quantize_params` gives both for every method of the book, each
implemented by a function of its own:

``"integer"``
    the article's integer quantization (:func:`qlib.integer_quantize`) of
    every tensor, codes saturated to a ``bits``-wide word;
``"subinteger"``
    the article's sub-integer quantization (:func:`qlib.subinteger_quantize`)
    of every tensor in a ``bits``-wide word, with the number of fractional
    bits chosen per tensor to minimize its squared error
    (:func:`~qlib.best_frac_bits`);
``"mixed"``
    the article's mixed quantization as the book reads it
    (:func:`qlib.mixed_quantize`): sub-integer for weights, integer for the
    other tensors (biases), both in a ``bits``-wide word;
``"uniform"``
    the symmetric uniform quantizer of deployed systems
    (:func:`qlib.calibrate`, :func:`qlib.quantize`) for weights, per tensor
    or per output channel, with min-max or MSE calibration, on the grid the
    calibration chose (``symmetric=False``: the asymmetric grid with a
    zero point per scale); the other tensors (biases) stay 32-bit, as in
    integer-only inference (Jacob et al. 2018), where they become int32;
``"kmeans"``
    weight sharing as in Deep Compression (Han et al. 2016): a k-means
    codebook of :math:`2^b` float32 values per weight tensor
    (:func:`qlib.kmeans_quantize`) and the packed ``bits``-wide indices; the
    other tensors stay as they are;
``"fp8_e4m3"``, ``"fp8_e5m2"``
    weights rounded to an 8-bit floating-point format
    (:func:`qlib.round_to_float`) with one float32 scale per output channel
    (row), mapping the row's largest magnitude to the format's largest finite
    value, as FP8 inference scales weights (Micikevicius et al. 2022);
    ``bits`` must be 8;
``"nf4"``
    QLoRA's 4-bit NormalFloat (:func:`qlib.nf4_quantize`, one float32 absmax
    scale per block of 64 values, Dettmers et al. 2023); ``bits`` must be 4.

Which tensors are weights is decided by :func:`qlib.is_weight` (two or more
dimensions, a name not ending in ``".bias"``), the rule every method shares.
:func:`~qlib.quantize_per_layer` gives each layer its own bit width.

**Storage.** Codes are stored with :func:`qlib.pack`, in slots of
:func:`~qlib.storage_bits` bits, and counted by :func:`qlib.packed_nbytes`.
Side information is counted too: the mean and standard deviation of the
article's methods (two float32 per tensor), the scale(s) of the uniform
quantizer (one float32 per tensor or per channel; the zero point is 0 by
construction and not stored), and unquantized tensors at their own size.
:func:`~qlib.pack_sparse` stores a pruned tensor as a bitmask of its nonzeros plus
their packed codes.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qlib.article.integer import integer_quantize
from qlib.article.mixed import mixed_quantize
from qlib.article.subinteger import subinteger_quantize
from qlib.core.calibration import calibrate
from qlib.core.codebook import kmeans_quantize
from qlib.core.float_formats import float_format, nf4_quantize, round_to_float
from qlib.core.metrics import mse, size_bytes
from qlib.core.packing import pack
from qlib.core.uniform import dequantize, quantize
from qlib.core.validation import as_float_array, check_bool, check_choice, check_int
from qlib.methods.params import is_weight
from qlib.methods.storage import pack_sparse, storage_bits

__all__ = [
    "PTQResult",
    "best_frac_bits",
    "quantize_params",
    "quantize_per_layer",
]

# The methods quantize_params accepts.
PTQ_METHODS = ("integer", "subinteger", "mixed", "uniform", "kmeans", "fp8_e4m3", "fp8_e5m2", "nf4")
# The float formats' fixed widths, and ml_dtypes' names of the FP8 formats (for their 8-bit codes).
_FLOAT_BITS = {"fp8_e4m3": 8, "fp8_e5m2": 8, "nf4": 4}
_ML_DTYPES = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
_CALIBRATIONS = ("minmax", "mse")


def best_frac_bits(x, bits: int) -> int:
    r"""The number of fractional bits that minimizes the error of sub-integer quantization in a word.

    In a ``bits``-wide word, more fractional bits :math:`f` give a finer step
    :math:`\sigma 2^{-f}` but a narrower range :math:`\pm\sigma 2^{bits-1-f}`.
    This tries :math:`f = 0, \dots, bits - 1` and returns the one with the
    smallest mean squared error of :func:`qlib.subinteger_quantize`
    (the smallest :math:`f` on a tie).

    Parameters
    ----------
    x : array_like of float
        The tensor. Finite, non-empty, not constant.
    bits : int
        Word length, sign included, 1 to 16.

    Returns
    -------
    int
        The best ``frac_bits``, in ``[0, bits - 1]``.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued or ``bits`` not an integer.
    ValueError
        If ``x`` is empty, not finite or constant, or ``bits`` is outside [1, 16].

    Examples
    --------
    Gaussian data reaches about :math:`\pm 4\sigma`: an 8-bit word keeps 5
    fractional bits (range :math:`\pm 4\sigma`, step :math:`\sigma/32`), a
    4-bit word 1 (the same range, step :math:`\sigma/2`):

    >>> x = np.random.default_rng(0).normal(size=10_000)
    >>> best_frac_bits(x, 8), best_frac_bits(x, 4), best_frac_bits(x, 2)
    (5, 1, 0)
    """
    b = check_int(bits, "bits", 1, 16)
    xa = as_float_array(x, "x")
    errors = [mse(xa, subinteger_quantize(xa, frac_bits=f, bits=b).dequantize()) for f in range(b)]
    return int(np.argmin(errors))


@dataclass(frozen=True, eq=False)
class PTQResult:
    """What :func:`quantize_params` returns: reconstructed parameters and their storage.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The reconstructed (dequantized) tensors, same names, shapes and
        dtypes as the input: use them in place of the float parameters.
    codes : dict of str to numpy.ndarray
        The integer codes of every quantized tensor (tensors kept in float are
        absent).
    storage : dict of str to int
        Bytes each tensor occupies: packed codes plus side information, or
        the tensor's own size when it is not quantized.
    detail : dict of str to str
        A short description of how each tensor was stored, e.g.
        ``"subinteger, frac_bits=5, 8-bit slots"``.
    method : str
        The method that made it.
    bits : int
        The code width.
    """

    params: dict
    codes: dict
    storage: dict
    detail: dict
    method: str
    bits: int

    @property
    def nbytes(self) -> int:
        """Total storage of the quantized model, in bytes."""
        return int(sum(self.storage.values()))

    @property
    def weight_nbytes(self) -> int:
        """Storage of the quantized tensors only (the weights, :func:`qlib.is_weight`), in bytes."""
        return int(sum(n for name, n in self.storage.items() if name in self.codes))

    def __repr__(self) -> str:
        return (f"PTQResult(method={self.method!r}, bits={self.bits}, "
                f"tensors={len(self.params)}, nbytes={self.nbytes})")


def _check_tensors(params) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    if len(params) == 0:
        raise ValueError("params must not be empty")
    tensors = {}
    for name, t in params.items():
        if not isinstance(name, str):
            raise TypeError(f"params keys must be names (str), got {name!r}")
        tensors[name] = as_float_array(t, f"params[{name!r}]", allow_int=False)
    return tensors


# ----------------------------------------------------------------------------
# one function per method
# ----------------------------------------------------------------------------


def _quantize_article(tensors, bits: int, method: str, use_integer) -> PTQResult:
    """The article's quantizers through :func:`qlib.mixed_quantize`.

    Integer quantization where ``use_integer(name, tensor)``, sub-integer elsewhere.
    """

    def subinteger(t):
        return subinteger_quantize(t, frac_bits=best_frac_bits(t, bits), bits=bits)

    def integer(t):
        return integer_quantize(t, bits=bits)

    plan = {glob.escape(name): integer if use_integer(name, t) else subinteger for name, t in tensors.items()}
    results = mixed_quantize(tensors, plan)
    slot = storage_bits(bits)
    out_params, codes, storage, detail = {}, {}, {}, {}
    for name, t in tensors.items():
        result = results[name]
        packed = pack(result.codes, slot, signed=True)
        kind = "integer" if plan[glob.escape(name)] is integer else f"subinteger, frac_bits={result.frac_bits}"
        out_params[name] = result.dequantize().astype(t.dtype, copy=False)
        codes[name] = result.codes
        storage[name] = size_bytes(packed, np.float32(result.mean), np.float32(result.std))
        detail[name] = f"{kind}, {slot}-bit slots, mean and std as float32"
    return PTQResult(out_params, codes, storage, detail, method, bits)


def _quantize_integer(tensors, bits: int) -> PTQResult:
    """The article's integer quantization of every tensor."""
    return _quantize_article(tensors, bits, "integer", lambda name, t: True)


def _quantize_subinteger(tensors, bits: int) -> PTQResult:
    """The article's sub-integer quantization of every tensor, best ``frac_bits`` per tensor."""
    return _quantize_article(tensors, bits, "subinteger", lambda name, t: False)


def _quantize_mixed(tensors, bits: int) -> PTQResult:
    """Sub-integer weights, integer biases: the article's mixed plan."""
    return _quantize_article(tensors, bits, "mixed", lambda name, t: not is_weight(name, t))


def _keep(name, t, out_params, storage, detail) -> None:
    """A tensor that is not quantized: kept as it is, at its own size."""
    out_params[name] = t.copy()
    storage[name] = size_bytes(t)
    detail[name] = f"kept in {t.dtype}"


def _quantize_kmeans(tensors, bits: int, *, iters: int) -> PTQResult:
    """A k-means codebook per weight tensor, packed indices; other tensors kept."""
    out_params, codes, storage, detail = {}, {}, {}, {}
    for name, t in tensors.items():
        if not is_weight(name, t):
            _keep(name, t, out_params, storage, detail)
            continue
        result = kmeans_quantize(t, bits, iters=iters)
        out_params[name] = result.dequantize().astype(t.dtype, copy=False)
        codes[name] = result.indices
        storage[name] = result.nbytes
        state = "converged" if result.converged else f"not converged after {result.n_iter} iterations"
        detail[name] = f"k-means codebook of {2 ** bits} float32 values ({state}), {bits}-bit indices"
    return PTQResult(out_params, codes, storage, detail, "kmeans", bits)


def _quantize_float(tensors, method: str) -> PTQResult:
    """FP8 with a float32 scale per row, or NF4 with one per block of 64; other tensors kept."""
    import ml_dtypes

    out_params, codes, storage, detail = {}, {}, {}, {}
    for name, t in tensors.items():
        if not is_weight(name, t):
            _keep(name, t, out_params, storage, detail)
            continue
        if method == "nf4":
            result = nf4_quantize(t)
            out_params[name] = result.dequantize().astype(t.dtype, copy=False)
            codes[name], storage[name] = result.codes, result.nbytes
            detail[name] = "NF4, packed 4-bit codes, float32 absmax scale per block of 64"
            continue
        rows = t.reshape(len(t), -1)
        scale = (np.abs(rows).max(axis=1, keepdims=True) / float_format(method).max_finite).astype(np.float32)
        scale[scale == 0] = 1                    # an all-zero row: any scale, its values are 0
        w_hat = round_to_float(rows, method, scale=scale).astype(t.dtype, copy=False)
        out_params[name] = w_hat.reshape(t.shape)
        fp8 = (w_hat.astype(np.float64) / scale).astype(getattr(ml_dtypes, _ML_DTYPES[method]))
        codes[name] = fp8.view(np.uint8).reshape(t.shape)
        storage[name] = size_bytes(codes[name], scale)
        detail[name] = f"{method}, 1 byte a value, float32 scale per output channel"
    return PTQResult(out_params, codes, storage, detail, method, _FLOAT_BITS[method])


def _quantize_uniform(tensors, bits: int, *, per_channel: bool, calibration: str, channel_axis: int,
                      sparse: bool, symmetric: bool = True) -> PTQResult:
    """Uniform quantization of the weights (on the grid of the calibration); other tensors kept."""
    slot = storage_bits(bits)
    axis = channel_axis if per_channel else None
    where = "per channel" if per_channel else "per tensor"
    layout = "bitmask + nonzero codes in" if sparse else "dense,"
    out_params, codes, storage, detail = {}, {}, {}, {}
    for name, t in tensors.items():
        if not is_weight(name, t):
            _keep(name, t, out_params, storage, detail)
            continue
        quantizer = calibrate(t, bits=bits, symmetric=symmetric, axis=axis, method=calibration)
        scale, zero_point = quantizer
        q = quantize(t, quantizer)
        out_params[name] = dequantize(q, quantizer).astype(t.dtype, copy=False)
        codes[name] = q
        stored = pack_sparse(q, bits) if sparse else (pack(q, slot, signed=True),)
        side = (scale,) if symmetric else (scale, zero_point)
        storage[name] = size_bytes(*stored, *side)
        grid = "symmetric" if symmetric else "asymmetric"
        params_stored = "float32 scale(s)" if symmetric else "float32 scale(s) and int8 zero point(s)"
        detail[name] = f"uniform {grid}, {where}, {calibration}, {layout} {slot}-bit slots, {params_stored}"
    return PTQResult(out_params, codes, storage, detail, "uniform", bits)


def quantize_params(params, method: str, bits: int, *, per_channel: bool = False,
                    calibration: str = "minmax", channel_axis: int = 0, sparse: bool = False,
                    symmetric: bool = True, kmeans_iters: int = 200) -> PTQResult:
    r"""Quantize every parameter tensor of a model with one of the book's methods at ``bits`` bits.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        The model's tensors by name, floating point. Weights and the other
        tensors (biases) are told apart by :func:`qlib.is_weight`.
    method : {"integer", "subinteger", "mixed", "uniform", "kmeans", "fp8_e4m3", "fp8_e5m2", "nf4"}
        The method (see the module documentation for what each does to
        weights and biases).
    bits : int
        Code width, 2 to 8.
    per_channel : bool, default False
        ``"uniform"`` only: one scale per index of ``channel_axis`` (per output
        channel) instead of one per tensor.
    calibration : {"minmax", "mse"}, default "minmax"
        ``"uniform"`` only: how :func:`qlib.calibrate` picks the range.
    channel_axis : int, default 0
        ``"uniform"`` with ``per_channel``: the output-channel axis of the
        weights (0 for weights stored ``(out, in)``).
    sparse : bool, default False
        ``"uniform"`` only: store the weight codes with :func:`qlib.pack_sparse`
        (a bitmask of the nonzero codes plus the nonzero codes, packed)
        instead of densely, for pruned models. The symmetric grid maps 0 to
        code 0, so pruned weights stay zero.
    symmetric : bool, default True
        ``"uniform"`` only: the symmetric narrow grid (zero point 0, not
        stored) or, if false, the asymmetric grid with a zero point per scale
        (stored as int8). ``sparse`` needs the symmetric grid.
    kmeans_iters : int, default 200
        ``"kmeans"`` only: the most Lloyd iterations per tensor
        (:func:`qlib.kmeans_quantize`; ``.detail`` says whether it converged).

    Returns
    -------
    PTQResult
        ``.params`` the reconstructed tensors, ``.codes`` the integer codes,
        ``.storage`` the bytes per tensor, ``.nbytes`` their total and
        ``.weight_nbytes`` the total of the quantized tensors.

    Raises
    ------
    TypeError
        If ``params`` is not a mapping of names to floating-point arrays,
        ``method`` or ``calibration`` is not a string, ``bits`` or
        ``channel_axis`` not an integer, or ``per_channel`` or ``sparse`` not
        a bool.
    ValueError
        If ``params`` is empty, a tensor is empty, not finite, or (for the
        article's methods) constant, ``method`` or ``calibration`` is
        unknown, ``bits`` is outside [2, 8], or ``per_channel`` or
        ``calibration`` or ``sparse`` is given for a method other than ``"uniform"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> params = {"fc.weight": rng.normal(0, 0.1, (4, 8)).astype(np.float32),
    ...           "fc.bias": rng.normal(0, 0.1, 4).astype(np.float32)}
    >>> float_bytes = sum(t.nbytes for t in params.values())
    >>> float_bytes
    144
    >>> r = quantize_params(params, "uniform", 4, per_channel=True)
    >>> r
    PTQResult(method='uniform', bits=4, tensors=2, nbytes=48)
    >>> r.storage        # 32 codes in 16 bytes + 4 float32 scales; the bias in float32
    {'fc.weight': 32, 'fc.bias': 16}
    >>> r.params["fc.weight"].dtype
    dtype('float32')
    >>> r.detail["fc.weight"]
    'uniform symmetric, per channel, minmax, dense, 4-bit slots, float32 scale(s)'

    A pruned weight stored sparsely: a 4-byte bitmask for 32 entries, 8
    nonzero 4-bit codes in 4 bytes, 4 scales:

    >>> pruned = dict(params, **{"fc.weight": params["fc.weight"] * (np.arange(32) % 4 == 0).reshape(4, 8)})
    >>> quantize_params(pruned, "uniform", 4, per_channel=True, sparse=True).storage["fc.weight"]
    24

    The article's methods store mean and standard deviation with the codes:

    >>> quantize_params(params, "subinteger", 4).detail["fc.weight"]
    'subinteger, frac_bits=1, 4-bit slots, mean and std as float32'

    FP8 stores what int8 per channel stores (a byte a weight, a float32 scale a row):

    >>> fp8, int8 = quantize_params(params, "fp8_e4m3", 8), quantize_params(params, "uniform", 8, per_channel=True)
    >>> fp8.storage == int8.storage, fp8.codes["fc.weight"].dtype
    (True, dtype('uint8'))
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    if len(params) == 0:
        raise ValueError("params must not be empty")
    check_choice(method, "method", PTQ_METHODS)
    b = check_int(bits, "bits", 2, 8)
    check_bool(per_channel, "per_channel")
    check_bool(sparse, "sparse")
    check_choice(calibration, "calibration", _CALIBRATIONS)
    symmetric = check_bool(symmetric, "symmetric")
    iters = check_int(kmeans_iters, "kmeans_iters", 1)
    if method != "uniform" and (per_channel or sparse or calibration != "minmax" or not symmetric):
        raise ValueError(f"per_channel, calibration, sparse and symmetric apply to method 'uniform' only, "
                         f"not {method!r}")
    if sparse and not symmetric:
        raise ValueError("sparse storage needs the symmetric grid (code 0 is the real 0 only there)")
    if method in _FLOAT_BITS and b != _FLOAT_BITS[method]:
        raise ValueError(f"method {method!r} stores {_FLOAT_BITS[method]}-bit values: bits must be "
                         f"{_FLOAT_BITS[method]}, got {b}")
    check_int(channel_axis, "channel_axis")
    tensors = _check_tensors(params)
    if method == "uniform":
        return _quantize_uniform(tensors, b, per_channel=bool(per_channel), calibration=calibration,
                                 channel_axis=channel_axis, sparse=bool(sparse), symmetric=symmetric)
    if method == "kmeans":
        return _quantize_kmeans(tensors, b, iters=iters)
    if method in _FLOAT_BITS:
        return _quantize_float(tensors, method)
    article = {"integer": _quantize_integer, "subinteger": _quantize_subinteger, "mixed": _quantize_mixed}
    return article[method](tensors, b)


def quantize_per_layer(params, widths, **kwargs) -> tuple[dict, int]:
    """Quantize each layer of a model at its own bit width with :func:`quantize_params`.

    The tensors of layer ``L`` are those whose name starts with ``L + "."``
    (``"fc1.weight"`` and ``"fc1.bias"`` for ``"fc1"``); each layer's tensors
    go through ``quantize_params(tensors, method, widths[L], **kwargs)``
    separately, so per-tensor choices (scales, ``frac_bits``) are those of a
    whole-model call.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray, or a model with a ``.params`` mapping
        The model's tensors by name (or the model, e.g. a :class:`qlib.MLP`).
    widths : mapping of str to int
        Layer name -> code width (2 to 8), e.g. ``{"fc1": 4, "fc2": 8}``.
    **kwargs
        ``method`` (default ``"uniform"``) and the options of
        :func:`quantize_params` (``per_channel``, ``calibration``, ...).

    Returns
    -------
    params : dict of str to numpy.ndarray
        The reconstructed tensors of the layers of ``widths``, in the order
        of ``widths``; tensors of no layer of ``widths`` are left out.
    nbytes : int
        Their total storage, in bytes.

    Raises
    ------
    TypeError
        If ``widths`` is not a mapping, or as :func:`quantize_params`.
    ValueError
        If ``widths`` is empty, a layer has no tensor, or as :func:`quantize_params`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> params = {"fc1.weight": rng.normal(size=(4, 8)).astype(np.float32), "fc1.bias": np.zeros(4, np.float32),
    ...           "fc2.weight": rng.normal(size=(2, 4)).astype(np.float32), "fc2.bias": np.zeros(2, np.float32)}
    >>> p, nbytes = quantize_per_layer(params, {"fc1": 4, "fc2": 8}, per_channel=True)
    >>> nbytes          # fc1: 16 + 16 + 16; fc2: 8 + 8 + 8
    72
    >>> list(p) == list(params)
    True
    """
    params = getattr(params, "params", params)  # a model (qlib.MLP) or its parameters
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    if not isinstance(widths, Mapping):
        raise TypeError(f"widths must be a mapping layer name -> bits, got {type(widths).__name__}")
    if len(widths) == 0:
        raise ValueError("widths must not be empty")
    method = kwargs.pop("method", "uniform")
    out, nbytes = {}, 0
    for layer, bits in widths.items():
        if not isinstance(layer, str):
            raise TypeError(f"widths keys must be layer names (str), got {layer!r}")
        tensors = {n: t for n, t in params.items() if isinstance(n, str) and n.startswith(layer + ".")}
        if not tensors:
            raise ValueError(f"widths has layer {layer!r}, but params has no tensor named {layer!r} + '.*'")
        twice = sorted(set(tensors) & set(out))
        if twice:
            raise ValueError(f"widths has overlapping layers: {twice} belong to {layer!r} and to another layer")
        result = quantize_params(tensors, method, bits, **kwargs)
        out.update(result.params)
        nbytes += result.nbytes
    return out, nbytes
