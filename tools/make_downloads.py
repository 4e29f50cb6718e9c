"""Zip the book's notebooks with qlib, for the site's download links (index.md, instructors.md).

Usage: python tools/make_downloads.py [OUT]      (OUT defaults to _build/downloads)

Writes two archives, each one folder that runs on its own (README_RUN.txt says how):

- quantbook-notebooks.zip: chapters/*.ipynb as the site shows them (executed, with solutions);
- quantbook-student.zip: the student edition (tools/make_student_edition.py: solutions removed);

each with chapters/matplotlibrc, qlib's source, pyproject.toml, README.md, LICENSE and
requirements/. The book's local extension (_ext/quantbook_site.py) calls make_all() before every
site build, so ``make html`` and ``make test`` always offer current archives. The archives are
reproducible (sorted entries, fixed dates) and rewritten only when their bytes change.
"""

from __future__ import annotations

import io
import runpy
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "_build" / "downloads"
DATE = (2026, 1, 1, 0, 0, 0)

INSTALL = ("python3.11 -m venv .venv && . .venv/bin/activate"
           " && pip install -r requirements/lock.txt -r requirements/lab.txt"
           " && pip install --no-deps -r requirements/nodeps.txt && pip install -e .")
README_RUN = (
    "Model Compression and Quantization, Executed: the notebooks{edition} and qlib. To run them (Python 3.11):\n"
    f"  {INSTALL}\n"
    "  jupyter lab chapters\n"
)


def library_files() -> list[Path]:
    """qlib's source and what installs it: pyproject.toml, README.md, LICENSE, requirements/."""
    files = [p for p in (ROOT / "qlib").rglob("*.py") if "__pycache__" not in p.parts]
    files += [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "LICENSE"]
    files += [p for p in (ROOT / "requirements").iterdir() if p.is_file()]
    return sorted(files)


def zip_bytes(folder: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def members(chapters: Path, edition: str) -> dict[str, bytes]:
    out = {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in library_files()}
    for nb in sorted(chapters.glob("*.ipynb")):
        out[f"chapters/{nb.name}"] = nb.read_bytes()
    out["chapters/matplotlibrc"] = (ROOT / "chapters" / "matplotlibrc").read_bytes()
    out["README_RUN.txt"] = README_RUN.format(edition=edition).encode()
    return out


def make_all(out: Path = DEFAULT_OUT) -> list[Path]:
    """Write OUT/quantbook-notebooks.zip and OUT/quantbook-student.zip; return their paths."""
    out = Path(out)
    student = runpy.run_path(str(ROOT / "tools" / "make_student_edition.py"))
    student_dir = out / "student"
    student["write_student_edition"](student_dir)
    return [
        write_if_changed(out / "quantbook-notebooks.zip",
                         zip_bytes("quantbook-notebooks", members(ROOT / "chapters", ""))),
        write_if_changed(out / "quantbook-student.zip",
                         zip_bytes("quantbook-student", members(student_dir / "chapters", " (student edition)"))),
    ]


if __name__ == "__main__":
    for path in make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
