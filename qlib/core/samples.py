"""The reference samples of part 3: four distributions with the tails weights and activations have.

Uniform, Gaussian, Laplace and Student-t (3 degrees of freedom) samples, drawn
in that order from one seeded generator, so that every section of the book's
part 3 measures its quantizers on the same numbers.
"""

from __future__ import annotations

import numpy as np

from qlib.core.validation import check_int

__all__ = ["reference_samples"]


def reference_samples(n=100_000, seed=1) -> dict[str, np.ndarray]:
    """Four float64 samples of ``n`` values, light to heavy tails, from ``np.random.default_rng(seed)``.

    ``"uniform"`` on [-1, 1), ``"Gaussian"`` N(0, 1), ``"Laplace"`` with
    scale 1, ``"Student-t (3 d.o.f.)"``; drawn in this order from one
    generator (so each is reproducible from ``seed`` alone).

    Parameters
    ----------
    n : int, default 100000
        Values per sample, at least 1.
    seed : int, default 1
        Seed of the generator, at least 0.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    TypeError, ValueError
        If ``n`` or ``seed`` is not an integer in range.

    Examples
    --------
    >>> s = reference_samples(1000)
    >>> list(s), s["Gaussian"].shape
    (['uniform', 'Gaussian', 'Laplace', 'Student-t (3 d.o.f.)'], (1000,))
    """
    n = check_int(n, "n", 1)
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    return {
        "uniform": rng.uniform(-1.0, 1.0, n),
        "Gaussian": rng.normal(0.0, 1.0, n),
        "Laplace": rng.laplace(0.0, 1.0, n),
        "Student-t (3 d.o.f.)": rng.standard_t(3, n),
    }
