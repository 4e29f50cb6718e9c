"""pytest configuration shared by qlib's doctests and the tests/ suite."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_numpy(doctest_namespace):
    """Doctests in qlib may use ``np`` without importing it, like numpy's own."""
    doctest_namespace["np"] = np
