"""Regenerate the qlib API reference from the modules of qlib and their __all__ (run after adding a public name).

Usage: python tools/make_api_page.py

Writes api.md (the overview: one line per layer and module) and one page per layer, api/core.md,
api/article.md, api/methods.md and api/models.md (listed under api in _toc.yml). A layer page
opens with its contents, every public function, class and constant of the layer in a table
(sphinx.ext.autosummary) linking to its entry below, then documents each module in turn
(sphinx.ext.autodoc with napoleon for the numpy-style docstrings).

To add a module: give it an __all__ and add it to its layer's list in GROUPS, in reading order.
tests/test_api_page.py fails when a public module is missing from GROUPS, when a page misses a
public name, or when the pages on disk are not what this script writes.
"""

import functools
import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (title of the layer's page, its modules in reading order); a layer is the package of its modules.
GROUPS = [
    ("Layer 1: `qlib.core`",
     ["core.grid", "core.uniform", "core.fake_quant", "core.calibration", "core.rounding", "core.codebook",
      "core.float_formats", "core.packing",
      "core.intops", "core.fixed_point", "core.metrics", "core.stats", "core.timing", "core.checking",
      "core.samples"]),
    ("Layer 2: `qlib.article`",
     ["article.integer", "article.subinteger", "article.mixed"]),
    ("Layer 3: `qlib.methods`",
     ["methods.params", "methods.ptq", "methods.gptq", "methods.layerwise", "methods.bias_correction",
      "methods.storage", "methods.pruning", "methods.unit_pruning", "methods.distillation",
      "methods.bit_allocation", "methods.quantized_matmul", "methods.outliers"]),
    ("Layer 4: `qlib.models`",
     ["models.data", "models.mlp", "models.losses", "models.optim", "models.training", "models.runs",
      "models.simulate", "models.per_layer", "models.qat", "models.integer_mlp", "models.onnx_export",
      "models.minilm", "models.minilm_quant", "models.minilm_stats"]),
]

INDEX_HEADER = """# qlib API reference

The notebooks import `qlib`, the book's numpy library. Every public name is
available as `qlib.<name>`. The reference has one page per layer (a lower layer
never imports a higher one), each opening with the list of everything it
defines, then one section per module, one module per method. Each docstring
states the formula, the errors raised on bad input, and examples that the test
suite runs as doctests.
"""


def layer(mods: list[str]) -> str:
    """The layer (package under qlib) of a group of modules: "core" for ["core.grid", ...]."""
    (name,) = {m.split(".")[0] for m in mods}
    return name


def first_line(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def public(m: str) -> list[tuple[str, object]]:
    mod = importlib.import_module(f"qlib.{m}")
    return [(name, getattr(mod, name)) for name in mod.__all__]


def attributes_section(cls) -> set[str]:
    """Names listed in the Attributes section of a numpy-style class docstring."""
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes\n-+\n(.*?)(?=^\w[\w ]*\n-+\n|\Z)", doc, re.S | re.M)
    return set(re.findall(r"^(\w+)\s*:", m.group(1), re.M)) if m else set()


def directive(name: str, obj) -> list[str]:
    kind = "autoclass" if inspect.isclass(obj) else "autofunction" if callable(obj) else "autodata"
    options = {"autoclass": ["   :members:"], "autodata": ["   :no-value:"]}.get(kind, [])
    if kind == "autoclass":
        # a cached property that the Attributes section already documents: Sphinx would report the
        # two descriptions as duplicates (a plain property is not reported)
        twice = sorted(a for a in attributes_section(obj)
                       if isinstance(obj.__dict__.get(a), functools.cached_property))
        if twice:
            options.append(f"   :exclude-members: {', '.join(twice)}")
    return [f".. {kind}:: {name}"] + options + [""]


def layer_page(title: str, mods: list[str]) -> str:
    mods = [m for m in mods if public(m)]
    out = [f"# {title}", "", "```{eval-rst}", first_line(importlib.import_module(f"qlib.{layer(mods)}")), "```", "",
           "## Contents", "", "```{eval-rst}", ".. currentmodule:: qlib", ""]
    for m in mods:
        out += [f":mod:`qlib.{m}`", "", ".. autosummary::", "   :nosignatures:", ""]
        out += [f"   {name}" for name, _ in public(m)] + [""]
    out += ["```", ""]
    for m in mods:
        out += [f"## `qlib.{m}`", "", "```{eval-rst}", f".. automodule:: qlib.{m}", "   :no-members:", "",
                ".. currentmodule:: qlib", ""]
        for name, obj in public(m):
            out += directive(name, obj)
        out += ["```", ""]
    return "\n".join(out).rstrip() + "\n"


def index_page() -> str:
    out = [INDEX_HEADER]
    for title, mods in GROUPS:
        out += [f"## [{title}](api/{layer(mods)}.md)", "", "```{eval-rst}",
                first_line(importlib.import_module(f"qlib.{layer(mods)}")), ""]
        for m in mods:
            names = public(m)
            if names:
                doc = first_line(importlib.import_module(f"qlib.{m}"))
                out += [f"- :mod:`qlib.{m}` ({len(names)} {'name' if len(names) == 1 else 'names'}): {doc}"]
        out += ["```", ""]
    return "\n".join(out).rstrip() + "\n"


def pages() -> dict[str, str]:
    """{path relative to the repository: text} of every page of the reference."""
    out = {"api.md": index_page()}
    for title, mods in GROUPS:
        out[f"api/{layer(mods)}.md"] = layer_page(title, mods)
    return out


if __name__ == "__main__":
    for rel, text in pages().items():
        path = ROOT / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {rel}")
