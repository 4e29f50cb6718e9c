r"""Bias correction: remove the mean output error that quantizing a weight introduces.

Quantizing the weight of a linear layer :math:`y = x W^T + b` to :math:`\hat W`
changes its output by :math:`x(\hat W - W)^T`, whose expectation over the
inputs, :math:`\mathbb{E}[x](\hat W - W)^T`, is in general not zero: the
rounding errors of one output channel need not cancel against the mean
input, and the quantized layer is then *biased*. Nagel, van Baalen,
Blankevoort & Welling (2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", arXiv:1906.04721, section 4.2) fold the
expected error into the bias:

.. math::

    b' = b - (\hat W - W)\, \mathbb{E}[x],

so that :math:`\mathbb{E}[x \hat W^T + b'] = \mathbb{E}[x W^T + b]`. The paper's
data-free variant estimates :math:`\mathbb{E}[x]` from the preceding batch
normalization; :func:`~qlib.bias_correction` is its *empirical* variant, with
:math:`\mathbb{E}[x]` the mean of calibration inputs.
"""

from __future__ import annotations

import numpy as np

from qlib.core.layout import compute_dtype
from qlib.core.validation import as_float_array

__all__ = ["bias_correction"]


def bias_correction(weight, weight_hat, bias, inputs) -> np.ndarray:
    r"""The corrected bias :math:`b' = b - (\hat W - W)\,\mathbb{E}[x]` of a quantized linear layer.

    For :math:`y = x W^T + b` with the weight quantized to :math:`\hat W`, the
    expected output error on the inputs is :math:`\mathbb{E}[x](\hat W - W)^T`;
    subtracting it from the bias makes the mean output of the quantized layer
    on ``inputs`` equal to the float layer's (Nagel et al. 2019,
    arXiv:1906.04721, section 4.2, empirical bias correction, with
    :math:`\mathbb{E}[x]` the mean of the calibration inputs).

    Parameters
    ----------
    weight, weight_hat : array_like of float, shape (out, in)
        The float weight and its quantized reconstruction (e.g. the
        ``weight`` of :func:`~qlib.gptq_quantize`).
    bias : array_like of float, shape (out,), or None
        The layer's bias; ``None`` for a layer without one (the corrected
        bias is then :math:`-(\hat W - W)\mathbb{E}[x]`).
    inputs : array_like of float, shape (n, in) or (..., in)
        Calibration inputs of the layer.

    Returns
    -------
    numpy.ndarray, shape (out,)
        The corrected bias, computed in float64 and returned in the float
        type of ``bias`` (float32 for a float16 bias or ``bias=None``
        with a float16 or float32 weight, float64 with a float64 weight).

    Raises
    ------
    TypeError
        If an argument is not a floating-point array (integer arrays are
        refused).
    ValueError
        If an array is empty or not finite, or the shapes do not fit.

    Examples
    --------
    The mean input is (2, 2) and the first weight grew by 0.5, so the mean
    output grew by 1; the bias gives it back:

    >>> w, w_hat = np.array([[1.0, 2.0]]), np.array([[1.5, 2.0]])
    >>> x = np.array([[1.0, 3.0], [3.0, 1.0]])
    >>> bias_correction(w, w_hat, np.array([0.25]), x)
    array([-0.75])
    """
    w = as_float_array(weight, "weight", allow_int=False)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {w.shape}")
    out_f, in_f = w.shape
    w_hat = as_float_array(weight_hat, "weight_hat", allow_int=False)
    if w_hat.shape != w.shape:
        raise ValueError(f"weight_hat must have the shape of weight {w.shape}, got {w_hat.shape}")
    if bias is None:
        b = np.zeros(out_f, dtype=compute_dtype(w.dtype))
    else:
        b = as_float_array(bias, "bias", allow_int=False)
        if b.shape != (out_f,):
            raise ValueError(f"bias must have shape (out_features,) = ({out_f},), got {b.shape}")
    x = as_float_array(inputs, "inputs", allow_int=False)
    if x.ndim < 2 or x.shape[-1] != in_f:
        raise ValueError(f"inputs must have shape (n, {in_f}) (or (..., {in_f})), one row per calibration "
                         f"sample and in_features={in_f} columns, got shape {x.shape}")
    mean = np.mean(x.reshape(-1, in_f), axis=0, dtype=np.float64)
    delta = w_hat.astype(np.float64) - w.astype(np.float64)
    out = b.astype(np.float64) - delta @ mean
    return out.astype(compute_dtype(b.dtype))
