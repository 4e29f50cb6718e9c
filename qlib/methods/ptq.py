r"""Post-training quantization of a whole model's parameters, with honest storage counts.

The other modules quantize one tensor. A model is a mapping of named tensors
(``{"fc1.weight": ..., "fc1.bias": ..., ...}``, as :class:`qlib.MLP` keeps
them), and comparing quantization methods on it needs two things per method
and bit width: the *reconstructed* parameters, to measure accuracy, and the
number of bytes the quantized model really occupies, to measure compression.
:func:`~qlib.quantize_params` gives both for every method of the book:

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
    (:func:`qlib.mixed_quantize`): sub-integer for weight matrices, integer
    for bias vectors, both in a ``bits``-wide word;
``"uniform"``
    the symmetric uniform quantizer of deployed systems
    (:func:`qlib.calibrate`, :func:`qlib.quantize`) for weight matrices,
    per tensor or per output channel, with min-max or MSE calibration; bias
    vectors stay 32-bit, as in integer-only inference (Jacob et al. 2018),
    where they become int32.

A tensor with two or more dimensions is a *weight matrix*, a 1-D tensor a
*bias vector*.

**Storage.** Codes are stored with :func:`qlib.pack`, which packs 1-, 2-, 4-
and 8-bit codes, so a ``bits``-wide code occupies a slot of
:func:`~qlib.storage_bits` bits: 3-bit codes take 4 bits and 5- to 7-bit codes take
8, as in the formats deployed systems use (ONNX ``INT4`` and ``INT8``).
Side information is counted too: the mean and standard deviation of the
article's methods (two float32 per tensor), the scale(s) of the uniform
quantizer (one float32 per tensor or per channel; the zero point is 0 by
construction and not stored), and unquantized tensors at their own size.
:func:`~qlib.pack_sparse` stores a pruned tensor as a bitmask of its nonzeros plus
their packed codes.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from collections.abc import Mapping

import numpy as np

from qlib.core.validation import as_float_array, check_int
from qlib.core.calibration import calibrate
from qlib.article.integer import integer_quantize
from qlib.core.metrics import mse, size_bytes
from qlib.article.mixed import mixed_quantize
from qlib.core.packing import pack, unpack
from qlib.article.subinteger import subinteger_quantize
from qlib.core.uniform import dequantize, quantize

__all__ = [
    "PTQResult",
    "storage_bits",
    "best_frac_bits",
    "quantize_params",
    "pack_sparse",
    "unpack_sparse",
]

# The methods quantize_params accepts.
PTQ_METHODS = ("integer", "subinteger", "mixed", "uniform")
_CALIBRATIONS = ("minmax", "mse")


def storage_bits(bits: int) -> int:
    """Return the slot width :func:`qlib.pack` stores a ``bits``-wide code in: 1, 2, 4 or 8.

    Parameters
    ----------
    bits : int
        Code width, 1 to 8.

    Returns
    -------
    int
        The smallest of 1, 2, 4 and 8 that is at least ``bits``.

    Raises
    ------
    TypeError
        If ``bits`` is not an integer.
    ValueError
        If ``bits`` is outside [1, 8].

    Examples
    --------
    >>> [storage_bits(b) for b in (2, 3, 4, 6, 8)]
    [2, 4, 4, 8, 8]
    """
    b = check_int(bits, "bits", 1, 8)
    return next(s for s in (1, 2, 4, 8) if s >= b)


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

    def __repr__(self) -> str:
        return (f"PTQResult(method={self.method!r}, bits={self.bits}, "
                f"tensors={len(self.params)}, nbytes={self.nbytes})")


def _standardized_entry(t, result, slot, is_integer):
    """Reconstruction, codes, bytes and detail of a result of the article's quantizers."""
    packed = pack(result.codes, slot, signed=True)
    nbytes = size_bytes(packed, np.float32(result.mean), np.float32(result.std))
    kind = "integer" if is_integer else f"subinteger, frac_bits={result.frac_bits}"
    recon = result.dequantize().astype(t.dtype, copy=False)
    return recon, result.codes, nbytes, f"{kind}, {slot}-bit slots, mean and std as float32"


def quantize_params(params, method: str, bits: int, *, per_channel: bool = False,
                    calibration: str = "minmax", channel_axis: int = 0, sparse: bool = False) -> PTQResult:
    r"""Quantize every parameter tensor of a model with one of the book's methods at ``bits`` bits.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        The model's tensors by name, floating point. Tensors with two or more
        dimensions are weight matrices, 1-D tensors biases.
    method : {"integer", "subinteger", "mixed", "uniform"}
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
        weight matrices (0 for weights stored ``(out, in)``).
    sparse : bool, default False
        ``"uniform"`` only: store the weight codes with :func:`pack_sparse`
        (a bitmask of the nonzero codes plus the nonzero codes, packed)
        instead of densely, for pruned models. The symmetric grid maps 0 to
        code 0, so pruned weights stay zero.

    Returns
    -------
    PTQResult
        ``.params`` the reconstructed tensors, ``.codes`` the integer codes,
        ``.storage`` the bytes per tensor and ``.nbytes`` their total.

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

    >>> quantize_params(params, "subinteger", 3).detail["fc.weight"]
    'subinteger, frac_bits=1, 4-bit slots, mean and std as float32'
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    if len(params) == 0:
        raise ValueError("params must not be empty")
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    if method not in PTQ_METHODS:
        raise ValueError(f"method must be one of {PTQ_METHODS}, got {method!r}")
    b = check_int(bits, "bits", 2, 8)
    if not isinstance(per_channel, (bool, np.bool_)):
        raise TypeError(f"per_channel must be True or False, got {per_channel!r}")
    if not isinstance(sparse, (bool, np.bool_)):
        raise TypeError(f"sparse must be True or False, got {sparse!r}")
    if not isinstance(calibration, str):
        raise TypeError(f"calibration must be a string, got {type(calibration).__name__}")
    if calibration not in _CALIBRATIONS:
        raise ValueError(f"calibration must be one of {_CALIBRATIONS}, got {calibration!r}")
    if method != "uniform" and (per_channel or sparse or calibration != "minmax"):
        raise ValueError(f"per_channel, calibration and sparse apply to method 'uniform' only, not {method!r}")
    check_int(channel_axis, "channel_axis")

    tensors = {}
    for name, t in params.items():
        if not isinstance(name, str):
            raise TypeError(f"params keys must be names (str), got {name!r}")
        arr = as_float_array(t, f"params[{name!r}]", allow_int=False)
        tensors[name] = arr
    slot = storage_bits(b)
    out_params, codes, storage, detail = {}, {}, {}, {}

    if method == "uniform":
        for name, t in tensors.items():
            if t.ndim < 2:
                out_params[name] = t.copy()
                storage[name] = size_bytes(t)
                detail[name] = f"kept in {t.dtype}"
                continue
            axis = channel_axis if per_channel else None
            scale, zp = calibrate(t, bits=b, symmetric=True, axis=axis, method=calibration)
            q = quantize(t, scale, zp, bits=b, axis=axis)
            out_params[name] = dequantize(q, scale, zp, axis=axis).astype(t.dtype, copy=False)
            codes[name] = q
            stored = pack_sparse(q, b) if sparse else (pack(q, slot, signed=True),)
            storage[name] = size_bytes(*stored, scale)
            where = "per channel" if per_channel else "per tensor"
            layout = "bitmask + nonzero codes in" if sparse else "dense,"
            detail[name] = f"uniform symmetric, {where}, {calibration}, {layout} {slot}-bit slots, float32 scale(s)"
        return PTQResult(out_params, codes, storage, detail, method, b)

    def subint(t):
        return subinteger_quantize(t, frac_bits=best_frac_bits(t, b), bits=b)

    def integer(t):
        return integer_quantize(t, bits=b)

    if method == "integer":
        plan = {glob.escape(name): integer for name in tensors}
    elif method == "subinteger":
        plan = {glob.escape(name): subint for name in tensors}
    else:  # mixed: the article's plan, sub-integer weights and integer biases
        plan = {glob.escape(name): (subint if t.ndim >= 2 else integer) for name, t in tensors.items()}
    results = mixed_quantize(tensors, plan)
    for name, t in tensors.items():
        is_integer = plan[glob.escape(name)] is integer
        recon, c, nbytes, what = _standardized_entry(t, results[name], slot, is_integer)
        out_params[name], codes[name], storage[name], detail[name] = recon, c, nbytes, what
    return PTQResult(out_params, codes, storage, detail, method, b)


def pack_sparse(q, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Store a sparse tensor of integer codes as a bitmask of its nonzeros plus their packed codes.

    The mask has one bit per element (``np.packbits`` of ``q != 0``, C order,
    first element in the highest bit), the values are the nonzero codes in C
    order, packed by :func:`qlib.pack` in :func:`storage_bits` slots. The
    total size is about ``q.size / 8 + nnz * storage_bits(bits) / 8`` bytes:
    the mask costs one bit per element, whatever the sparsity, so it pays off
    when more than ``1 / storage_bits(bits)`` of the elements are zero.

    Parameters
    ----------
    q : numpy.ndarray of int
        The codes, any shape, signed.
    bits : int
        Width of the codes, 1 to 8.

    Returns
    -------
    mask : numpy.ndarray of uint8
        ``ceil(q.size / 8)`` bytes.
    values : numpy.ndarray of uint8
        The packed nonzero codes.

    Raises
    ------
    TypeError
        If ``q`` is not an integer array or ``bits`` not an integer.
    ValueError
        If ``bits`` is outside [1, 8] or a code does not fit in ``bits`` bits.

    See Also
    --------
    unpack_sparse : the inverse.

    Examples
    --------
    >>> q = np.array([[0, 3, 0, 0], [-2, 0, 0, 1]], dtype=np.int8)
    >>> mask, values = pack_sparse(q, bits=3)
    >>> mask, values          # 8 elements -> 1 mask byte; 3 codes in 4-bit slots -> 2 bytes
    (array([73], dtype=uint8), array([227,   1], dtype=uint8))
    >>> np.array_equal(unpack_sparse(mask, values, bits=3, shape=q.shape), q)
    True
    """
    arr = np.asarray(q)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"q must be an array of integers, got dtype {arr.dtype}")
    b = check_int(bits, "bits", 1, 8)
    flat = arr.ravel()
    nz = flat != 0
    values = flat[nz]
    lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"q must hold signed {b}-bit codes in [{lo}, {hi}], "
                         f"got values in [{values.min()}, {values.max()}]")
    return np.packbits(nz), pack(values, storage_bits(b), signed=True)


def unpack_sparse(mask, values, bits: int, shape) -> np.ndarray:
    """Rebuild the codes stored by :func:`pack_sparse`.

    Parameters
    ----------
    mask, values : numpy.ndarray of uint8
        What :func:`pack_sparse` returned.
    bits : int
        The code width given to :func:`pack_sparse`.
    shape : tuple of int
        The shape of the original codes.

    Returns
    -------
    numpy.ndarray of int8
        The codes, zeros restored.

    Raises
    ------
    TypeError
        If ``bits`` is not an integer.
    ValueError
        If ``bits`` is outside [1, 8] or ``mask`` is too short for ``shape``.

    Examples
    --------
    >>> q = np.array([0, 0, 5, 0, -7], dtype=np.int8)
    >>> unpack_sparse(*pack_sparse(q, bits=4), bits=4, shape=(5,))
    array([ 0,  0,  5,  0, -7], dtype=int8)
    """
    b = check_int(bits, "bits", 1, 8)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    m = np.asarray(mask, dtype=np.uint8)
    if m.size * 8 < n:
        raise ValueError(f"mask holds {m.size * 8} bits, fewer than the {n} elements of shape {shape}")
    nz = np.unpackbits(m)[:n].astype(bool)
    out = np.zeros(n, dtype=np.int8)
    out[nz] = unpack(values, storage_bits(b), int(nz.sum()), signed=True)
    return out.reshape(shape)
