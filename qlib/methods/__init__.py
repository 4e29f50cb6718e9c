"""Layer 3, whole-model algorithms on a mapping of named tensors: which tensors are
weights, post-training quantization and its storage, pruning, knowledge
distillation."""

from qlib.methods.bias_correction import *  # noqa: F401,F403
from qlib.methods.bit_allocation import *  # noqa: F401,F403
from qlib.methods.distillation import *  # noqa: F401,F403
from qlib.methods.gptq import *  # noqa: F401,F403
from qlib.methods.layerwise import *  # noqa: F401,F403
from qlib.methods.outliers import *  # noqa: F401,F403
from qlib.methods.params import *  # noqa: F401,F403
from qlib.methods.pruning import *  # noqa: F401,F403
from qlib.methods.ptq import *  # noqa: F401,F403
from qlib.methods.quantized_matmul import *  # noqa: F401,F403
from qlib.methods.storage import *  # noqa: F401,F403
from qlib.methods.unit_pruning import *  # noqa: F401,F403
