"""Which tensors of a model are weights: one rule for every whole-model method.

A model is a mapping of named tensors (``{"fc1.weight": ..., "fc1.bias": ...}``,
as :class:`qlib.MLP` keeps them). Quantization, pruning and weight decay treat
*weights* (matrices, or convolution kernels) differently from the other
tensors (bias vectors, normalization scales), and they must agree on which is
which. The rule, used by :func:`qlib.quantize_params`,
:func:`qlib.fake_quantize_weights` and the training's weight decay:

    a tensor is a weight if it has **two or more dimensions** and its name does
    **not** end in ``".bias"``.

The dimension test sends 1-D tensors (biases, the scale vector of a layer
normalization, even when named ``".weight"``) to the non-weights, which are
kept in float by every quantization method of the book; the name test keeps a
bias stored as a column ``(out, 1)`` out of the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["is_weight", "weight_names", "weights_of"]


def is_weight(name, tensor) -> bool:
    """Whether the tensor ``name`` of a model is a weight (see the module documentation).

    Parameters
    ----------
    name : str
        The tensor's name in the model, e.g. ``"fc1.weight"``.
    tensor : array_like
        The tensor (only its number of dimensions is used).

    Returns
    -------
    bool
        True for a tensor of two or more dimensions whose name does not end in ``".bias"``.

    Raises
    ------
    TypeError
        If ``name`` is not a string.

    Examples
    --------
    >>> is_weight("fc1.weight", np.zeros((4, 3))), is_weight("fc1.bias", np.zeros(4))
    (True, False)
    >>> is_weight("norm.weight", np.ones(4)), is_weight("fc1.bias", np.zeros((4, 1)))
    (False, False)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a tensor name (str), got {type(name).__name__} {name!r}")
    return np.ndim(tensor) >= 2 and not name.endswith(".bias")


def _tensors(params_or_model) -> Mapping:
    params = getattr(params_or_model, "params", params_or_model)
    if not isinstance(params, Mapping):
        raise TypeError(
            "params must be a mapping of name -> array or a model with a .params mapping, "
            f"got {type(params_or_model).__name__}"
        )
    return params


def weight_names(params) -> list[str]:
    """The names of the weights of ``params``, in its order (the rule of :func:`is_weight`).

    Parameters
    ----------
    params : mapping of str to array_like, or a model with a ``.params`` mapping

    Returns
    -------
    list of str

    Raises
    ------
    TypeError
        If ``params`` is not a mapping (nor has one as ``.params``) or a key is not a string.

    Examples
    --------
    >>> weight_names({"fc1.weight": np.zeros((4, 3)), "fc1.bias": np.zeros(4), "fc2.weight": np.zeros((2, 4))})
    ['fc1.weight', 'fc2.weight']
    """
    return [name for name, t in _tensors(params).items() if is_weight(name, t)]


def weights_of(params) -> dict:
    """The weights of a model: ``{name: tensor}`` for every name of :func:`weight_names`.

    The tensors are the model's own arrays (not copies), e.g. to prune them
    with :func:`qlib.global_magnitude_prune` and write the result back with
    ``model.params.update(...)``.

    Parameters
    ----------
    params : mapping of str to array_like, or a model with a ``.params`` mapping
        E.g. a :class:`qlib.MLP` or its :attr:`~qlib.MLP.params`.

    Returns
    -------
    dict of str to array

    Raises
    ------
    TypeError
        As :func:`weight_names`.

    Examples
    --------
    >>> p = {"fc1.weight": np.ones((2, 3)), "fc1.bias": np.zeros(2)}
    >>> w = weights_of(p)
    >>> list(w), w["fc1.weight"] is p["fc1.weight"]
    (['fc1.weight'], True)
    """
    tensors = _tensors(params)
    return {name: tensors[name] for name in weight_names(tensors)}
