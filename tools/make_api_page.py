"""Regenerate api.md from the modules of qlib and their __all__ (run after adding a public name).

Usage: python tools/make_api_page.py
tests/test_api_page.py fails when api.md misses a public name.
"""

import importlib
import inspect
from pathlib import Path

GROUPS = [
    ("Layer 1, `qlib.core`: primitives that know nothing of models",
     ["core.grid", "core.uniform", "core.fake_quant", "core.calibration", "core.rounding", "core.codebook",
      "core.float_formats", "core.packing",
      "core.intops", "core.fixed_point", "core.metrics", "core.stats", "core.timing", "core.checking",
      "core.samples"]),
    ("Layer 2, `qlib.article`: the article's methods as written",
     ["article.integer", "article.subinteger", "article.mixed"]),
    ("Layer 3, `qlib.methods`: whole-model algorithms on named tensors",
     ["methods.params", "methods.ptq", "methods.gptq", "methods.bias_correction", "methods.storage",
      "methods.pruning", "methods.unit_pruning", "methods.distillation", "methods.bit_allocation",
      "methods.quantized_matmul", "methods.outliers"]),
    ("Layer 4, `qlib.models`: data, the test-bed MLP, its training and quantized simulation",
     ["models.data", "models.mlp", "models.losses", "models.optim", "models.training", "models.simulate",
      "models.qat", "models.integer_mlp", "models.onnx_export", "models.minilm"]),
]

HEADER = """# qlib API reference

The notebooks import `qlib`, the book's numpy library. Every public name is
available as `qlib.<name>`; they are grouped below by the module that defines
them, layer by layer (a lower layer never imports a higher one), one module per
method. Each docstring states the formula, the errors raised on bad input, and
examples that the test suite runs as doctests.
"""


def page() -> str:
    out = [HEADER]
    for title, mods in GROUPS:
        out += [f"## {title}", ""]
        for m in mods:
            mod = importlib.import_module(f"qlib.{m}")
            if not mod.__all__:
                continue
            out += ["```{eval-rst}", f".. automodule:: qlib.{m}", "   :no-members:", "",
                    ".. currentmodule:: qlib", ""]
            for name in mod.__all__:
                obj = getattr(mod, name)
                kind = "autoclass" if inspect.isclass(obj) else "autofunction" if callable(obj) else "autodata"
                options = {"autoclass": ["   :members:"], "autodata": ["   :no-value:"]}.get(kind, [])
                out += [f".. {kind}:: {name}"] + options + [""]
            out += ["```", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    Path(__file__).resolve().parents[1].joinpath("api.md").write_text(page(), encoding="utf-8")
