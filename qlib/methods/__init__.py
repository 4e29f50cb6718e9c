"""Layer 3, whole-model algorithms on a mapping of named tensors: post-training
quantization, pruning, knowledge distillation."""

from qlib.methods.ptq import *  # noqa: F401,F403
from qlib.methods.pruning import *  # noqa: F401,F403
from qlib.methods.distillation import *  # noqa: F401,F403
