"""Structural pruning of a whole network: remove hidden units of every hidden layer.

:func:`qlib.prune_neurons` removes units of *one* hidden layer, given the
weights around it. :func:`~qlib.prune_hidden_units` applies it to every hidden
layer of a feed-forward network stored as a mapping of named tensors, first
layer first: the weights (:func:`qlib.weight_names`) in order are the layers,
layer ``L.weight`` has its bias ``L.bias`` if present, and the hidden layer
between two consecutive weights loses its units of smallest incoming-weight
norm: their rows of the first weight and bias and their columns of the next
weight. A layer's incoming weights are ranked *after* the previous hidden
layer was pruned (its columns removed), as when the layers are pruned one by
one. The last layer's outputs are never removed.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

from qlib.core.validation import check_int
from qlib.methods.params import weight_names
from qlib.methods.pruning import prune_neurons

__all__ = ["prune_hidden_units"]


def _per_layer_keep(keep, widths: list[int]) -> list[int]:
    if isinstance(keep, numbers.Integral) and not isinstance(keep, bool):
        counts = [keep] * len(widths)
    elif isinstance(keep, (list, tuple)):
        if len(keep) != len(widths):
            raise ValueError(f"keep must give one count per hidden layer ({len(widths)}), got {len(keep)}")
        counts = list(keep)
    else:
        raise TypeError(f"keep must be an integer or a sequence of integers, got {type(keep).__name__} {keep!r}")
    return [check_int(k, "keep", 1, h) for k, h in zip(counts, widths)]


def prune_hidden_units(params, fraction=None, *, keep=None, ord=2):
    r"""Remove hidden units of every hidden layer by incoming-weight norm, with :func:`qlib.prune_neurons`.

    Give either ``fraction`` (the same fraction of every hidden layer,
    :math:`\operatorname{round}(f h)` of its :math:`h` units, as
    :func:`qlib.prune_neurons` counts) or ``keep`` (the number of units each
    hidden layer keeps). See the module documentation for the order.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray, or a model with a ``.params`` mapping
        The network: weights ``(out, in)`` in layer order, each optionally
        with a bias ``<layer>.bias``; e.g. :attr:`qlib.MLP.params` or a
        :class:`qlib.MLP`.
    fraction : float, optional
        Fraction of the units of every hidden layer to remove, in [0, 1).
    keep : int or sequence of int, optional
        Units to keep in every hidden layer, or one count per hidden layer,
        each from 1 to the layer's width.
    ord : float, default 2
        Norm ranking the units (:func:`qlib.neuron_norms`).

    Returns
    -------
    dict of str to numpy.ndarray, or a model
        The pruned tensors, same names and order (tensors not touched are the
        input's own arrays); for a model, a new model of its type built from
        them (``type(model)(params)``).

    Raises
    ------
    TypeError
        If ``params`` is not a mapping or model, ``keep`` not an integer or a
        sequence of them, or as :func:`qlib.prune_neurons`.
    ValueError
        If neither or both of ``fraction`` and ``keep`` are given, the network
        has no hidden layer, a ``keep`` count is outside [1, width], or as
        :func:`qlib.prune_neurons` (e.g. shapes that do not chain).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> net = {"fc1.weight": rng.normal(size=(8, 4)), "fc1.bias": rng.normal(size=8),
    ...        "fc2.weight": rng.normal(size=(6, 8)), "fc2.bias": rng.normal(size=6),
    ...        "fc3.weight": rng.normal(size=(3, 6)), "fc3.bias": rng.normal(size=3)}
    >>> small = prune_hidden_units(net, 0.5)
    >>> {name: t.shape for name, t in small.items()}     # doctest: +NORMALIZE_WHITESPACE
    {'fc1.weight': (4, 4), 'fc1.bias': (4,), 'fc2.weight': (3, 4), 'fc2.bias': (3,),
     'fc3.weight': (3, 3), 'fc3.bias': (3,)}
    >>> [t.shape[0] for t in prune_hidden_units(net, keep=[2, 5]).values()][::2]
    [2, 5, 3]
    """
    model = None if isinstance(params, Mapping) else params
    tensors = params if model is None else getattr(model, "params", None)
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"params must be a mapping of name -> array or a model with a .params mapping, got {type(params).__name__}"
        )
    if (fraction is None) == (keep is None):
        raise ValueError("give exactly one of fraction and keep")
    weights = weight_names(tensors)
    if len(weights) < 2:
        raise ValueError(f"params must have at least two weights (one hidden layer), got {weights}")
    biases = [name[: -len(".weight")] + ".bias" if name.endswith(".weight") else None for name in weights]
    biases = [b if b is not None and b in tensors else None for b in biases]
    widths = [int(tensors[name].shape[0]) for name in weights[:-1]]
    fractions = [fraction] * len(widths) if keep is None else [
        (h - k) / h for k, h in zip(_per_layer_keep(keep, widths), widths)
    ]
    out = dict(tensors)
    for i, f in enumerate(fractions):
        w_in, b_in, w_out = out[weights[i]], None if biases[i] is None else out[biases[i]], out[weights[i + 1]]
        w_in, b_in, w_out, _ = prune_neurons(w_in, b_in, w_out, f, ord=ord)
        out[weights[i]], out[weights[i + 1]] = w_in, w_out
        if biases[i] is not None:
            out[biases[i]] = b_in
    return out if model is None else type(model)(out)
