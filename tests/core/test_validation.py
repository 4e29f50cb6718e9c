"""Tests of the checks added to qlib.core.validation for the quantizer."""

import numpy as np
import pytest

from qlib.core.validation import check_bits


@pytest.mark.parametrize("bits", [2, 8, 16, np.int64(4)])
def test_check_bits_accepts_two_to_sixteen(bits):
    assert check_bits(bits) == int(bits) and type(check_bits(bits)) is int


@pytest.mark.parametrize("bits, exc", [(1, ValueError), (17, ValueError), (0, ValueError), (4.0, TypeError),
                                       (True, TypeError), ("8", TypeError), (None, TypeError)])
def test_check_bits_refuses(bits, exc):
    with pytest.raises(exc, match="w must be an integer"):
        check_bits(bits, "w")
