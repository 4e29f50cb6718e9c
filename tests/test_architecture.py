"""qlib's layers: a lower layer never imports a higher one, and no module reaches
into another module's private names.

The layers, lowest first: ``qlib.core`` (primitives), ``qlib.article`` (the
article's methods), ``qlib.methods`` (whole-model algorithms on named tensors),
``qlib.models`` (data, models, training, simulation). The checks parse the
source, so they see every import, including ones inside functions.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "qlib"
LAYERS = ["core", "article", "methods", "models"]
MODULES = sorted(p for p in ROOT.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def imports(path: Path):
    """Yield ``(module imported, names imported from it, line)`` of every import in ``path``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, [a.name for a in node.names], node.lineno


def test_every_module_sits_in_a_layer():
    loose = [module_name(p) for p in MODULES if p.parent == ROOT and p.name != "__init__.py"]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_lower_layers_never_import_higher_ones(path):
    own = layer(module_name(path))
    if own is None:  # qlib/__init__.py re-exports every layer
        return
    for target, _, line in imports(path):
        other = layer(target)
        assert other is None or other <= own, (
            f"{module_name(path)} (layer {LAYERS[own]}) imports {target} "
            f"(layer {LAYERS[other]}) on line {line}"
        )


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_imports_private_names_of_another(path):
    for target, names, line in imports(path):
        if not target.startswith("qlib"):
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        hidden = [part for part in target.split(".") if part.startswith("_")]
        assert not private and not hidden, (
            f"{module_name(path)} imports private {private or target} from {target} on line {line}"
        )


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_reads_private_attributes_of_other_objects(path):
    """``obj._x`` is allowed only on ``self`` and ``cls``: no ``model._input`` across modules."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                bad.append(f"{ast.unparse(node)} (line {node.lineno})")
    assert not bad, f"{module_name(path)} reads private attributes: {bad}"
