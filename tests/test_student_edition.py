"""The student edition (tools/make_student_edition.py): solutions removed, exercises kept, valid notebooks."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_student_edition", ROOT / "tools" / "make_student_edition.py")
student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student)

NOTEBOOKS = student.chapter_notebooks()


def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text):
    return nbformat.v4.new_code_cell(text)


def toy():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        md("# Title\n\nintro"), code("x = 1"),
        md("## Exercises\n\n```{exercise-start}\n:label: ex-a\n```"), md("**First** (easy). Do it."),
        code("def f():\n    raise NotImplementedError"), code("print(check(f))"), md("```{exercise-end}\n```"),
        md("```{solution-start} ex-a\n:class: dropdown\n```"), md("The answer."), code("def f():\n    return 1"),
        md("```{solution-end}\n```"),
        md(":::{exercise-start}\n:label: ex-b\n:::"), md("**Second** (hard)."), md(":::{exercise-end}\n:::"),
        md(":::{solution-start} ex-b\n:::"), code("secret = 42"), md(":::{solution-end}\n:::"),
        md("## After"),
    ]
    return nb


def kinds(nb):
    return [student.directive(c) for c in nb.cells if student.directive(c)]


def test_toy_notebook_keeps_exercises_and_check_cells_and_drops_solutions():
    out = student.student_notebook(toy())
    sources = [c.source for c in out.cells]
    assert not any(k[0] == "solution" for k in kinds(out))
    assert kinds(out) == [("exercise", "start"), ("exercise", "end")] * 2
    assert "print(check(f))" in sources and "def f():\n    raise NotImplementedError" in sources
    assert "The answer." not in sources and "def f():\n    return 1" not in sources and "secret = 42" not in sources
    assert sources[0].startswith("# Title") and "Student edition" in sources[1] and sources[-1] == "## After"
    nbformat.validate(out)


def test_the_original_notebook_is_not_changed():
    nb = toy()
    before = nbformat.writes(nb)
    student.student_notebook(nb)
    assert nbformat.writes(nb) == before


@pytest.mark.parametrize("cells", [
    ["```{solution-start} ex-a\n```", "x"],                                   # never closed
    ["```{solution-end}\n```"],                                               # never opened
    ["```{solution-start} a\n```", "```{solution-start} b\n```"],             # nested
    ["Text\n\n```{solution-start} a\n```", "```{solution-end}\n```"],       # not alone in its cell
])
def test_unbalanced_solutions_are_refused(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [md(c) for c in cells]
    with pytest.raises(ValueError):
        student.student_notebook(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_loses_its_solutions_and_keeps_its_exercises(path):
    nb = nbformat.read(path, as_version=4)
    out = student.student_notebook(nb, path.name)
    nbformat.validate(out)
    exercises = [k for k in kinds(nb) if k == ("exercise", "start")]
    assert exercises, f"{path.name} has no exercise"
    assert [k for k in kinds(out)] == [k for k in kinds(nb) if k[0] == "exercise"]
    kept = {c.source for c in out.cells}
    in_solution = False
    for cell in nb.cells:                      # every cell outside a solution is kept, every other dropped
        k = student.directive(cell)
        if k and k[0] == "solution":
            in_solution = k[1] == "start"
            assert cell.source not in kept
            continue
        assert (cell.source in kept) != in_solution or not cell.source.strip(), cell.source[:80]
    assert len({c.id for c in out.cells}) == len(out.cells)


def test_write_student_edition(tmp_path):
    written = student.write_student_edition(tmp_path)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    assert (tmp_path / "chapters" / "matplotlibrc").exists()
    for path in written:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert not any(student.directive(c) and student.directive(c)[0] == "solution" for c in nb.cells)
