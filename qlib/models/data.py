"""The digits data set of scikit-learn, split into training, validation and test sets."""

from __future__ import annotations

import functools

import numpy as np

from qlib.core.validation import check_int

__all__ = ["load_digits_split"]

#: The parts of a split, as the keys "x_<part>" and "y_<part>" of load_digits_split name them.
SPLIT_PARTS = ("train", "val", "test")


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is a book dependency
        raise ImportError(
            "load_digits_split needs scikit-learn (pip install scikit-learn), "
            "which ships the digits data set"
        ) from exc
    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits_split(seed=0) -> dict[str, np.ndarray]:
    """The handwritten digits of scikit-learn, split 60/20/20 into train, validation and test.

    The data set (``sklearn.datasets.load_digits``, bundled with
    scikit-learn, no download) holds 1797 grey-level images of 8 x 8 pixels,
    each pixel an integer from 0 to 16, of the digits 0 to 9 (about 180 per
    class). Pixels are divided by 16 to lie in [0, 1] and flattened to 64
    features.

    The split is *stratified*: within each class, the samples are shuffled by
    ``numpy.random.default_rng(seed)`` and the first 60 % (rounded) go to the
    training set, the next 20 % to validation, the rest to test; each set is
    then shuffled. The same ``seed`` always gives the same split.

    Parameters
    ----------
    seed : int, default 0
        Seed of the split (a non-negative integer).

    Returns
    -------
    dict of numpy.ndarray
        ``"x_train"``, ``"x_val"``, ``"x_test"``: float32 arrays of shape
        ``(n, 64)`` with values in [0, 1]; ``"y_train"``, ``"y_val"``,
        ``"y_test"``: int64 labels 0 to 9. Sizes 1078, 359 and 360. The arrays
        are fresh copies (free to modify).

    Raises
    ------
    TypeError
        If ``seed`` is not an integer.
    ValueError
        If ``seed`` is negative.
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> d = load_digits_split(seed=0)
    >>> d["x_train"].shape, d["x_val"].shape, d["x_test"].shape
    ((1078, 64), (359, 64), (360, 64))
    >>> d["x_train"].dtype, d["y_train"].dtype, float(d["x_train"].max())
    (dtype('float32'), dtype('int64'), 1.0)
    >>> np.bincount(d["y_test"])
    array([35, 37, 36, 36, 36, 37, 36, 36, 35, 36])
    """
    s = check_int(seed, "seed", 0)
    x, y = _digits_raw()
    rng = np.random.default_rng(s)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(int(y.max()) + 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_train = int(round(0.6 * idx.size))
        n_val = int(round(0.2 * idx.size))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    out = {}
    for name, pieces in parts.items():
        idx = rng.permutation(np.concatenate(pieces))
        out[f"x_{name}"] = x[idx].copy()
        out[f"y_{name}"] = y[idx].copy()
    return {k: out[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
