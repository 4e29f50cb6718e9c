# The book's two commands (see README.md):
#   make html   build the website into _build/html
#   make test   run every test: the book build with warnings as errors, every page of
#               it in headless Chromium (make browser-test), ruff,
#               strict nbval on every chapter with one BLAS thread, then qlib's
#               unit tests and doctests with strict nbval on every chapter again
#               (default threads): stored outputs must not depend on how a BLAS
#               orders its sums
# Both create .venv with the pinned environment on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JB     := $(BIN)/jupyter-book
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: html test lint notebooks-one-thread unit unit-and-notebooks notebooks book-check browser-test bench execute lab student lock clean

$(STAMP): requirements/lock.txt requirements/nodeps.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the book is pinned for Python 3.11; run make PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# The build also zips the notebooks with qlib, and their student edition, for the site's
# download links (tools/make_downloads.py, called by _ext/quantbook_site.py).
html: $(STAMP)
	$(JB) build . --builder html
	@echo "Open _build/html/index.html"

# The book build runs first so that pytest's summary is the last line printed.
test: book-check browser-test lint notebooks-one-thread unit-and-notebooks

lint: $(STAMP)
	$(BIN)/ruff check qlib tests tools benchmarks chapters conftest.py _ext

# A reader's laptop splits BLAS sums differently: one thread is the other extreme.
notebooks-one-thread: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q \
	    --nbval --nbval-current-env --nbval-cell-timeout=600 chapters

book-check: $(STAMP)
	$(JB) build . --builder html --all -W -n --keep-going

# Every page of that build in headless Chromium (tools/browser_check.py): console errors, outside requests,
# images, math, solution toggles, links and anchors, phone and tablet menus, search; screenshots in
# _build/screenshots. Installs Debian's chromium when root (CI); without it, a loud SKIPPED.
browser-test: book-check
	bash tools/browser_test.sh $(BIN)/python _build/html

unit-and-notebooks: $(STAMP)
	$(BIN)/python -m pytest --doctest-modules qlib tests \
	    --nbval --nbval-current-env --nbval-cell-timeout=600 chapters

unit: $(STAMP)
	$(BIN)/python -m pytest --doctest-modules qlib tests

notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env chapters

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_methods.py
	$(BIN)/python benchmarks/bench_minilm.py

# Re-run every chapter top to bottom in a fresh kernel and store the outputs
# (do this before committing a notebook; nbval then proves the outputs current).
execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py chapters/*.ipynb

# JupyterLab on chapters/; its kernel is the default python3 kernel of .venv (ipykernel, pinned),
# i.e. the book's environment. Root (a container) needs --allow-root; without a browser
# (a server) JupyterLab prints the URL to open.
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lab.txt -c requirements/lock.txt
	$(BIN)/jupyter lab --notebook-dir=chapters $$(test "$$(id -u)" = 0 && echo --allow-root)

# The notebooks without their worked solutions (exercises and check cells kept), in _build/student.
student: $(STAMP)
	$(BIN)/python tools/make_student_edition.py _build/student

lock:
	rm -rf /tmp/qbook-lock && $(PYTHON) -m venv /tmp/qbook-lock
	/tmp/qbook-lock/bin/pip install --quiet -r requirements/book.in -r requirements/test.in
	{ echo "# Pinned environment for the book and its tests (Python 3.11)."; \
	  echo "# Regenerate with: make lock   (from requirements/book.in and requirements/test.in)"; \
	  /tmp/qbook-lock/bin/pip freeze --exclude-editable; } > requirements/lock.txt

clean:
	rm -rf _build .pytest_cache .hypothesis
