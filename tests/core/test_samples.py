"""Tests of qlib.core.samples: the reference samples of part 3."""

import numpy as np
import pytest

from qlib.core.samples import reference_samples


def test_reference_samples_are_the_documented_draws():
    rng = np.random.default_rng(1)
    expected = [rng.uniform(-1.0, 1.0, 500), rng.normal(0.0, 1.0, 500), rng.laplace(0.0, 1.0, 500),
                rng.standard_t(3, 500)]
    got = reference_samples(500)
    for e, g in zip(expected, got.values()):
        np.testing.assert_array_equal(e, g)
    assert not np.array_equal(reference_samples(500, seed=2)["Gaussian"], got["Gaussian"])


def test_tails_get_heavier():
    kurt = [float(np.mean(v**4) / np.mean(v**2) ** 2) for v in reference_samples(100_000).values()]
    assert kurt == sorted(kurt) and kurt[0] < 2 and kurt[-1] > 6


def test_errors():
    with pytest.raises(ValueError, match="n must be"):
        reference_samples(0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        reference_samples(10, seed=1.5)
