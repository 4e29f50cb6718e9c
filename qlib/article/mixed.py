r"""Mixed quantization as the article describes it (its section 3.3).

The article quantizes "the parameters" with integer quantization and "the
weights" with sub-integer quantization, i.e. it chooses a scheme per tensor.
Its formula, :math:`x_{mixed} = \mathrm{round}(x_{std} 2^{b}) / 2^{b}`, is the
sub-integer formula again: what makes the method *mixed* is only the choice
of scheme per tensor, which is what this module implements.

A *plan* maps glob patterns of tensor names (``fnmatch`` syntax: ``*``, ``?``,
``[seq]``) to quantizers. A quantizer is any callable taking an array and
returning either an object with a ``dequantize()`` method (like the results of
:func:`qlib.integer_quantize` and :func:`qlib.subinteger_quantize`) or an
already reconstructed array (like :func:`qlib.fake_quantize`). Patterns are
tried in order; the first that matches a name wins. The same mechanism
carries per-layer bit widths chosen by hand or by an automatic search.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

__all__ = ["MixedQuantized", "mixed_quantize"]


@dataclass(frozen=True, eq=False)
class MixedQuantized(Mapping):
    """Per-tensor results of :func:`mixed_quantize`, readable as a mapping name -> result.

    Attributes
    ----------
    results : dict
        Tensor name -> what its quantizer returned.
    assignment : dict
        Tensor name -> the plan pattern that chose its quantizer.
    """

    results: dict
    assignment: dict

    def __getitem__(self, name):
        return self.results[name]

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def dequantize(self) -> dict[str, np.ndarray]:
        """Return tensor name -> reconstructed array."""
        return {
            name: (r if isinstance(r, np.ndarray) else r.dequantize())
            for name, r in self.results.items()
        }


def mixed_quantize(tensors: Mapping[str, object], plan: Mapping[str, Callable]) -> MixedQuantized:
    """Quantize each named tensor with the quantizer its name selects in ``plan``.

    Parameters
    ----------
    tensors : mapping of str to array_like
        The model's tensors by name, e.g. ``{"w": w, "b": b}``.
    plan : mapping of str to callable
        Ordered glob pattern -> quantizer. Each quantizer takes one array and
        returns an object with ``dequantize()`` or a reconstructed ndarray.

    Returns
    -------
    MixedQuantized
        Mapping name -> result, with ``.assignment`` (name -> pattern) and
        ``.dequantize()`` (name -> array).

    Raises
    ------
    TypeError
        If ``tensors`` or ``plan`` is not a mapping, a name or pattern is not a
        string, a quantizer is not callable, or a quantizer returns neither an
        ndarray nor an object with ``dequantize()``.
    ValueError
        If ``tensors`` or ``plan`` is empty, a tensor matches no pattern, or a
        pattern matches no tensor (usually a typo). Errors of the quantizers
        themselves (NaN, constant tensor, ...) propagate, prefixed with the
        tensor's name.

    Examples
    --------
    The article's choice: integer quantization for the bias, sub-integer with
    8 fractional bits for the weights.

    >>> import qlib
    >>> tensors = {"layer.weight": np.array([0.5, -1.0, 2.0, 0.25]),
    ...            "layer.bias": np.array([3.0, 1.0, -2.0])}
    >>> plan = {"*.weight": lambda t: qlib.subinteger_quantize(t, frac_bits=8),
    ...         "*.bias": qlib.integer_quantize}
    >>> mq = mixed_quantize(tensors, plan)
    >>> mq.assignment
    {'layer.weight': '*.weight', 'layer.bias': '*.bias'}
    >>> mq["layer.bias"].codes
    array([ 1,  0, -1])
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of name -> array, got {type(tensors).__name__}")
    if not isinstance(plan, Mapping):
        raise TypeError(f"plan must be a mapping of name pattern -> quantizer, got {type(plan).__name__}")
    if len(tensors) == 0:
        raise ValueError("tensors must not be empty")
    if len(plan) == 0:
        raise ValueError("plan must not be empty")
    for pattern, quantizer in plan.items():
        if not isinstance(pattern, str):
            raise TypeError(f"plan keys must be name patterns (str), got {pattern!r}")
        if not callable(quantizer):
            raise TypeError(f"plan[{pattern!r}] must be callable, got {type(quantizer).__name__}")

    assignment: dict[str, str] = {}
    for name in tensors:
        if not isinstance(name, str):
            raise TypeError(f"tensors keys must be names (str), got {name!r}")
        match = next((p for p in plan if fnmatchcase(name, p)), None)
        if match is None:
            raise ValueError(
                f"tensors[{name!r}] matches no pattern of plan {list(plan)}; "
                "add a pattern for it (\"*\" matches every name)"
            )
        assignment[name] = match
    unused = [p for p in plan if not any(fnmatchcase(name, p) for name in tensors)]
    if unused:
        raise ValueError(f"plan pattern(s) {unused} match no tensor name of {list(tensors)}")

    results = {}
    for name, value in tensors.items():
        try:
            result = plan[assignment[name]](value)
        except (TypeError, ValueError) as err:
            raise type(err)(f"tensors[{name!r}]: {err}") from err
        if not (isinstance(result, np.ndarray) or callable(getattr(result, "dequantize", None))):
            raise TypeError(
                f"plan[{assignment[name]!r}] returned {type(result).__name__} for tensors[{name!r}]; "
                "a quantizer must return an ndarray or an object with dequantize()"
            )
        results[name] = result
    return MixedQuantized(results, assignment)
