"""A chapter's prose types no run- or data-dependent number: it is glued from the run.

A number in the prose (outside code, math, roles such as ``{glue:text}`...```, and link
targets) passes only if it is

- a chapter reference ("chapter 4", "chapters 2–5", "the chapter-2 network") or a list
  marker;
- inside a blockquote: a quotation (the original article's numbers, marked as such);
- a literal of the chapter's own code cells: a setting the reader sees in the code
  ("batches of 64" next to ``BATCH = 64``), which the code cannot silently contradict;
- one of the fixed facts below, each with its reason.

Accuracies, timings, ratios, losses and dataset sizes are none of these: they must be
glued.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))

FIXED_FACTS = {
    "0": "the first class label, and zero itself",
    "1": "one, the unit (a factor of about 1, probabilities summing to 1)",
    "2": "two: 2-D arrays, pairs",
    "9": "the last class label of MNIST",
    "10": "MNIST's number of classes",
    "28": "MNIST's images are 28×28 pixels",
    "784": "28 × 28, the length of a flattened MNIST image",
    "8": "bits in bfloat16's mantissa (with the implicit bit)",
    "16": "bits of float16 and bfloat16",
    "24": "bits in float32's mantissa (with the implicit bit)",
    "32": "bits of float32",
    "64": "bits of float64",
    "7": "significant decimal digits of float32",
    "3": "significant decimal digits of bfloat16",
    "65504": "the largest finite float16",
}

NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])")


def prose(text: str) -> str:
    """Strip code, math, roles, inline code, link targets and directives: the prose."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # jupytext front matter
    # cells, fences
    text = re.sub(r"^(```+|~~~+)[^\n]*\n.*?^\1\s*$", "", text, flags=re.S | re.M)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)  # display math
    text = re.sub(r"\$[^$\n]+\$", "", text)  # inline math
    # roles: {glue:text}`x`, {doc}`x`, {cite}`x`
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", "", text)
    text = re.sub(r"`[^`]*`", "", text)  # inline code
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    # directives, options
    text = re.sub(r"^:::?\{[^}]*\}.*$|^:[\w-]+:.*$", "", text, flags=re.M)
    text = re.sub(r"^\s*>.*$", "", text, flags=re.M)  # blockquotes: quotations
    # chapter references
    text = re.sub(r"[Cc]hapters? \d+(?:\s*[–-]\s*\d+)?|chapter-\d+", "", text)
    return re.sub(r"^\s*(?:\*\*)?\d+\.\s", "", text, flags=re.M)  # list markers


def code_literals(md: Path) -> set[str]:
    """The numeric literals of the code cells, normalised (1_024 and 1,024 → 1024)."""
    source = "\n".join(
        c.source for c in jupytext.read(md).cells if c.cell_type == "code"
    )
    return {
        _normal(n)
        for n in re.findall(r"(?<![\w.])\d[\d_]*(?:\.\d+)?(?:e-?\d+)?", source)
    }


def _normal(number: str) -> str:
    number = number.replace(",", "").replace("_", "")
    return str(float(number)) if "." in number or "e" in number else str(int(number))


def typed_numbers(md: Path) -> list[tuple[str, str]]:
    """(number, line) of each prose number neither glued, nor a setting, nor a fact."""
    allowed = code_literals(md) | {_normal(k) for k in FIXED_FACTS}
    found = []
    for line in prose(md.read_text()).splitlines():
        for match in NUMBER.finditer(line):
            number = match.group().rstrip(",")
            if _normal(number) not in allowed:
                found.append((number, line.strip()))
    return found


@pytest.mark.parametrize("md", CHAPTERS, ids=[md.stem for md in CHAPTERS])
def test_no_typed_numbers_in_the_prose(md):
    typed = typed_numbers(md)
    assert not typed, (
        "numbers typed into the prose "
        "(glue them from the run, or make them settings):\n"
        + "\n".join(f"  {n!r} in: {line}" for n, line in typed)
    )


def test_the_check_finds_a_typed_number(tmp_path):
    md = tmp_path / "99_probe.md"
    md.write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n"
        "```{code-cell} ipython3\nBATCH = 64\nacc = train(BATCH)\n```\n\n"
        "Batches of 64 (a setting), as chapter 5 showed, reach 97.3% here; a glued "
        "{glue:text}`acc:.1f`% and `0.123` in code are fine, and so is a quote:\n\n"
        "> the original reached 98.1%\n"
    )
    assert [n for n, _ in typed_numbers(md)] == ["97.3"]


def unshown_glue(md: Path) -> set[str]:
    """Names glued under a literal name in the code that no ``{glue:text}`` shows: a
    number computed for the prose and never read (names built in a loop, f-strings,
    are not checked)."""
    text = md.read_text()
    glued = set(re.findall(r"\bglue\(\s*\"(\w+)\"", text))
    shown = set(re.findall(r"\{glue(?::\w+)?\}`(\w+)", text))
    return glued - shown


@pytest.mark.parametrize("md", CHAPTERS, ids=[md.stem for md in CHAPTERS])
def test_every_glued_name_is_shown(md):
    assert not unshown_glue(md), f"glued but never shown: {sorted(unshown_glue(md))}"


def test_the_check_finds_an_unshown_glue(tmp_path):
    md = tmp_path / "99_probe.md"
    md.write_text(
        '```{code-cell} ipython3\nglue("acc", 0.9, display=False)\n'
        'glue(\n    "loss", 0.1, display=False\n)\nglue(f"t_{v}", 1.0)\n```\n\n'
        "Accuracy {glue:text}`acc:.1f`.\n"
    )
    assert unshown_glue(md) == {"loss"}
