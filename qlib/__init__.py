"""qlib: the numpy library of the executable textbook on model compression and quantization.

Four layers, one module per method; a lower layer never imports a higher one
(``tests/test_architecture.py`` checks it):

``qlib.core``, primitives that know nothing of models
    :mod:`~qlib.core.grid` (integer grids and the :class:`~qlib.Quantizer` that
    carries a grid with its scale), :mod:`~qlib.core.uniform` (the uniform
    affine quantizer, ONNX ``QuantizeLinear`` semantics),
    :mod:`~qlib.core.fake_quant` (its straight-through and scale gradients),
    :mod:`~qlib.core.calibration`, :mod:`~qlib.core.rounding` (stochastic),
    :mod:`~qlib.core.packing` (bitstreams of any width),
    :mod:`~qlib.core.intops` (exact integer matrix product),
    :mod:`~qlib.core.fixed_point` (TensorFlow Lite's requantization),
    :mod:`~qlib.core.metrics`, :mod:`~qlib.core.timing`;
``qlib.article``, the article's methods as it writes them
    :mod:`~qlib.article.integer`, :mod:`~qlib.article.subinteger`,
    :mod:`~qlib.article.mixed`;
``qlib.methods``, whole-model algorithms on a mapping of named tensors
    :mod:`~qlib.methods.params` (which tensors are weights),
    :mod:`~qlib.methods.ptq`, :mod:`~qlib.methods.storage`,
    :mod:`~qlib.methods.pruning`, :mod:`~qlib.methods.unit_pruning`,
    :mod:`~qlib.methods.distillation`;
``qlib.models``, the book's test bed
    :mod:`~qlib.models.data` (the digits split), :mod:`~qlib.models.mlp`,
    :mod:`~qlib.models.losses`, :mod:`~qlib.models.optim`,
    :mod:`~qlib.models.training`, :mod:`~qlib.models.simulate` (a quantized
    model simulated in floating point), :mod:`~qlib.models.integer_mlp`
    (integer-only inference).

Every public name is also available flat, as ``qlib.<name>``.

The import name is ``qlib``; the distribution is ``quantbook-qlib`` (PyPI's
``qlib`` and ``pyqlib`` are unrelated projects that also import as ``qlib``).
Notebooks check :data:`BOOK_ID` to be sure they imported this package.
"""

from qlib.article import *  # noqa: F401,F403
from qlib.core import *  # noqa: F401,F403
from qlib.methods import *  # noqa: F401,F403
from qlib.models import *  # noqa: F401,F403

__version__ = "0.1.0"

#: Identifies this package among the several on PyPI that import as ``qlib``.
BOOK_ID = "quantbook"
