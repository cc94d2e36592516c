"""The book speaks to its reader and its code fits the page.

- No sentence of a chapter talks about the book's making: its aims or targets, CI, the
  machine it was written on, what was tried while writing, what held "so far". A
  chapter says what this run measured and what it means for the reader.
- Every line of a code cell fits the rendered column (78 characters at a 1280-pixel
  window) without a scroll bar, and no cell a reader sees is over 40 lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
from test_prose_numbers import prose

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "book").glob("[0-9][0-9]_*.md")), ROOT / "book" / "intro.md"]
COLUMN = 78  # characters of code a rendered cell shows without scrolling
MAX_SHOWN_LINES = 40

# Phrases about the book's making, not about the reader's training.
BACKSTAGE = [
    r"\bthe book'?s (?:own )?(?:aims?|targets?|goals?)\b",
    r"\bmet the book'?s\b",
    r"\bour (?:aims?|targets?|goals?)\b",
    r"\bCI\b",
    r"\bcontinuous integration\b",
    r"\bso far\b",
    r"\bwritten on\b",
    r"\bwhile writing\b",
    r"\bwhen writing\b",
    r"\bthis chapter was written\b",
    r"\bin every run\b",
    r"\bin one (?:CI )?run\b",
]


def backstage(text: str) -> list[str]:
    """The lines of ``text``'s prose with a phrase about the book's making."""
    found = []
    for line in prose(text).splitlines():
        if any(re.search(p, line, re.IGNORECASE) for p in BACKSTAGE):
            found.append(line.strip())
    return found


@pytest.mark.parametrize("md", PAGES, ids=[md.stem for md in PAGES])
def test_the_prose_speaks_to_the_reader(md):
    lines = backstage(md.read_text())
    assert not lines, "prose about the book's making:\n" + "\n".join(lines)


def test_the_check_finds_a_phrase_about_the_making(tmp_path):
    text = (
        "The book's aim is a 1.5× floor. In every run so far it held.\n"
        "On the 2-core machine this chapter was written on, CI took longer.\n"
        "Your epoch took 0.3 s in this run.\n"
    )
    assert len(backstage(text)) == 2


def _shown(cell) -> bool:
    tags = cell.metadata.get("tags", [])
    return not {"remove-cell", "remove-input"} & set(tags)


CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))


@pytest.mark.parametrize("md", CHAPTERS, ids=[md.stem for md in CHAPTERS])
def test_code_fits_the_rendered_column(md):
    cells = [c for c in jupytext.read(md).cells if c.cell_type == "code"]
    wide = [
        (i, line)
        for i, cell in enumerate(cells)
        for line in cell.source.splitlines()
        if len(line) > COLUMN
    ]
    assert not wide, f"code lines over {COLUMN} characters:\n" + "\n".join(
        f"  cell {i}: {line}" for i, line in wide
    )


@pytest.mark.parametrize("md", CHAPTERS, ids=[md.stem for md in CHAPTERS])
def test_no_shown_code_cell_is_over_40_lines(md):
    cells = [c for c in jupytext.read(md).cells if c.cell_type == "code"]
    long = [
        (len(c.source.splitlines()), c.source.splitlines()[0])
        for c in cells
        if _shown(c) and len(c.source.splitlines()) > MAX_SHOWN_LINES
    ]
    assert not long, "cells over 40 lines: " + "; ".join(
        f"{n} lines, starting {first!r}" for n, first in long
    )
