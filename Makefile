# Two commands matter (see README):  `make book`  builds the book;  `make test`  runs every test.
# Both create .venv and install the pinned, tested versions from constraints.txt first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

# torch/torchvision wheels for CPython 3.11 are what the pins resolve to; prefer that interpreter.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
JOBS ?= 2

export PATH := $(BIN):$(PATH)
export COMPANION_DATA_DIR ?= $(CURDIR)/data
# A second MNIST for the nbmake run of the chapters, so every assertion is checked on two datasets
# (CI: the book on the full MNIST, nbmake on the 8,000/2,000 sample). Default: the book's data.
CHAPTERS_DATA_DIR ?= $(COMPANION_DATA_DIR)
export JUPYTER_PLATFORM_DIRS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export TF_CPP_MIN_LOG_LEVEL := 2

CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.md))
# pip prints one line per local index that lacks a package; they are noise, not problems.
PIP_QUIET := grep -v -e "is ignored: it is neither a file nor a directory" || true

.PHONY: help install data book browser notebooks test lint format unit unit-lowest chapters lock clean
help:
	@echo "make book       build the book (executes every chapter) into _build/html"
	@echo "make test       lint, build the book, execute every chapter under nbmake, run pytest"
	@echo "make notebooks  write the chapters as .ipynb into notebooks/ for running locally"
	@echo "make lock       re-pin constraints.txt from the current .venv (after a tested upgrade)"
	@echo "make format     format the package and the tests (ruff, 88 columns), the chapters' cells (78)"

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> installing the pinned environment into $(VENV) (first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]" 2>&1 | { $(PIP_QUIET); }
	touch $@

# MathJax is served from the book itself, so the built HTML reads offline: fetched once from the
# npm registry (a tarball; nothing else is installed) and unpacked into _assets/ (gitignored;
# not _static/, whose every .js file Jupyter Book would add to every page).
MATHJAX_VERSION := 3.2.2
_assets/mathjax/tex-chtml.js:
	rm -rf _assets/mathjax .cache/mathjax && mkdir -p _assets .cache/mathjax
	cd .cache/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	cp -r .cache/mathjax/package/es5 _assets/mathjax

# MNIST must be there (or downloadable) before anything builds: without it, one line says what is
# missing and where the files go, instead of a chapter's traceback deep in the build log.
data: install
	@$(BIN)/python -m companion.data

book: install _assets/mathjax/tex-chtml.js data
	$(BIN)/jupyter-book build . -n -W --keep-going
	@echo "==> open $(CURDIR)/_build/html/index.html"

# The browser test drives Debian's Chromium (never a downloaded browser): installed here if missing.
browser:
	@command -v chromium >/dev/null || { echo "==> installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

notebooks: install
	$(BIN)/jupytext --sync $(CHAPTERS)
	@echo "==> notebooks written to notebooks/ (paired with book/*.md: jupytext --sync keeps them in step)"

# Notebooks for nbmake live outside book/: an .ipynb beside its .md would break the build.
_nbmake: $(CHAPTERS) | install
	rm -rf $@ && mkdir -p $@
	for md in $(CHAPTERS); do \
	  $(BIN)/jupytext --quiet --to ipynb --update-metadata '{"jupytext": null}' -o $@/$$(basename $${md%.md}).ipynb $$md; \
	done

# The package and the tests at 88 columns; the chapters' cells at 78, what a rendered code cell
# shows without a scroll bar: ruff's linter and formatter, the chapters checked as notebooks.
CHAPTER_COLUMNS := 78
lint: install _nbmake
	$(BIN)/ruff check .
	$(BIN)/ruff check --line-length $(CHAPTER_COLUMNS) _nbmake/*.ipynb
	$(BIN)/ruff format --check --diff companion tests book/_ext
	$(BIN)/ruff format --check --diff --line-length $(CHAPTER_COLUMNS) _nbmake/*.ipynb

# Executed on CHAPTERS_DATA_DIR; its path is left in _nbmake/DATA_DIR for tests/test_chapters.py.
# One chapter at a time, as the book build runs them: chapters 1, 4 and 5 assert which of two
# timings is faster, and two notebooks on two cores time each other's contention (a chapter
# already keeps both cores busy, so running two at once saved nothing: 228 s serial here).
# nbmake's execution fills a persistent JAX compilation cache, emptied first; the second execution
# of the same chapters on the same data (test_chapters' determinism check) reads it: the same
# programs, not compiled again (about half of a chapter's time here is compilation). The book
# build never uses it: its compile timings are what a reader's first run pays.
JAX_CACHE := $(CURDIR)/.cache/jax-chapters
JAX_CACHE_ENV := JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
chapters: install _nbmake
	@COMPANION_DATA_DIR=$(CHAPTERS_DATA_DIR) $(BIN)/python -m companion.data
	rm -rf $(JAX_CACHE)
	COMPANION_DATA_DIR=$(CHAPTERS_DATA_DIR) $(JAX_CACHE_ENV) $(BIN)/pytest -p no:xdist --nbmake --nbmake-timeout=1200 --overwrite _nbmake
	echo "$(abspath $(CHAPTERS_DATA_DIR))" > _nbmake/DATA_DIR

# tests/test_chapters.py may execute chapters again (its determinism check, when the nbmake data
# is not the book's): alone, after the rest, for the same reason as `chapters`.
unit: install browser
	MPLBACKEND=Agg $(BIN)/pytest -n $(JOBS) --ignore=tests/test_chapters.py
	MPLBACKEND=Agg $(JAX_CACHE_ENV) $(BIN)/pytest -p no:xdist tests/test_chapters.py

# The unit tests again at the lowest versions pyproject.toml allows, so its floors are a tested
# fact: uv (installed into that venv from PyPI) resolves every direct dependency to its lowest
# allowed version. No book toolchain and no torch there: the tests of the book are left out, and
# the tests that compare with torch skip, and so do the `imports` checks (what the package loads,
# in fresh interpreters: a property of its own import statements, not of the versions).
LOWEST_VENV := .venv-lowest
BOOK_TESTS := test_chapters test_book_cache test_browser test_prose_numbers test_book_style
unit-lowest: $(LOWEST_VENV)/.installed
	MPLBACKEND=Agg $(LOWEST_VENV)/bin/python -m pytest -n $(JOBS) -m "not imports" $(foreach t,$(BOOK_TESTS),--ignore=tests/$(t).py)
$(LOWEST_VENV)/.installed: pyproject.toml
	@echo "==> installing the lowest allowed versions into $(LOWEST_VENV)"
	rm -rf $(LOWEST_VENV) && $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q uv 2>&1 | { $(PIP_QUIET); }
	$(LOWEST_VENV)/bin/uv pip install -q --python $(LOWEST_VENV)/bin/python --resolution lowest-direct -e ".[unit]"
	$(LOWEST_VENV)/bin/uv pip list --python $(LOWEST_VENV)/bin/python 2>/dev/null \
	  | grep -E "^(jax|jaxlib|flax|optax|numpy|matplotlib|tqdm) " | tr -s ' ' | paste -sd, -
	touch $@

test: lint book chapters unit unit-lowest

format: install
	$(BIN)/ruff format companion tests book/_ext
	$(BIN)/jupytext --quiet --pipe "$(BIN)/ruff format --line-length $(CHAPTER_COLUMNS) -" $(CHAPTERS)

lock: install
	{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v "^-e"; } > constraints.tmp && mv constraints.tmp constraints.txt

clean:
	rm -rf _build _nbmake notebooks _assets/mathjax .cache $(LOWEST_VENV)
