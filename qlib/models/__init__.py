"""Layer 4, models: the digits data, the numpy MLP, its losses, optimizer and
training, the simulation of a quantized model, and the integer-only MLP."""

from qlib.models.data import *  # noqa: F401,F403
from qlib.models.integer_mlp import *  # noqa: F401,F403
from qlib.models.losses import *  # noqa: F401,F403
from qlib.models.minilm import *  # noqa: F401,F403
from qlib.models.minilm_quant import *  # noqa: F401,F403
from qlib.models.minilm_stats import *  # noqa: F401,F403
from qlib.models.mlp import *  # noqa: F401,F403
from qlib.models.onnx_export import *  # noqa: F401,F403
from qlib.models.optim import *  # noqa: F401,F403
from qlib.models.per_layer import *  # noqa: F401,F403
from qlib.models.qat import *  # noqa: F401,F403
from qlib.models.runs import *  # noqa: F401,F403
from qlib.models.simulate import *  # noqa: F401,F403
from qlib.models.training import *  # noqa: F401,F403
