r"""Integer-only inference of an MLP, after Jacob et al. (2018), arXiv:1712.05877.

:class:`~qlib.IntegerMLP` converts a trained :class:`qlib.MLP` into integers: after
the input is quantized once, every operation is an integer operation, as on
a microcontroller or a DSP without floating point. Each dense layer holds

- **weights**: int8 codes, symmetric per output channel with the restricted
  range :math:`[-127, 127]` (:func:`qlib.calibrate` with ``symmetric=True,
  axis=0``): :math:`W \approx s_w[c]\, W_q`, zero point 0;
- **bias**: int32 codes with scale :math:`s_{in} s_w[c]` and zero point 0,
  :math:`b_q = \mathrm{round}(b / (s_{in} s_w[c]))`, so that it adds
  directly to the accumulators;
- **activations** (the input of every layer and the logits): int8 codes,
  asymmetric, per tensor, calibrated with min-max (or another
  :func:`qlib.calibrate` method) on a calibration set: :math:`h \approx
  s\,(q - z)`. Signed int8 with a zero point is TensorFlow Lite's int8
  scheme (uint8 with zero point :math:`z + 128` is the same grid shifted);
- **the requantization multiplier** of each output channel,
  :math:`M[c] = s_{in} s_w[c] / s_{out}`, as a Q0.31 fixed-point number and
  a shift (:func:`qlib.quantize_multiplier`).

A layer then computes, for a batch of int8 input codes :math:`q_{in}`,

.. math::

    acc[n, c] = \sum_k q_{in}[n, k]\, W_q[c, k]
        + \underbrace{b_q[c] - z_{in} \textstyle\sum_k W_q[c, k]}_{\text{folded bias, precomputed}},
    \qquad
    q_{out} = \mathrm{clamp}\bigl(z_{out} + \mathrm{MBQM}(acc, M[c]),\;
        z_{out} \text{ (ReLU) or } q_{min},\; q_{max}\bigr):

an exact int8 x int8 matrix product accumulated in int32
(:func:`qlib.int_matmul`), an int32 addition of the folded bias (the input
zero point's contribution :math:`z_{in}\sum_k W_q[c,k]` is a constant per
channel, folded into the bias once, as gemmlowp does), and
:func:`qlib.requantize`: TensorFlow Lite's fixed-point multiplication
``MultiplyByQuantizedMultiplier`` (MBQM), the addition of the output zero
point and the clamp to the grid. The ReLU is *fused* into that clamp: the
real 0 is the code :math:`z_{out}`, so :math:`\max(h, 0)` is
:math:`\max(q, z_{out})`. The logits are int8 codes too; the predicted class
is their argmax, still in integers.

**Integer path versus float simulation.** :meth:`~qlib.IntegerMLP.forward_simulated`
computes the same quantized network in float64, from the same scales and
zero points, on the dequantized (fake-quantized) values
:math:`\hat h = s (q - z)`, :math:`\hat W = s_w W_q`, :math:`\hat b = s_{in}
s_w b_q`. It rounds the requantization in one of two ways:

``rounding="half_even"``
    the textbook fake-quantization: :math:`q_{out} = \mathrm{clamp}(z_{out}
    + \mathrm{rint}(y / s_{out}))` with :math:`y = \hat h \hat W^\top + \hat
    b` the exact real product (up to float64 rounding), rounded half to
    even, as QAT frameworks simulate. This is **not** bit-identical to the
    integer path: MBQM multiplies by the 31-bit approximation of :math:`M`
    and rounds *twice*: a rounding high-half product (ties up), then a
    rounding right shift by :math:`n` (ties away from zero). When
    :math:`|acc \cdot M|` lies just below a half-integer, within
    :math:`2^{-n-1}`, the first rounding lands exactly on the half and the
    second rounds it away from zero, one code beyond the single rounding.
    (The 31-bit approximation of :math:`M` and the different tie rule
    matter only on values closer still to a half-integer.) With :math:`n`
    about 10 here, this is rare, and given the same inputs the difference
    is at most one code. Chapter 4 of the book counts these differences on its
    64-64-10 digits MLP over several runs (a few codes in ten thousand differ
    by one, none by more). ``tests/models/test_integer_mlp.py`` asserts the
    one-code bound and a rate below 1 %.
``rounding="fixed_point"`` (default)
    the same float64 computation, but with the requantization modelled as
    the integer kernel defines it: with :math:`a = \hat h / s_{in}` (exactly
    the integers :math:`q - z`, since :math:`\hat h = s_{in}(q - z)` is
    exact in float64) and :math:`acc = a W_q^\top + b_q` (a float64 matrix
    product of integers, exact below :math:`2^{53}`), it computes
    (after the left shift :math:`acc \leftarrow acc\, 2^{shift}` when
    :math:`shift > 0`, i.e. :math:`M \ge 1/2`, saturated to int32 as in the
    kernel) :math:`r_1 = \lfloor (acc\, M_0 + 2^{30})\, 2^{-31} \rfloor` (the rounding
    high-half product, ties up) and :math:`r_2 = \mathrm{sign}(r_1) \lfloor
    |r_1|\, 2^{-n} + \tfrac12 \rfloor` (the rounding shift, ties away from
    zero). Every step is exact in float64: the accumulators are bounded by
    :math:`2^{31}` (checked at conversion), and the product
    :math:`acc\, M_0`, up to :math:`2^{62}`, is formed from the two 16-bit
    halves of :math:`M_0` so that no partial result exceeds :math:`2^{53}`.
    The result **equals the integer path bit for bit** (asserted
    on the digits test set by ``tests/test_intinfer.py``).

So the integer-only network computes exactly what a float model of its
arithmetic predicts, and differs from plain fake quantization only by the
fixed-point rounding of the requantization, in fewer than one activation in
a thousand, by one code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlib.core.calibration import calibrate
from qlib.core.fixed_point import quantize_multiplier, requantize
from qlib.core.grid import Quantizer, integer_range
from qlib.core.intops import int_matmul
from qlib.core.metrics import size_bytes
from qlib.core.uniform import fake_quantize, quantize
from qlib.core.validation import as_float_array, check_choice, check_int
from qlib.models.checks import check_labels
from qlib.models.mlp import MLP
from qlib.models.simulate import calibrate_activations

__all__ = ["IntegerLinear", "IntegerMLP"]

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_ROUNDINGS = ("fixed_point", "half_even")


def _check_rounding(rounding) -> str:
    return check_choice(rounding, "rounding", _ROUNDINGS)


def _srdhm_float64(x: np.ndarray, m0: np.ndarray) -> np.ndarray:
    r"""gemmlowp's SaturatingRoundingDoublingHighMul, :math:`\lfloor (x M_0 + 2^{30}) / 2^{31} \rfloor`, in float64.

    ``x`` holds integers in the int32 range (as float64), ``m0`` the Q0.31
    significands in :math:`[0, 2^{31})`. The product :math:`x M_0` can reach
    :math:`2^{62}`, beyond float64's 53 bits, so :math:`M_0` is split into
    :math:`M_{hi} 2^{16} + M_{lo}` and every partial result stays an integer
    below :math:`2^{53}`, hence exact:

    .. math::

        A = x M_{lo} + 2^{30} = a_1 2^{16} + a_0,\quad
        \Bigl\lfloor \frac{x M_0 + 2^{30}}{2^{31}} \Bigr\rfloor
        = \Bigl\lfloor \frac{x M_{hi} + a_1 + a_0 2^{-16}}{2^{15}} \Bigr\rfloor
        = \Bigl\lfloor \frac{x M_{hi} + a_1}{2^{15}} \Bigr\rfloor .

    (C truncates the quotient toward zero, but with gemmlowp's nudge of
    :math:`1 - 2^{30}` for negative products the result is this floor for
    every sign: ties round toward :math:`+\infty`. The saturating case
    :math:`x = M_0 = -2^{31}` cannot occur, as :math:`M_0 \ge 0`.)
    """
    m = m0.astype(np.int64)
    m_hi = (m >> 16).astype(np.float64)
    m_lo = (m & 0xFFFF).astype(np.float64)
    a = x * m_lo + 2.0**30  # |x M_lo| < 2**47
    a1 = np.floor(a * 2.0**-16)
    return np.floor((x * m_hi + a1) * 2.0**-15)  # |x M_hi| < 2**46


@dataclass(frozen=True, eq=False)
class IntegerLinear:
    r"""One dense layer of an :class:`~qlib.IntegerMLP`: integer parameters and quantization constants.

    Built by :meth:`~qlib.IntegerMLP.from_float`; see the module documentation for
    the arithmetic.

    Attributes
    ----------
    name : str
        ``"fc1"``, ``"fc2"``, ...
    weight : numpy.ndarray of int8, shape (out_features, in_features)
        Weight codes (symmetric, zero point 0).
    bias : numpy.ndarray of int32, shape (out_features,)
        Bias codes, scale ``input_scale * weight_scale``, zero point 0.
    weight_scale : numpy.ndarray of float32, shape (out_features,)
    input_scale, output_scale : numpy.float32
    input_zero_point, output_zero_point : int
    multiplier, shift : numpy.ndarray of int32, shape (out_features,)
        :func:`qlib.quantize_multiplier` of
        :math:`M[c] = s_{in} s_w[c] / s_{out}` (computed in float64).
    folded_bias : numpy.ndarray of int32, shape (out_features,)
        ``bias - input_zero_point * weight.sum(axis=1)``.
    relu : bool
        Whether a ReLU follows (fused into the clamp).
    bits : int
        Width of the activation codes (int8 for 8).
    acc_bound : int
        A bound on :math:`|acc|` over all possible inputs,
        :math:`\max_c \bigl(\max|q_{in} - z_{in}| \sum_k |W_q[c,k]| + |b_q[c]|\bigr)`;
        below :math:`2^{31}` (checked), so int32 never overflows.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    weight_scale: np.ndarray
    input_scale: np.float32
    input_zero_point: int
    output_scale: np.float32
    output_zero_point: int
    multiplier: np.ndarray
    shift: np.ndarray
    folded_bias: np.ndarray
    relu: bool
    bits: int
    acc_bound: int

    def _check_codes(self, q) -> np.ndarray:
        arr = np.asarray(q)
        if arr.dtype != np.int8:
            raise TypeError(f"q must be an int8 array of input codes, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != self.weight.shape[1]:
            raise ValueError(f"q must have shape (n, {self.weight.shape[1]}), got {arr.shape}")
        return arr

    def accumulate(self, q) -> np.ndarray:
        """The int32 accumulators ``q @ weight.T + folded_bias`` of int8 input codes ``q`` (n, in)."""
        qa = self._check_codes(q)
        acc = int_matmul(qa, self.weight.T)  # int32, exact
        return acc + self.folded_bias  # int32 + int32: bounded by acc_bound < 2**31

    def forward(self, q) -> np.ndarray:
        """The output codes of int8 input codes ``q``: integers only.

        Returns
        -------
        numpy.ndarray of int8, shape (n, out_features)
        """
        acc = self.accumulate(q)
        out = requantize(acc, self.multiplier, self.shift, self.output_zero_point, bits=self.bits)
        if self.relu:
            out = np.maximum(out, np.int8(self.output_zero_point))
        return out

    def simulate(self, h, *, rounding="fixed_point"):
        """The same layer in float64 on the real (fake-quantized) input ``h``.

        Parameters
        ----------
        h : numpy.ndarray of float64, shape (n, in_features)
            Dequantized input, ``input_scale * (q - input_zero_point)``.
        rounding : {"fixed_point", "half_even"}
            See the module documentation.

        Returns
        -------
        h_out : numpy.ndarray of float64
            The fake-quantized output, ``output_scale * (codes - output_zero_point)``.
        codes : numpy.ndarray of int8
            Its codes.
        """
        rnd = _check_rounding(rounding)
        qmin, qmax = integer_range(self.bits, True)
        s_in = np.float64(self.input_scale)
        s_out = np.float64(self.output_scale)
        z_out = float(self.output_zero_point)
        if rnd == "half_even":
            s_w = self.weight_scale.astype(np.float64)
            w_hat = self.weight.astype(np.float64) * s_w[:, None]
            b_hat = self.bias.astype(np.float64) * (s_in * s_w)
            y = h @ w_hat.T + b_hat
            output = Quantizer(self.output_scale, self.output_zero_point, bits=self.bits)
            if self.relu:
                y = np.maximum(y, 0.0)  # quantize(max(y, 0)) = max(q, z_out): the fused ReLU
            codes = quantize(y, output)  # the core kernel, in float64 (the precision of y)
            # dequantized in float64, not by qlib.dequantize (float32): the next layer relies on
            # h / s_in being exactly the integers q - z_in
            return (codes.astype(np.float64) - z_out) * s_out, codes.astype(np.int8)
        # fixed_point: the integer kernel's requantization, every step exact in float64
        a = h / s_in  # exactly the integers q - z_in
        acc = a @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)
        left = np.maximum(self.shift, 0).astype(np.float64)
        right = np.maximum(-self.shift, 0).astype(np.float64)
        x = np.clip(acc * 2.0**left, _INT32_MIN, _INT32_MAX)
        high = _srdhm_float64(x, self.multiplier)  # SaturatingRoundingDoublingHighMul
        shifted = np.sign(high) * np.floor(np.abs(high) * 2.0**-right + 0.5)  # RoundingDivideByPOT: ties away
        codes = np.clip(shifted + z_out, qmin, qmax)
        if self.relu:
            codes = np.maximum(codes, z_out)
        return (codes - z_out) * s_out, codes.astype(np.int8)


class IntegerMLP:
    r"""An MLP that runs on integers only (int8 weights and activations, int32 accumulators).

    Build it with :meth:`~qlib.IntegerMLP.from_float`; see the module documentation for the
    arithmetic and for how it compares with a float simulation.

    Attributes
    ----------
    layers : list of IntegerLinear
    input_scale : numpy.float32
    input_zero_point : int
        How the float input is quantized (once) to int8 codes.
    output_scale : numpy.float32
    output_zero_point : int
        The logits are ``output_scale * (codes - output_zero_point)``.
    bits : int
        Width of the activation codes.

    Examples
    --------
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> model = qlib.MLP.init((64, 32, 10), np.random.default_rng(0))
    >>> _ = qlib.train(model, d["x_train"], d["y_train"], epochs=10, rng=np.random.default_rng(1))
    >>> imodel = IntegerMLP.from_float(model, d["x_val"])
    >>> q = imodel.forward_int(d["x_test"])
    >>> q.dtype, q.shape
    (dtype('int8'), (360, 10))
    >>> bool(np.array_equal(q, imodel.forward_simulated(d["x_test"])))
    True
    >>> abs(imodel.accuracy(d["x_test"], d["y_test"]) - model.accuracy(d["x_test"], d["y_test"])) <= 0.01
    True
    """

    def __init__(self, layers, input_scale, input_zero_point, bits):
        self.layers: list[IntegerLinear] = list(layers)
        self.input_scale = np.float32(input_scale)
        self.input_zero_point = int(input_zero_point)
        self.bits = int(bits)

    @property
    def output_scale(self) -> np.float32:
        return self.layers[-1].output_scale

    @property
    def output_zero_point(self) -> int:
        return self.layers[-1].output_zero_point

    @property
    def sizes(self) -> tuple[int, ...]:
        return (int(self.layers[0].weight.shape[1]),) + tuple(int(L.weight.shape[0]) for L in self.layers)

    def __repr__(self) -> str:
        return f"IntegerMLP(sizes={self.sizes}, bits={self.bits})"

    @classmethod
    def from_float(cls, model: MLP, calib_x, *, weight_bits=8, act_bits=8, weight_method="minmax",
                   act_method="minmax", **calibrate_kwargs) -> "IntegerMLP":
        r"""Quantize a float MLP for integer-only inference (post-training, no retraining).

        Activation ranges (the input, every hidden ReLU output, the logits)
        are calibrated on ``calib_x`` with the float model; weights per
        output channel. If a bias is so large relative to a tiny weight
        scale (e.g. a row of weights pruned to zero) that its code would not
        fit in :math:`\pm 2^{30}`, that channel's weight scale is raised
        until it does.

        Parameters
        ----------
        model : MLP
            The trained float model.
        calib_x : array_like of float, shape (n, in_features)
            Calibration inputs (e.g. the validation set; not the test set).
        weight_bits : int, default 8
            Width of the weight codes, 2 to 8 (stored in int8).
        act_bits : int, default 8
            Width of the activation codes, 2 to 8 (signed, stored in int8).
        weight_method, act_method : {"minmax", "percentile", "mse"}, default "minmax"
            :func:`qlib.calibrate`'s range for weights and activations.
        **calibrate_kwargs
            Passed on to :func:`qlib.calibrate` (``percentile``, ``num_candidates``).

        Returns
        -------
        IntegerMLP

        Raises
        ------
        TypeError
            If ``model`` is not a :class:`qlib.MLP` or an argument has the wrong type.
        ValueError
            If ``calib_x`` does not fit the model, a width is outside [2, 8],
            or the accumulators could overflow int32.
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
        weight_width = check_int(weight_bits, "weight_bits", 2, 8)
        act_width = check_int(act_bits, "act_bits", 2, 8)
        calib = model.check_input(calib_x, "calib_x")
        ranges = calibrate_activations(model, calib, bits=act_width, signed=True, method=act_method,
                                       include_output=True, **calibrate_kwargs)
        layer_names = model.layers
        act_quantizers = [ranges[layer] for layer in layer_names] + [ranges["output"]]
        qmin, qmax = integer_range(act_width, True)
        layers = []
        for i, layer in enumerate(layer_names):
            weight = model.params[f"{layer}.weight"].astype(np.float32)
            bias = model.params[f"{layer}.bias"].astype(np.float64)
            s_in, z_in = np.float32(act_quantizers[i][0]), int(act_quantizers[i][1])
            s_out, z_out = np.float32(act_quantizers[i + 1][0]), int(act_quantizers[i + 1][1])
            calibrated = calibrate(weight, bits=weight_width, symmetric=True, axis=0, method=weight_method,
                                   **calibrate_kwargs)
            # keep |bias code| <= 2**30: floor the weight scale where a bias dwarfs its weights
            floor = (np.abs(bias) / (np.float64(s_in) * 2.0**30)).astype(np.float32)
            s_w = np.maximum(calibrated.scale, np.nextafter(floor, np.float32(np.inf)))
            weight_quantizer = Quantizer(s_w, calibrated.zero_point, bits=weight_width, signed=calibrated.signed,
                                         narrow_range=calibrated.narrow_range, axis=0)
            w_q = quantize(weight, weight_quantizer).astype(np.int8)
            bias_scale = np.float64(s_in) * s_w.astype(np.float64)
            b_q = np.rint(bias / bias_scale).astype(np.int64)
            row_abs = np.abs(w_q.astype(np.int64)).sum(axis=1)
            in_span = max(qmax - z_in, z_in - qmin)
            bound = int(np.max(in_span * row_abs + np.abs(b_q)))
            folded = b_q - z_in * w_q.astype(np.int64).sum(axis=1)
            worst_part = int(np.max(128 * row_abs + np.abs(folded)))
            if max(bound, worst_part) > _INT32_MAX:
                raise ValueError(
                    f"layer {layer}: the accumulators could reach {max(bound, worst_part)}, beyond int32"
                )
            real_multiplier = np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)
            m0, shift = quantize_multiplier(real_multiplier)
            layers.append(IntegerLinear(
                name=layer,
                weight=w_q,
                bias=b_q.astype(np.int32),
                weight_scale=s_w.astype(np.float32),
                input_scale=s_in,
                input_zero_point=z_in,
                output_scale=s_out,
                output_zero_point=z_out,
                multiplier=m0,
                shift=shift,
                folded_bias=folded.astype(np.int32),
                relu=i < len(layer_names) - 1,
                bits=act_width,
                acc_bound=bound,
            ))
        return cls(layers, act_quantizers[0][0], act_quantizers[0][1], act_width)

    # -- inference -----------------------------------------------------------

    def check_input(self, x) -> np.ndarray:
        """``x`` as a float32 batch of shape ``(n, in_features)``; TypeError/ValueError naming ``x`` otherwise."""
        xa = as_float_array(x, "x")
        n_in = self.sizes[0]
        if xa.ndim != 2 or xa.shape[1] != n_in:
            raise ValueError(
                f"x must have shape (n, {n_in}), one row of {n_in} features per sample, got shape {xa.shape}"
            )
        return xa.astype(np.float32, copy=False)

    def quantize_input(self, x) -> np.ndarray:
        """The int8 codes of the float input ``x`` (the only float operation of inference)."""
        return quantize(self.check_input(x), self.input_scale, self.input_zero_point, bits=self.bits).astype(np.int8)

    def forward_int(self, x, *, return_all=False):
        """Integer-only inference: int8 logit codes.

        Parameters
        ----------
        x : array_like of float, shape (n, in_features)
            Quantized once to int8 (:meth:`~qlib.IntegerMLP.quantize_input`); everything after
            is integer arithmetic.
        return_all : bool, default False
            Return the codes of every activation tensor instead: the
            input, each hidden layer's output, the logits.

        Returns
        -------
        numpy.ndarray of int8, shape (n, out_features), or list of them
            The logit codes; the logits are
            ``output_scale * (codes - output_zero_point)`` (:meth:`~qlib.IntegerMLP.forward`).

        Raises
        ------
        TypeError, ValueError
            If ``x`` is not a finite float array of shape ``(n, in_features)``.
        """
        q = self.quantize_input(x)
        all_codes = [q]
        for layer in self.layers:
            q = layer.forward(q)
            all_codes.append(q)
        return all_codes if return_all else q

    def forward_simulated(self, x, *, rounding="fixed_point", return_all=False):
        """The same quantized network computed in float64 (fake quantization).

        Its codes are those of :meth:`~qlib.IntegerMLP.forward_int`.

        Parameters
        ----------
        x : array_like of float, shape (n, in_features)
        rounding : {"fixed_point", "half_even"}, default "fixed_point"
            How the requantization rounds (see the module documentation):
            ``"fixed_point"`` models the integer kernel and equals
            :meth:`~qlib.IntegerMLP.forward_int` bit for bit; ``"half_even"`` is plain fake
            quantization and differs from it by one code on fewer than 0.1 %
            of the activations.
        return_all : bool, default False
            As in :meth:`~qlib.IntegerMLP.forward_int`.

        Returns
        -------
        numpy.ndarray of int8, or list of them
            The codes of the fake-quantized logits (or of every activation tensor).

        Raises
        ------
        TypeError, ValueError
            If ``x`` is invalid or ``rounding`` unknown.

        Examples
        --------
        See :class:`~qlib.IntegerMLP`.
        """
        rnd = _check_rounding(rounding)
        xa = self.check_input(x)
        h32 = fake_quantize(xa, self.input_scale, self.input_zero_point, bits=self.bits)
        h = h32.astype(np.float64)
        codes = [self.quantize_input(xa)] if return_all else []
        for layer in self.layers:
            h, c = layer.simulate(h, rounding=rnd)
            if return_all:
                codes.append(c)
        return codes if return_all else c

    def forward(self, x) -> np.ndarray:
        """The logits of the integer path, dequantized to float64 (for comparison with a float model)."""
        q = self.forward_int(x)
        return (q.astype(np.float64) - self.output_zero_point) * np.float64(self.output_scale)

    def predict(self, x) -> np.ndarray:
        """The predicted classes: argmax of the int8 logit codes (the first on ties)."""
        return np.argmax(self.forward_int(x), axis=1)

    def accuracy(self, x, y) -> float:
        """The fraction of rows of ``x`` whose predicted class is ``y``."""
        xa = self.check_input(x)
        ya = check_labels(y, xa.shape[0], self.sizes[-1])
        return float(np.mean(self.predict(xa) == ya))

    def size_bytes(self) -> int:
        """Bytes stored: int8 weights, int32 biases, per-channel multipliers and shifts (int32),
        and the input's scale (float32) and zero point (int8)."""
        parts = [self.input_scale, np.int8(self.input_zero_point)]
        for L in self.layers:
            parts += [L.weight, L.bias, L.multiplier, L.shift, L.output_scale, np.int8(L.output_zero_point)]
        return size_bytes(*parts)
