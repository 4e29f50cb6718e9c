"""Tests for qlib.models.minilm_stats: weight statistics, outlier channels, cosine and rank correlation.

The weight statistics are tested on a tiny synthetic MiniLM (2 layers, hidden size 16,
random weights with one planted outlier column); they read only the tensors, so the
model needs no tokenizer.
"""

import math

import numpy as np
import pytest

from qlib.models.minilm import MiniLM
from qlib.models.minilm_loader import expected_shapes
from qlib.models.minilm_stats import cosine_similarities, outlier_channels, spearman_correlation, weight_statistics

CONFIG = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
          "vocab_size": 24, "max_position_embeddings": 32, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "hidden_act": "gelu", "max_seq_length": 32}


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    params = {name: (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(np.float32)
              for name, shape in expected_shapes(CONFIG).items()}
    params["encoder.layer.0.output.dense.weight"][:, 5] *= 12  # one outlier input column
    return MiniLM(params, CONFIG, tokenizer=None)


def test_outlier_channels_are_the_large_columns_largest_first():
    x = np.ones((3, 8))
    x[1, 6], x[0, 2] = -20.0, 9.0
    np.testing.assert_array_equal(outlier_channels(x), [6, 2])
    np.testing.assert_array_equal(outlier_channels(x, ratio=10), [6])
    assert outlier_channels(np.ones((4, 4))).size == 0
    assert outlier_channels(x.reshape(3, 1, 8)).tolist() == [6, 2]  # channels are the last axis
    with pytest.raises(ValueError, match="ratio"):
        outlier_channels(x, ratio=1.0)
    with pytest.raises(TypeError, match="ratio"):
        outlier_channels(x, ratio="6")
    with pytest.raises(ValueError, match="x must be at least 1-D"):
        outlier_channels(3.0)


def test_weight_statistics_find_the_planted_outlier_column(tiny):
    stats = weight_statistics(tiny)
    assert list(stats) == tiny.linear_names
    s = stats["encoder.layer.0.output.dense"]
    w = tiny.params["encoder.layer.0.output.dense.weight"].astype(np.float64)
    assert s.shape == (16, 32) and s.min == w.min() and s.max == w.max() and s.absmax == np.abs(w).max()
    assert s.outliers.tolist() == [5]
    assert s.kurtosis > 10  # one column 12 times larger: heavy tails
    np.testing.assert_allclose(s.column_absmax, np.abs(w).max(axis=0))
    normal = stats["encoder.layer.1.intermediate.dense"]
    assert 2 < normal.kurtosis < 4 and normal.outliers.size == 0  # Gaussian weights: kurtosis about 3
    with pytest.raises(TypeError, match="model must be a qlib.MiniLM"):
        weight_statistics({"a": np.zeros((2, 2))})


def test_cosine_similarities():
    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    b = np.array([[6.0, 8.0], [0.0, 5.0], [0.0, -1.0]])
    np.testing.assert_allclose(cosine_similarities(a, b), [1.0, 0.0, -1.0])
    assert cosine_similarities(a.astype(np.float32), b).dtype == np.float64
    with pytest.raises(ValueError, match="same shape"):
        cosine_similarities(a, b[:2])
    with pytest.raises(ValueError, match="zero rows"):
        cosine_similarities(a, np.zeros_like(b))


def test_spearman_correlation_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 6, 25).astype(float)  # many ties
        y = x + rng.normal(0, 2, 25)
        assert spearman_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must not be constant"):
        spearman_correlation([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="same length"):
        spearman_correlation([1, 2, 3], [1, 2])
