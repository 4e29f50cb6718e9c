"""Layer 4, models: the digits data, the numpy MLP and its training, the
simulation of a quantized model, and the integer-only MLP."""

from qlib.models.mlp import *  # noqa: F401,F403
from qlib.models.integer_mlp import *  # noqa: F401,F403
