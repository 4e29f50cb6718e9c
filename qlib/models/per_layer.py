r"""A model whose layers are quantized at chosen widths, every (layer, width) computed once.

Choosing a bit width per layer (:func:`~qlib.layer_sensitivity`,
:func:`~qlib.allocate_bits`) evaluates many mixes of quantized layers: with
:math:`L` layers and :math:`B` widths, the sensitivity table alone takes
:math:`LB + 1` evaluations, and every budget of a Pareto front one more.
:class:`~qlib.PerLayerQuantized` quantizes each layer at each width once
(:func:`~qlib.quantize_per_layer`, so the bytes are those qlib counts for a
stored layer) and remembers each evaluation, so a mix costs one forward pass
the first time and nothing after.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from qlib.core.validation import check_choice
from qlib.methods.bit_allocation import LayerSensitivity, layer_sensitivity
from qlib.methods.distillation import cross_entropy
from qlib.methods.ptq import quantize_per_layer
from qlib.models.data import SPLIT_PARTS
from qlib.models.mlp import MLP

__all__ = ["PerLayerQuantized"]

class PerLayerQuantized:
    """An MLP with any mix of its layers quantized at the widths of ``bits``; evaluations cached.

    Parameters
    ----------
    model : MLP
    split : mapping
        The data, as :func:`~qlib.load_digits_split` returns it (``"x_val"``, ``"y_val"``, ...).
    bits : sequence of int
        The widths each layer may take (each 2 to 8, distinct).
    layers : sequence of str, optional
        The layers that may be quantized; by default all of ``model.layers``.
    **quant
        Options of :func:`~qlib.quantize_per_layer` (``per_channel``, ``calibration``, ``method``, ...).

    Attributes
    ----------
    sizes : dict of str to dict of int to int
        ``sizes[layer][b]``: the bytes of ``layer`` stored at ``b`` bits
        (weights and bias), as :func:`~qlib.allocate_bits` takes them.

    A *mix* ``widths`` is a mapping layer -> width; the layers not in it stay float32.
    :attr:`sensitivity` is :func:`~qlib.layer_sensitivity` of the validation
    loss over ``layers`` and ``bits``, computed on first use.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not an MLP, ``split`` not a mapping, a layer unknown,
        ``bits`` empty or with repeats, or as :func:`~qlib.quantize_per_layer`.

    Examples
    --------
    >>> import qlib
    >>> d = qlib.load_digits_split()
    >>> m = MLP.init((64, 16, 10), np.random.default_rng(0))
    >>> pq = PerLayerQuantized(m, d, bits=(2, 8), per_channel=True)
    >>> pq.sizes["fc1"]         # 16 x 64 codes, 16 float32 scales, 16 float32 biases
    {2: 384, 8: 1152}
    >>> pq.nbytes({"fc1": 2, "fc2": 8}) == pq.sizes["fc1"][2] + pq.sizes["fc2"][8]
    True
    >>> bool(pq.loss({"fc1": 2}) > pq.loss({"fc1": 8}))
    True
    >>> bool(pq.sensitivity["fc1"][2] == pq.loss({"fc1": 2}) - pq.loss({}))
    True
    """

    def __init__(self, model, split, bits, *, layers=None, **quant):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a qlib.MLP, got {type(model).__name__}")
        if not isinstance(split, Mapping):
            raise TypeError(f"split must be a mapping like load_digits_split()'s, got {type(split).__name__}")
        layers = list(model.layers if layers is None else layers)
        unknown = [layer for layer in layers if layer not in model.layers]
        if unknown:
            raise ValueError(f"layers {unknown} are not layers of the model ({model.layers})")
        bits = tuple(bits)
        if not bits or len(set(bits)) != len(bits):
            raise ValueError(f"bits must be a non-empty sequence of distinct widths, got {bits}")
        self.model, self.split, self.layers, self.bits = model, split, layers, bits
        self._cache = {(layer, b): quantize_per_layer(model, {layer: b}, **quant) for layer in layers for b in bits}
        self.sizes = {layer: {b: self._cache[layer, b][1] for b in bits} for layer in layers}
        self._evaluated: dict = {}

    def __repr__(self) -> str:
        return f"PerLayerQuantized(layers={self.layers}, bits={self.bits})"

    def _check_widths(self, widths) -> tuple:
        if not isinstance(widths, Mapping):
            raise TypeError(f"widths must be a mapping layer -> bits, got {type(widths).__name__}")
        for layer, b in widths.items():
            if (layer, b) not in self._cache:
                raise ValueError(f"widths[{layer!r}] = {b!r}: layers are {self.layers}, widths {self.bits}")
        return tuple(sorted(widths.items()))

    def params(self, widths) -> dict[str, np.ndarray]:
        """The model's parameters with the layers of ``widths`` quantized (the others float)."""
        key = self._check_widths(widths)
        p = dict(self.model.params)
        for layer, b in key:
            p.update(self._cache[layer, b][0])
        return p

    @functools.cached_property
    def sensitivity(self) -> LayerSensitivity:
        """Each layer's validation loss increase when only it is quantized, at each width (computed once)."""
        return layer_sensitivity(self.loss, self.layers, self.bits)

    def nbytes(self, widths) -> int:
        """The stored bytes of the layers of ``widths`` at their widths."""
        return sum(self.sizes[layer][b] for layer, b in self._check_widths(widths))

    def _evaluate(self, widths, part):
        part = check_choice(part, "part", SPLIT_PARTS)
        key = (self._check_widths(widths), part)
        if key not in self._evaluated:
            logits = self.model.forward(self.split[f"x_{part}"], params=self.params(widths))
            y = self.split[f"y_{part}"]
            self._evaluated[key] = (cross_entropy(logits, y), float(np.mean(logits.argmax(axis=1) == y)))
        return self._evaluated[key]

    def loss(self, widths, part="val") -> float:
        """The mean cross-entropy on the split ``part`` with the layers of ``widths`` quantized."""
        return self._evaluate(widths, part)[0]

    def accuracy(self, widths, part="val") -> float:
        """The accuracy on the split ``part`` with the layers of ``widths`` quantized."""
        return self._evaluate(widths, part)[1]
