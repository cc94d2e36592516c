"""The execution cache follows the data: build, change MNIST, build again, new numbers.

A one-page book with the real configuration's extensions (book/_ext/data_fingerprint.py,
exec_total.py) and execution mode ("cache"), built with `jupyter-book build` as
`make book` does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_mnist

ROOT = Path(__file__).resolve().parents[1]
PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Probe

```{code-cell} ipython3
from companion.data import load_mnist

print(f"TRAIN={len(load_mnist().train.y)}")
```

```{exec-total}
```
"""


def build(book: Path, data: Path) -> str:
    env = {**os.environ, "COMPANION_DATA_DIR": str(data)}
    jb = Path(sys.executable).with_name("jupyter-book")
    out = subprocess.run(
        [str(jb), "build", str(book), "-W"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    html = (book / "_build" / "html" / "page.html").read_text()
    # book/_ext/exec_total.py: the page's own execution, the only one
    assert re.search(r"All 1 executed pages together: \d+ s", html), html[-2000:]
    return re.search(r"TRAIN=(\d+)", html).group(1)


@pytest.fixture
def book(tmp_path: Path) -> Path:
    (tmp_path / "page.md").write_text(PAGE)
    (tmp_path / "_toc.yml").write_text("format: jb-article\nroot: page\n")
    (tmp_path / "_config.yml").write_text(
        "title: probe\nexecute:\n  execute_notebooks: cache\n"
        "sphinx:\n  local_extensions:\n"
        f"    data_fingerprint: {ROOT / 'book' / '_ext'}\n"
        f"    exec_total: {ROOT / 'book' / '_ext'}\n"
    )
    return tmp_path


def test_changing_the_data_re_executes_the_page(book, tmp_path):
    data = tmp_path / "mnist"
    make_mnist(data, n_train=12)
    assert build(book, data) == "12"
    stamp = book / "_build" / ".jupyter_cache" / "data-fingerprint"
    first_stamp = stamp.read_text()

    make_mnist(data, n_train=13)  # same folder, new content: the code did not change
    assert build(book, data) == "13"
    assert stamp.read_text() != first_stamp

    # Unchanged data: the cached execution is used, and the page keeps its numbers.
    cache = book / "_build" / ".jupyter_cache"
    cached = sorted(p.stat().st_mtime_ns for p in cache.rglob("*.ipynb"))
    assert build(book, data) == "13"
    assert sorted(p.stat().st_mtime_ns for p in cache.rglob("*.ipynb")) == cached
