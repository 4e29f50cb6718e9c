"""The API page lists every public name of every qlib module (regenerate: python tools/make_api_page.py)."""

import importlib
import pkgutil
from pathlib import Path

import qlib

API = (Path(__file__).resolve().parents[1] / "api.md").read_text(encoding="utf-8")


def test_every_public_name_is_documented():
    missing = []
    for info in pkgutil.iter_modules(qlib.__path__):
        if info.name == "_validation":
            continue
        mod = importlib.import_module(f"qlib.{info.name}")
        for name in getattr(mod, "__all__", []):
            if f":: {name}\n" not in API:
                missing.append(f"qlib.{info.name}.{name}")
    assert not missing, f"api.md misses {missing}; run python tools/make_api_page.py"


def test_every_public_name_is_exported_by_the_package():
    for info in pkgutil.iter_modules(qlib.__path__):
        mod = importlib.import_module(f"qlib.{info.name}")
        for name in getattr(mod, "__all__", []):
            assert getattr(qlib, name) is getattr(mod, name), f"qlib.{name}"
