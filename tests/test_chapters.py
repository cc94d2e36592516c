"""Checks of the executed chapters beyond what nbmake and the book build check.

Each chapter is executed twice before these tests run (`make test`): once by the book
build (`_build/jupyter_execute/`, on `$COMPANION_DATA_DIR`) and once by nbmake
(`_nbmake/`, written back with `--overwrite`, on `$CHAPTERS_DATA_DIR`, whose path it
leaves in `_nbmake/DATA_DIR`). CI gives the two different MNISTs (the full set and a
sample), so every assertion runs on both. The determinism check needs two executions on
the *same* data: when the nbmake data differs from the book's, the chapter is executed
once more here, on the nbmake data (`make unit` hands it the persistent JAX compilation
cache that nbmake's execution filled: the same programs, not compiled again). Where an
executed copy is missing or stale, the chapter is executed here too.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))
EXECUTED = {
    "book": ROOT / "_build" / "jupyter_execute" / "book",
    "nbmake": ROOT / "_nbmake",
}


def data_dir(which: str) -> str | None:
    """The MNIST folder an execution read (``None``: the environment's default)."""
    if which == "nbmake" and (ROOT / "_nbmake" / "DATA_DIR").is_file():
        return (ROOT / "_nbmake" / "DATA_DIR").read_text().strip()
    return os.environ.get("COMPANION_DATA_DIR")


def same_data(a: str | None, b: str | None) -> bool:
    from companion.data import fingerprint

    return a == b or fingerprint(a) == fingerprint(b)


ids = [md.stem for md in CHAPTERS]


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


@functools.cache
def executed(md: Path, which: str) -> nbformat.NotebookNode:
    """The chapter as executed by `which` ("book", "nbmake", or "again": once more,
    here, on the nbmake data), executed now if that copy is missing or stale."""
    source = jupytext.read(md)
    path = EXECUTED.get(which, Path("/nonexistent")) / f"{md.stem}.ipynb"
    if path.exists():
        nb = nbformat.read(path, as_version=4)
        if _code(nb) == _code(source):
            return nb
    from myst_nb.core.utils import coalesce_streams
    from nbclient import NotebookClient

    # the kernel's inline backend draws
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    folder = data_dir("nbmake" if which == "again" else which)
    if folder:
        env["COMPANION_DATA_DIR"] = folder
    client = NotebookClient(
        source,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(md.parent)}},
    )
    # passed on to the kernel manager: the kernel reads this MNIST
    client.execute(env=env)
    # as myst-nb leaves its copy: streams merged in place (see _normalise)
    if which == "book":
        for cell in source.cells:
            if cell.cell_type == "code":
                coalesce_streams(cell.outputs)
    return source


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_chapters_exist_and_are_in_the_toc():
    assert CHAPTERS, "no chapters found"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert {f"book/{md.stem}" for md in CHAPTERS} <= listed


@pytest.mark.parametrize("md", CHAPTERS, ids=ids)
@pytest.mark.parametrize("which", ["book", "nbmake"])
def test_raises_exception_cells_raise_what_they_declare(md, which):
    """nbclient *permits* an error in a raises-exception cell; here it must happen."""
    nb = executed(md, which)
    for i, cell in enumerate(nb.cells):
        if "raises-exception" not in _tags(cell):
            continue
        expected = cell.metadata.get("raises")
        assert expected, (
            f"cell {i} is tagged raises-exception but declares no `raises: ErrorName`"
        )
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, (
            f"cell {i} should raise {expected} but raised nothing:\n{cell.source}"
        )
        assert errors[-1].ename == expected, (
            f"cell {i} should raise {expected}, raised {errors[-1].ename}: "
            f"{errors[-1].evalue}"
        )


@pytest.mark.parametrize("md", CHAPTERS, ids=ids)
@pytest.mark.parametrize("which", ["book", "nbmake"])
def test_chapter_prints_no_warnings(md, which):
    for i, cell in enumerate(executed(md, which).cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                assert not re.search(r"warn", out.text, re.IGNORECASE), (
                    f"cell {i} printed a warning:\n{out.text}"
                )


def _normalise(outputs, which: str) -> tuple[dict, list]:
    """What a reader sees of a cell's outputs: the stdout text, and the other outputs.

    How the kernel chunks a stream varies from run to run, so chunks are joined the way
    myst-nb joins them (``nb_merge_streams``). myst-nb merges in place when it renders:
    in its executed copy the first chunk of each stream already holds the whole text,
    and later chunks repeat it. Memory addresses and kernel file names are masked; glued
    values (papermill records) myst-nb keeps out of its copy.
    """
    streams: dict[str, str] = {}
    others = []
    for out in outputs:
        if out.output_type == "stream" and out.name == "stderr":
            # progress bars (warnings there fail test_chapter_prints_no_warnings)
            continue
        if out.output_type == "stream":
            if which == "book":
                streams.setdefault(out.name, out.text)
            else:
                # a print may arrive in several chunks: join them as a terminal would
                streams[out.name] = streams.get(out.name, "") + out.text
        elif out.output_type == "error":
            others.append(("error", out.ename, out.evalue))
        else:
            data = {
                k: v
                for k, v in out.get("data", {}).items()
                if "papermill.record" not in k
            }
            if data:
                others.append(tuple(sorted((k, str(v)) for k, v in data.items())))
    streams = {k: v.rstrip() + "\n" for k, v in streams.items() if v.rstrip()}

    # memory addresses and the kernel's temporary file names vary
    def mask(text: str) -> str:
        return re.sub(
            r"ipykernel_\d+/\d+", "ipykernel_…", re.sub(r"0x[0-9a-f]{6,}", "0x…", text)
        )

    return {k: mask(v) for k, v in streams.items()}, [mask(repr(o)) for o in others]


@pytest.mark.parametrize("md", CHAPTERS, ids=ids)
def test_chapter_is_deterministic(md):
    """Two executions on the same data print the same outputs (bar `timing` cells)."""
    second = executed(md, "nbmake")
    if same_data(data_dir("book"), data_dir("nbmake")):
        first, which = executed(md, "book"), "book"
    else:
        first, which = executed(md, "again"), "nbmake"
    compared = 0
    for i, (a, b) in enumerate(zip(first.cells, second.cells, strict=True)):
        if a.cell_type != "code" or "timing" in _tags(a):
            continue
        assert _normalise(a.outputs, which) == _normalise(b.outputs, "nbmake"), (
            f"cell {i} differs:\n{a.source}"
        )
        compared += len(a.outputs)
    assert compared > 0


@pytest.mark.parametrize("md", CHAPTERS, ids=ids)
def test_chapter_has_an_exercise_with_an_executed_hidden_solution(md):
    text = md.read_text()
    assert (
        ":::{exercise}" in text
        and ":::{solution-start}" in text
        and ":::{solution-end}" in text
    )
    nb = executed(md, "book")
    solutions = [
        c for c in nb.cells if c.cell_type == "code" and "solution" in _tags(c)
    ]
    assert solutions, (
        "the solution is a code cell tagged `solution`, inside solution-start/-end"
    )
    assert all(c.get("execution_count") for c in solutions)
    start, end = text.index(":::{solution-start}"), text.index(":::{solution-end}")
    assert all(c.source.strip() in text[start:end] for c in solutions)


def test_every_chapter_starts_with_the_repository_setting_of_the_book():
    """A downloaded notebook's first cell says how to get `companion`.

    It installs it from the book's repository once there is one: its URL is
    _config.yml's, the one setting.
    """
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for md in CHAPTERS:
        first = next(c for c in jupytext.read(md).cells if c.cell_type == "code")
        assert "remove-cell" in _tags(first), md.stem
        assert f"REPOSITORY = {url!r}" in first.source.replace('"', "'"), md.stem
        assert 'find_spec("companion")' in first.source, md.stem


@pytest.mark.parametrize("md", CHAPTERS, ids=ids)
def test_every_figure_has_a_caption_an_alt_text_and_a_reference(md):
    text = md.read_text()
    for i, cell in enumerate(executed(md, "book").cells):
        if not any(
            "image/png" in out.get("data", {}) for out in cell.get("outputs", [])
        ):
            continue
        meta = cell.metadata.get("mystnb", {})
        name = meta.get("figure", {}).get("name")
        assert meta.get("figure", {}).get("caption") and name, (
            f"cell {i} draws a figure without a caption"
        )
        alt = meta.get("image", {}).get("alt", "")
        assert len(alt.split()) >= 5, (
            f"cell {i}: the alt text must describe the figure; got {alt!r}"
        )
        assert f"{{numref}}`{name}`" in text, f"the prose never refers to {name}"
