"""Input checks shared by the modules of :mod:`qlib.models` (not part of the public API)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qlib.core.validation import as_float_array

__all__: list[str] = []


def check_labels(y, n: int, n_classes: int, name: str = "y") -> np.ndarray:
    """``y`` as int64 class labels, one per row of ``x`` (``n`` rows), in ``[0, n_classes)``."""
    arr = np.asarray(y)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an array of integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one label per row of x, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_classes):
        bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
        raise ValueError(f"{name} must hold class labels in [0, {n_classes - 1}], got {bad}")
    return arr.astype(np.int64, copy=False)


def layer_names(params: Mapping, name: str = "params") -> list[str]:
    """``["fc1", "fc2", ...]`` from the parameter names (checked to be complete and in order)."""
    n = len(params) // 2
    names = [f"fc{i}" for i in range(1, n + 1)]
    expected = [f"{ln}.{kind}" for ln in names for kind in ("weight", "bias")]
    if len(params) == 0 or list(params) != expected:
        raise ValueError(
            f"{name} must hold exactly the names {expected or ['fc1.weight', 'fc1.bias', '...']} "
            f"in this order, got {list(params)}"
        )
    return names


def check_params(params, name: str = "params", like: Mapping | None = None) -> dict[str, np.ndarray]:
    """Validated MLP parameters: a dict of finite float arrays of consistent shapes (not copied)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a mapping of parameter name -> array, got {type(params).__name__}")
    out: dict[str, np.ndarray] = {}
    prev_out = None
    for ln in layer_names(params, name):
        w = as_float_array(params[f"{ln}.weight"], f"{name}['{ln}.weight']", allow_int=False)
        b = as_float_array(params[f"{ln}.bias"], f"{name}['{ln}.bias']", allow_int=False)
        if w.ndim != 2:
            raise ValueError(f"{name}['{ln}.weight'] must be 2-D (out_features, in_features), got shape {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"{name}['{ln}.bias'] must have shape ({w.shape[0]},), got {b.shape}")
        if prev_out is not None and w.shape[1] != prev_out:
            raise ValueError(
                f"{name}['{ln}.weight'] must have {prev_out} input features (the previous layer's "
                f"outputs), got shape {w.shape}"
            )
        prev_out = w.shape[0]
        out[f"{ln}.weight"], out[f"{ln}.bias"] = w, b
    if like is not None:
        for k, v in like.items():
            if out[k].shape != v.shape:
                raise ValueError(f"{name}['{k}'] must have shape {v.shape} as the model's, got {out[k].shape}")
    return out
