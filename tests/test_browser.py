"""The built book as a reader sees it: every page in headless Chromium, with no network.

Needs ``make book`` first (the HTML) and Debian's ``chromium`` (``make browser``
installs it; no browser is ever downloaded). Pages are served from ``_build/html`` on a
loopback port; every request to any other address is blocked *and recorded*, so a page
that needs the network (a CDN script, a web font) fails the test. Screenshots go to
``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
DOCS = [TOC["root"]] + [c["file"] for part in TOC["parts"] for c in part["chapters"]]
CHAPTERS = [d for d in DOCS if re.match(r"book/\d\d_", d)]
# the chapters that draw figures (a `figure:` in a cell's mystnb options): their images
# must be on the page (the appendix draws none)
WITH_FIGURES = [
    d
    for d in CHAPTERS
    if re.search(r"^\s+figure:", (ROOT / f"{d}.md").read_text(), re.M)
]

pytestmark = pytest.mark.browser


def title_of(doc: str) -> str:
    """The page's title as a reader sees it: inline code shows without backticks."""
    text = (ROOT / f"{doc}.md").read_text()
    title = re.search(r"^# (.+)$", text, re.MULTILINE).group(1).strip()
    return title.replace("`", "")


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.fail(
            "no built book in _build/html: run `make book` (or `make test`) first"
        )
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "Debian's chromium is not installed: run `make browser` "
            "(apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        browser.close()


@pytest.mark.parametrize("doc", DOCS)
def test_page_renders_offline(doc, site, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, blocked = [], []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )

    def only_loopback(route):
        if route.request.url.startswith(site):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    response = page.goto(f"{site}/{doc}.html", wait_until="load")
    assert response is not None and response.ok, (
        f"{doc}.html: HTTP {response.status if response else '—'}"
    )
    # wait until MathJax (served from the book's own _static/) has typeset the page
    page.evaluate(
        "() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null"
    )

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{doc.replace('/', '_')}.png"), full_page=True)

    assert not blocked, f"{doc}: the page tried to reach the network: {blocked}"
    assert not errors, f"{doc}: JavaScript errors: {errors}"
    broken = page.evaluate(
        "() => Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert not broken, f"{doc}: images that did not load: {broken}"

    math = page.evaluate("() => document.querySelectorAll('.math').length")
    untypeset = page.evaluate(
        "() => Array.from(document.querySelectorAll('.math'))"
        ".filter(e => !e.querySelector('mjx-container')).length"
    )
    assert untypeset == 0, (
        f"{doc}: {untypeset} of {math} math elements were not typeset"
    )
    text = page.inner_text("article")
    assert "$$" not in text, f"{doc}: raw $$ left in the text"
    if doc in WITH_FIGURES:
        assert (
            page.evaluate("() => document.querySelectorAll('.cell_output img').length")
            > 0
        ), f"{doc}: a chapter with figures shows none"

    sidebar = page.inner_text("nav.bd-docs-nav")
    missing = [title_of(c) for c in CHAPTERS if title_of(c) not in sidebar]
    assert not missing, f"{doc}: the sidebar does not list {missing}"
    page.close()


def test_chapters_typeset_equations(site, browser):
    page = browser.new_page()
    page.goto(f"{site}/book/04_backprop_math.html", wait_until="load")
    page.evaluate("() => MathJax.startup.promise")
    assert page.evaluate("() => document.querySelectorAll('mjx-container').length") > 20
    page.close()


# --- links: a crawl of the built HTML, no browser needed ------------------------------


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) and not (
                tag == "link" and attrs.get("rel") in ("canonical",)
            ):
                self.links.append(attrs[key])


@functools.cache
def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(errors="replace"))
    return parser


def test_no_broken_local_links_or_anchors():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first")
    pages = [p for p in HTML.rglob("*.html") if "_static" not in p.parts]
    problems = []
    for page in pages:
        base = "file://" + str(page)
        for link in parse(page).links:
            if urlparse(link).scheme in (
                "http",
                "https",
                "mailto",
                "javascript",
                "data",
            ):
                continue
            url, fragment = urldefrag(urljoin(base, link))
            target = Path(unquote(urlparse(url).path))
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(HTML)}: {link} (no such file)")
            elif (
                fragment
                and target.suffix == ".html"
                and unquote(fragment) not in parse(target).ids
            ):
                problems.append(f"{page.relative_to(HTML)}: {link} (no such anchor)")
    assert len(pages) >= len(DOCS)
    assert not problems, "\n".join(problems[:30])


def test_buttons_follow_the_repository_setting():
    """Unset repository.url: no repository, issue or launch buttons.

    The download buttons stay.
    """
    if not (HTML / "index.html").exists():
        pytest.fail(
            "no built book in _build/html: run `make book` (or `make test`) first"
        )
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    page = (HTML / f"{CHAPTERS[0]}.html").read_text()
    assert "btn-download-source-button" in page and "btn-download-pdf-button" in page
    for marker in (
        "colab.research.google.com",
        "mybinder.org",
        "executablebooks/jupyter-book",
    ):
        assert (marker in page) == (
            bool(url) and marker != "executablebooks/jupyter-book"
        ), marker
