"""Layer 1, primitives that know nothing of models: integer grids and the
:class:`~qlib.Quantizer`, the uniform quantizer, its kernels and backward
pass, its calibration, rounding modes, bit packing, exact integer
arithmetic, error and size measures."""

from qlib.core.calibration import *  # noqa: F401,F403
from qlib.core.checking import *  # noqa: F401,F403
from qlib.core.codebook import *  # noqa: F401,F403
from qlib.core.fake_quant import *  # noqa: F401,F403
from qlib.core.fixed_point import *  # noqa: F401,F403
from qlib.core.float_formats import *  # noqa: F401,F403
from qlib.core.grid import *  # noqa: F401,F403
from qlib.core.intops import *  # noqa: F401,F403
from qlib.core.metrics import *  # noqa: F401,F403
from qlib.core.packing import *  # noqa: F401,F403
from qlib.core.rounding import *  # noqa: F401,F403
from qlib.core.samples import *  # noqa: F401,F403
from qlib.core.stats import *  # noqa: F401,F403
from qlib.core.timing import *  # noqa: F401,F403
from qlib.core.uniform import *  # noqa: F401,F403
