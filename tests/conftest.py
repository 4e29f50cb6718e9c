"""Fixtures shared by the test files: the digits split and a trained test-bed MLP.

Module scope: each test file gets its own trained model, so a test that changes
a model in place cannot affect another file.
"""

import numpy as np
import pytest

from qlib.models.data import load_digits_split
from qlib.models.mlp import MLP
from qlib.models.training import train


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    """A (64, 64, 10) MLP trained 20 epochs on the digits: (model, training history)."""
    model = MLP.init((64, 64, 10), np.random.default_rng(0))
    hist = train(model, digits["x_train"], digits["y_train"], epochs=20, rng=np.random.default_rng(1))
    return model, hist
