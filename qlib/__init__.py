"""qlib: the numpy library of the executable textbook on model compression and quantization.

One module per method:

- :mod:`qlib.integer`, :mod:`qlib.subinteger`, :mod:`qlib.mixed`: the three
  methods of the article the book is built on (standardize, round, map back);
- :mod:`qlib.uniform`, :mod:`qlib.calibration`: the uniform affine quantizer
  that practitioners deploy (ONNX ``QuantizeLinear`` semantics) and the choice
  of its scale and zero point;
- :mod:`qlib.intops`: integer-only arithmetic (exact int8 matmul, fixed-point
  requantization as in TensorFlow Lite's reference kernels);
- :mod:`qlib.packing`: sub-byte bit packing;
- :mod:`qlib.metrics`: error and size measures;
- :mod:`qlib.rounding`: rounding modes (stochastic rounding);
- :mod:`qlib.pruning`, :mod:`qlib.distillation`: the article's other compression methods;
- :mod:`qlib.models`: a small numpy MLP and its training, the book's test bed;
- :mod:`qlib.intinfer`: integer-only inference of that MLP;
- :mod:`qlib.ptq`: post-training quantization of a whole model, every method of the book.

The import name is ``qlib``; the distribution is ``quantbook-qlib`` (PyPI's
``qlib`` and ``pyqlib`` are unrelated projects that also import as ``qlib``).
Notebooks check :data:`BOOK_ID` to be sure they imported this package.
"""

from qlib.core import *  # noqa: F401,F403
from qlib.article import *  # noqa: F401,F403
from qlib.methods import *  # noqa: F401,F403
from qlib.models import *  # noqa: F401,F403

__version__ = "0.1.0"

#: Identifies this package among the several on PyPI that import as ``qlib``.
BOOK_ID = "quantbook"
