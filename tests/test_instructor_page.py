"""instructors.md is current (regenerate: python tools/make_instructor_page.py) and complete."""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_instructor_page", ROOT / "tools" / "make_instructor_page.py")
gen = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gen  # its dataclasses look their module up
spec.loader.exec_module(gen)

CHAPTERS = gen.chapters()


def test_the_page_is_current():
    page = (ROOT / "instructors.md").read_text(encoding="utf-8")
    assert page == gen.page(), "instructors.md is out of date; run python tools/make_instructor_page.py"


def test_every_notebook_of_the_toc_is_on_the_page_in_order():
    page = gen.page()
    docs = [doc for doc, _ in gen.toc_notebooks()]
    assert docs and [ch.doc for ch in CHAPTERS] == docs
    positions = [page.index(f"<{doc}>`") for doc in docs]
    assert positions == sorted(positions)
    assert [ch.number for ch in CHAPTERS][:2] == ["1", "2"] and "3.1" in [ch.number for ch in CHAPTERS]


@pytest.mark.parametrize("ch", CHAPTERS, ids=lambda c: c.doc)
def test_every_chapter_has_objectives_and_every_exercise_a_difficulty(ch):
    assert ch.objectives.count("\n- ") >= 2, f"{ch.doc}: learning objectives not found"
    nb = nbformat.read(ROOT / f"{ch.doc}.ipynb", as_version=4)
    labels = [c.source.split(":label:")[1].split()[0] for c in nb.cells
              if c.cell_type == "markdown" and "{exercise-start}" in c.source]
    assert [e.label for e in ch.exercises] == labels
    for e in ch.exercises:
        assert e.difficulty in ("easy", "medium", "hard"), f"{e.label}: no (easy), (medium) or (hard) in its text"
        assert e.title and f"{{ref}}`{e.label}`" in gen.page()
    assert 5 <= ch.minutes <= 240


def test_exercise_titles_and_difficulties_are_parsed():
    cases = {
        "**Which format fits? (easy)** Using the measured": ("Which format fits?", "easy", ""),
        "**Power of weight traffic (easy).** A network": ("Power of weight traffic", "easy", ""),
        "**Accumulators for 4-bit codes** (easy). Symmetric": ("Accumulators for 4-bit codes", "easy", ""),
        "**How large?** (medium, open-ended). Per-group": ("How large?", "medium", "open-ended"),
        "**(medium) Activations too.** Deployed": ("Activations too", "medium", ""),
        "**(hard)** Write `f` in numpy. Then": ("Write `f` in numpy", "hard", ""),
        "(easy) The threshold of LLM.int8(). On the test": ("The threshold of LLM.int8()", "easy", ""),
        "**(medium)** *Does it lower accuracy?* Take": ("Does it lower accuracy?", "medium", ""),
    }
    for text, expected in cases.items():
        e = gen.exercise_of("ex", text)
        assert (e.title, e.difficulty, e.note) == expected, text


def test_prerequisites_are_earlier_chapters_it_refers_to():
    by_doc = {ch.doc: ch for ch in CHAPTERS}
    for i, ch in enumerate(CHAPTERS):
        for pre in gen.prerequisites(ch, CHAPTERS[:i]):
            assert ch.uses & by_doc[pre.doc].labels
