"""Structural checks of the book: every chapter notebook is fully executed, error-free,
imports the book's qlib first, and is listed in _toc.yml in the article's order.

nbval compares nothing for a code cell that was never executed, so these checks are
what make `pytest --nbval` a real test of every cell.
"""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
ARTICLE_PARTS = ["background", "core concepts", "algorithms and formulas", "code examples", "future trends", "faq"]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_there_is_one_notebook_per_article_section_at_least():
    assert len(NOTEBOOKS) >= len(ARTICLE_PARTS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_is_executed_in_order(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in code_cells(nb)]
    assert None not in counts, f"{path.name}: {counts.count(None)} code cell(s) never executed"
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..N; re-run top to bottom (make execute)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_error_outputs_except_where_tagged(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(code_cells(nb)):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        tagged = "raises-exception" in cell.metadata.get("tags", [])
        assert tagged == bool(errors), (
            f"{path.name}, code cell {i + 1}: "
            + ("error output in an untagged cell" if errors else "tagged raises-exception but raised nothing")
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_checks_it_imported_the_books_qlib(path):
    first = code_cells(nbformat.read(path, as_version=4))[0].source
    assert "import qlib" in first and "BOOK_ID" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_memory_addresses_in_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in code_cells(nb):
        for out in cell.outputs:
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert " at 0x" not in text, f"{path.name}: an output prints a memory address"


def test_toc_lists_the_six_parts_in_the_articles_order():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8").lower()
    positions = [toc.find(f"{i}. {name}") for i, name in enumerate(ARTICLE_PARTS, start=1)]
    assert -1 not in positions, positions
    assert positions == sorted(positions)
    for nb in NOTEBOOKS:
        assert nb.relative_to(ROOT).with_suffix("").as_posix() in toc, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_refuses_another_package_named_qlib(path, monkeypatch):
    """PyPI's qlib / pyqlib also import as `qlib`: the preamble must stop with a clear message."""
    import sys
    import types

    impostor = types.ModuleType("qlib")
    impostor.__file__ = "/site-packages/qlib/__init__.py"
    monkeypatch.setitem(sys.modules, "qlib", impostor)
    first = code_cells(nbformat.read(path, as_version=4))[0].source
    with pytest.raises(ImportError, match="another 'qlib'"):
        exec(compile(first, str(path), "exec"), {})
