r"""The book's repeated experiment: chapter 4's network trained on several data splits.

One trained model is one draw of a random process (which images the split puts
in each set, the initial weights, the order of the minibatches), and two draws
differ by about a point of test accuracy, as much as many quantization effects.
The chapters therefore compare methods *run by run*: run :math:`k` uses data
split :math:`k` of :func:`~qlib.load_digits_split` and one generator seeded
with :math:`100 + k` for its initial weights (:meth:`qlib.MLP.init`) and then
its minibatch order (:func:`~qlib.train`), the recipe of chapter 4.
:class:`~qlib.DigitsRuns` trains the runs and evaluates any method on all of
them at once, giving one number per run for :func:`~qlib.paired_difference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qlib.core.validation import check_choice, check_int
from qlib.models.data import SPLIT_PARTS, load_digits_split
from qlib.models.mlp import MLP
from qlib.models.training import train

__all__ = ["DigitsRuns"]

def _per_run(value, n: int, name: str) -> list:
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)) and len(value) == n:
        return list(value)
    raise TypeError(f"{name} must be None or a list with one entry per run ({n}), got "
                    f"{type(value).__name__}{f' of length {len(value)}' if isinstance(value, (list, tuple)) else ''}")


class DigitsRuns(Sequence):
    """Chapter 4's network trained once per seed: run ``k`` on data split ``k``, generator ``100 + k``.

    Parameters
    ----------
    seeds : sequence of int, default (0, 1, 2, 3, 4)
        One run per seed (non-negative integers, distinct).
    sizes : sequence of int, default (64, 64, 10)
        The layer sizes of :meth:`qlib.MLP.init` (64 pixels in, 10 classes out).
    epochs, lr, batch_size
        The recipe of :func:`~qlib.train` (chapter 4: 20 epochs of Adam at
        0.01, minibatches of 32).

    Attributes
    ----------
    seeds : tuple of int
    models : list of MLP
        The trained float32 models, one per run.
    splits : list of dict
        Each run's :func:`~qlib.load_digits_split` (``"x_train"``, ``"y_val"``, ...).

    A run is the pair ``(model, split)``: ``runs[k]``, ``for model, split in runs``.

    Raises
    ------
    TypeError, ValueError
        If ``seeds`` is not a non-empty sequence of distinct non-negative
        integers, or as :meth:`qlib.MLP.init` and :func:`~qlib.train`.

    Examples
    --------
    >>> runs = DigitsRuns(seeds=(0, 1), epochs=2)
    >>> len(runs), runs.models[0].sizes
    (2, (64, 64, 10))
    >>> acc = runs.accuracy("val")
    >>> acc.shape, bool(np.all((acc > 0.5) & (acc <= 1)))
    ((2,), True)
    """

    def __init__(self, seeds=(0, 1, 2, 3, 4), *, sizes=(64, 64, 10), epochs=20, lr=0.01, batch_size=32):
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
            raise TypeError(f"seeds must be a non-empty sequence of integers, got {seeds!r}")
        self.seeds = tuple(check_int(s, "seeds", 0) for s in seeds)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        self.splits = [load_digits_split(seed=s) for s in self.seeds]
        self.models = []
        for s, split in zip(self.seeds, self.splits):
            gen = np.random.default_rng(100 + s)         # the initial weights, then the batch order
            model = MLP.init(sizes, gen)
            train(model, split["x_train"], split["y_train"], rng=gen, epochs=epochs, lr=lr, batch_size=batch_size)
            self.models.append(model)

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return list(zip(self.models, self.splits))[k]
        return self.models[k], self.splits[k]

    def __repr__(self) -> str:
        return f"DigitsRuns(seeds={self.seeds}, sizes={self.models[0].sizes})"

    def accuracy(self, part="test", *, params=None, act_quant=None, models=None) -> np.ndarray:
        """Each run's accuracy on its own split ``part``, one entry per run.

        Parameters
        ----------
        part : {"train", "val", "test"}, default "test"
        params, act_quant : list, optional
            One entry per run (``None`` entries allowed): the parameters and
            activation quantizers of :meth:`qlib.MLP.forward`.
        models : list of MLP, optional
            Other models, one per run (e.g. fine-tuned copies), instead of the runs' own.

        Returns
        -------
        numpy.ndarray of float64, shape (runs,)
        """
        part = check_choice(part, "part", SPLIT_PARTS)
        n = len(self)
        nets = self.models if models is None else _per_run(models, n, "models")
        params, act_quant = _per_run(params, n, "params"), _per_run(act_quant, n, "act_quant")
        return np.array([m.accuracy(s[f"x_{part}"], s[f"y_{part}"], params=p, act_quant=a)
                         for m, s, p, a in zip(nets, self.splits, params, act_quant)])

    def layer_inputs(self, part="val") -> list[dict[str, np.ndarray]]:
        """Each run's float model's dense-layer inputs on its split ``part`` (:meth:`qlib.MLP.layer_inputs`)."""
        part = check_choice(part, "part", SPLIT_PARTS)
        return [m.layer_inputs(s[f"x_{part}"]) for m, s in zip(self.models, self.splits)]
