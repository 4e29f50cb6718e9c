"""The API page lists every public name of every qlib module (regenerate: python tools/make_api_page.py)."""

import importlib
import importlib.util
import pkgutil
from pathlib import Path

import qlib

ROOT = Path(__file__).resolve().parents[1]
API = (ROOT / "api.md").read_text(encoding="utf-8")


def public_modules():
    """Every module of qlib's layers (qlib.core.uniform, ...), excluding packages."""
    for info in pkgutil.walk_packages(qlib.__path__, "qlib."):
        if not info.ispkg:
            yield importlib.import_module(info.name)


def test_every_public_name_is_documented():
    missing = []
    for mod in public_modules():
        for name in getattr(mod, "__all__", []):
            if f":: {name}\n" not in API:
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"api.md misses {missing}; run python tools/make_api_page.py"


def test_every_public_name_is_exported_by_the_package():
    for mod in public_modules():
        for name in getattr(mod, "__all__", []):
            assert getattr(qlib, name) is getattr(mod, name), f"qlib.{name}"


def test_every_module_is_in_a_group_of_the_generator():
    spec = importlib.util.spec_from_file_location("make_api_page", ROOT / "tools" / "make_api_page.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    grouped = {f"qlib.{m}" for _, mods in gen.GROUPS for m in mods}
    public = {mod.__name__ for mod in public_modules() if getattr(mod, "__all__", [])}
    assert public <= grouped, f"add {sorted(public - grouped)} to GROUPS in tools/make_api_page.py"
