"""Execute notebooks top to bottom in a fresh kernel and store their outputs.

Usage: python tools/execute_notebooks.py chapters/*.ipynb   (or: make execute)

The kernel is this interpreter's own Python (the book's .venv), the working
directory is the notebook's folder (as for nbval), and no timing metadata is
written, so that re-executing an unchanged notebook changes nothing but what
its code prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    for p in paths:
        print(f"executing {p}", flush=True)
        execute(Path(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
