"""Write the student edition of the chapters: every worked solution removed, every exercise kept.

Usage: python tools/make_student_edition.py [OUT]      (make student; OUT defaults to _build/student)

An exercise is written with sphinx-exercise's gated directives, each alone in a markdown cell
(CONTRIBUTING.md): ``exercise-start`` ... ``exercise-end`` hold the exercise's text and its code
cells (starter code and the check cells that test a reader's answer), ``solution-start`` ...
``solution-end`` hold the worked solution. The student edition drops the solution cells, the two
directive cells around them included, and keeps everything else with its stored outputs: a
check cell shows what it prints before the exercise is done. A note under the title says so.
The notebooks are written to OUT/chapters with chapters/matplotlibrc (the book's plotting style).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
DEFAULT_OUT = ROOT / "_build" / "student"

DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{(exercise|solution)-(start|end)\}", re.M)
NOTE = (
    "```{note}\n"
    "**Student edition.** The worked solutions of this chapter's exercises are removed; the exercises, "
    "their starter code and their check cells are kept. The full book, with solutions, is on the site.\n"
    "```"
)


def directive(cell) -> tuple[str, str] | None:
    """("solution", "start") for a markdown cell that opens a solution, and so on; None otherwise."""
    if cell.cell_type != "markdown":
        return None
    m = DIRECTIVE.search(cell.source)           # "## Exercises" may stand above an exercise-start
    return (m.group(1), m.group(2)) if m else None


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of ``nb`` without its solutions (raises ValueError on unbalanced directives)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    kept, in_solution = [], False
    for i, cell in enumerate(nb.cells):
        d = directive(cell)
        if d and d[0] == "solution" and DIRECTIVE.match(cell.source) is None:
            raise ValueError(f"{name}: cell {i}: a solution directive must be alone in its cell (CONTRIBUTING.md)")
        if d == ("solution", "start"):
            if in_solution:
                raise ValueError(f"{name}: cell {i} opens a solution inside a solution")
            in_solution = True
            continue
        if d == ("solution", "end"):
            if not in_solution:
                raise ValueError(f"{name}: cell {i} closes a solution that was not opened")
            in_solution = False
            continue
        if not in_solution:
            kept.append(cell)
    if in_solution:
        raise ValueError(f"{name}: a solution is not closed")
    title = next((i for i, c in enumerate(kept) if c.cell_type == "markdown"), -1)
    note = nbformat.v4.new_markdown_cell(NOTE)
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        note.id = "student-edition-note"  # fixed, so that the edition's bytes change only with the book
    else:
        del note["id"]
    kept.insert(title + 1, note)
    nb.cells = kept
    nbformat.validate(nb)
    return nb


def chapter_notebooks() -> list[Path]:
    return sorted(p for p in CHAPTERS.glob("*.ipynb"))


def write_student_edition(out: Path = DEFAULT_OUT) -> list[Path]:
    """Write OUT/chapters/*.ipynb (and matplotlibrc); return the notebooks written."""
    dest = Path(out) / "chapters"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(CHAPTERS / "matplotlibrc", dest / "matplotlibrc")
    written = []
    for path in chapter_notebooks():
        nb = student_notebook(nbformat.read(path, as_version=4), path.name)
        nbformat.write(nb, dest / path.name)
        written.append(dest / path.name)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    paths = write_student_edition(out)
    print(f"student edition: {len(paths)} notebooks in {out / 'chapters'}")
