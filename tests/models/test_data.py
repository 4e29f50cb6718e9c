"""Tests for qlib.models.data: the digits split."""

import numpy as np
import pytest

from qlib.models.data import load_digits_split

# fixture `digits`: tests/conftest.py


def test_split_shapes_dtypes_and_range(digits):
    assert [digits[k].shape for k in ("x_train", "x_val", "x_test")] == [(1078, 64), (359, 64), (360, 64)]
    for k in ("x_train", "x_val", "x_test"):
        assert digits[k].dtype == np.float32
        assert digits[k].min() == 0.0 and digits[k].max() == 1.0
    for k in ("y_train", "y_val", "y_test"):
        assert digits[k].dtype == np.int64


def test_split_is_stratified_and_a_partition(digits):
    from sklearn.datasets import load_digits

    full = load_digits()
    counts = np.bincount(full.target)
    parts = [np.bincount(digits[k], minlength=10) for k in ("y_train", "y_val", "y_test")]
    np.testing.assert_array_equal(sum(parts), counts)
    np.testing.assert_array_equal(parts[0], np.round(0.6 * counts).astype(int))

    # every image of the split, with its label, is an image of the data set, as often as there
    def rows(x, y):
        return sorted(map(tuple, np.column_stack([x * 16, y]).astype(int).tolist()))

    xs = np.concatenate([digits[k] for k in ("x_train", "x_val", "x_test")])
    ys = np.concatenate([digits[k] for k in ("y_train", "y_val", "y_test")])
    assert rows(xs, ys) == rows(full.data / 16, full.target)


def test_split_is_deterministic_and_depends_on_seed(digits):
    again = load_digits_split(seed=0)
    for k in digits:
        np.testing.assert_array_equal(again[k], digits[k])
    other = load_digits_split(seed=1)
    assert not np.array_equal(other["y_train"], digits["y_train"])
    again["x_train"][:] = 0  # fresh copies: modifying one does not affect the next call
    assert load_digits_split(seed=0)["x_train"].max() == 1.0


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_split_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        load_digits_split(seed=seed)
