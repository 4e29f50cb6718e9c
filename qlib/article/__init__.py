"""Layer 2, the article's methods as it writes them: integer, sub-integer and
mixed quantization (standardize, round, map back)."""

from qlib.article.integer import *  # noqa: F401,F403
from qlib.article.mixed import *  # noqa: F401,F403
from qlib.article.subinteger import *  # noqa: F401,F403
