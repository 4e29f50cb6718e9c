"""The API reference documents every public name of every qlib module, one page per layer
(regenerate: python tools/make_api_page.py)."""

import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import qlib

ROOT = Path(__file__).resolve().parents[1]


def generator():
    spec = importlib.util.spec_from_file_location("make_api_page", ROOT / "tools" / "make_api_page.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def public_modules():
    """Every module of qlib's layers (qlib.core.uniform, ...), excluding packages."""
    for info in pkgutil.walk_packages(qlib.__path__, "qlib."):
        if not info.ispkg:
            yield importlib.import_module(info.name)


def layer_page(mod) -> str:
    """The text of the page of the layer of ``mod`` (qlib.core.grid -> api/core.md)."""
    return (ROOT / "api" / f"{mod.__name__.split('.')[1]}.md").read_text(encoding="utf-8")


def test_every_public_name_is_documented_on_its_layers_page():
    missing = []
    for mod in public_modules():
        page = layer_page(mod) if getattr(mod, "__all__", []) else ""
        for name in getattr(mod, "__all__", []):
            if not re.search(rf"^\.\. auto(function|class|data):: {re.escape(name)}$", page, re.M):
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"the API pages miss {missing}; run python tools/make_api_page.py"


def test_every_public_name_is_in_the_contents_at_the_top_of_its_page():
    for mod in public_modules():
        names = getattr(mod, "__all__", [])
        if not names:
            continue
        page = layer_page(mod)
        contents = page[page.index("## Contents"):page.index(f"## `qlib.{mod.__name__.split('.', 1)[1]}`")]
        listed = set(re.findall(r"^   (\w+)$", contents, re.M))
        assert set(names) <= listed, f"{mod.__name__}: {sorted(set(names) - listed)} not in the page's contents"


def test_every_public_name_is_exported_by_the_package():
    for mod in public_modules():
        for name in getattr(mod, "__all__", []):
            assert getattr(qlib, name) is getattr(mod, name), f"qlib.{name}"


def test_every_module_is_in_a_group_of_the_generator():
    grouped = {f"qlib.{m}" for _, mods in generator().GROUPS for m in mods}
    public = {mod.__name__ for mod in public_modules() if getattr(mod, "__all__", [])}
    assert public <= grouped, f"add {sorted(public - grouped)} to GROUPS in tools/make_api_page.py"


def test_the_pages_are_current_and_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    for rel, text in generator().pages().items():
        path = ROOT / rel
        assert path.exists() and path.read_text(encoding="utf-8") == text, (
            f"{rel} is not what tools/make_api_page.py writes; run it")
        assert f"file: {rel.removesuffix('.md')}\n" in toc or f"file: {rel.removesuffix('.md')} " in toc, (
            f"{rel} is not in _toc.yml")


def test_each_layer_has_one_page():
    gen = generator()
    layers = [gen.layer(mods) for _, mods in gen.GROUPS]
    assert layers == ["core", "article", "methods", "models"]
    assert sorted(gen.pages()) == ["api.md"] + sorted(f"api/{name}.md" for name in layers)
