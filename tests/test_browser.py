"""Headless Chromium opens every page of the built (small) book and checks what a reader would see.

Theme loaded, math typeset (no raw TeX left), every figure loaded with a non-zero size, internal links resolve, the
claims ledger lists every chapter. A screenshot of each page goes to ``_build/screenshots/``.
"""

import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from mcreg_lib.book import run as chapters

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None and not __import__("os").environ.get("CI"),
                                 reason="no chromium (make test installs Debian's chromium)")]


def _pages(html: Path) -> list[Path]:
    toc = (["book/intro"] + [f"notebooks/{n}" for n in chapters.chapter_names(ROOT)]
           + ["book/claims_ledger", "book/figure_map", "book/provenance"])
    return [html / "index.html"] + [html / f"{p}.html" for p in toc]


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "chromium is not installed: run `make test`, which installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_every_page_renders(built_book, browser):
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failures = []
    for path in _pages(built_book):
        assert path.exists(), f"missing page {path}"
        # "load": the document and every image and script; the book is local files, and "networkidle" (no request
        # for 500 ms) once timed out on a loaded machine while nothing was left to load
        page.goto(path.as_uri(), wait_until="load", timeout=60000)
        page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=10000)
        page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
        rel = path.relative_to(built_book).as_posix()
        found = page.evaluate("""() => ({
            theme: !!document.querySelector('.bd-sidebar-primary') &&
                   [...document.styleSheets].some(s => (s.href || '').includes('sphinx-book-theme')),
            mathNodes: document.querySelectorAll('.math').length,
            typeset: document.querySelectorAll('mjx-container').length,
            text: document.querySelector('main') ? document.querySelector('main').innerText : '',
            images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete,
                                                    w: i.naturalWidth, h: i.naturalHeight})),
            links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
        })""")
        if rel == "index.html":  # a redirect to the first page
            continue
        page.screenshot(path=str(shots / (rel.replace("/", "_").removesuffix(".html") + ".png")), full_page=True)
        if not found["theme"]:
            failures.append(f"{rel}: theme not loaded")
        if found["mathNodes"] and found["typeset"] < found["mathNodes"]:
            failures.append(f"{rel}: {found['mathNodes']} math nodes but {found['typeset']} typeset")
        raw = re.findall(r"\\\(|\\\[|\$\$", found["text"])
        if raw:
            failures.append(f"{rel}: raw TeX left in the page text ({raw[:3]})")
        for img in found["images"]:
            if not (img["ok"] and img["w"] > 0 and img["h"] > 0):
                failures.append(f"{rel}: image {img['src']} did not load")
        for href in found["links"]:
            url = urlparse(href)
            if url.scheme or not url.path:
                continue
            target = (path.parent / unquote(url.path)).resolve()
            if not target.exists():
                failures.append(f"{rel}: broken link {href}")
    assert not failures, "\n".join(failures)


def test_chapter_pages_have_figures(built_book, browser):
    page = browser.new_page()
    for name in chapters.chapter_names(ROOT):
        page.goto((built_book / "notebooks" / f"{name}.html").as_uri(), wait_until="load", timeout=60000)
        widths = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
        assert widths and min(widths) > 0, f"{name}: no loaded figure"


def test_ledger_lists_every_chapter(built_book, browser):
    page = browser.new_page()
    page.goto((built_book / "book" / "claims_ledger.html").as_uri())
    text = page.evaluate("() => document.querySelector('main').innerText")
    hrefs = page.evaluate("() => [...document.querySelectorAll('main a[href]')].map(a => a.getAttribute('href'))")
    for name in chapters.chapter_names(ROOT):
        assert any(f"notebooks/{name}.html" in h for h in hrefs), f"the ledger does not link {name}"
    assert "Paper claims holding:" in text and "Implementation checks" in text
    intro = (built_book / "book" / "intro.html").read_text()
    assert "Paper claims holding:" in intro
    preview = os.environ.get("MCREG_BOOK_HTML") is None  # the tests build a preview; make check-book any build
    if preview:
        assert "Preview build" in intro, "a preview build says so on its first page"


def test_provenance_and_figure_map(built_book, browser):
    page = browser.new_page()
    page.goto((built_book / "book" / "provenance.html").as_uri(), wait_until="load")
    text = page.evaluate("() => document.querySelector('main').innerText")
    hrefs = page.evaluate("() => [...document.querySelectorAll('main a[href]')].map(a => a.getAttribute('href'))")
    for name in chapters.chapter_names(ROOT):
        assert any(f"notebooks/{name}.html" in h for h in hrefs), f"the provenance page does not link {name}"
    assert "runs trained" in text and "cache audits" in text and "commit" in text
    page.goto((built_book / "book" / "figure_map.html").as_uri(), wait_until="load")
    text = page.evaluate("() => document.querySelector('main').innerText")
    for paper in ("P1", "P2", "P3", "P4"):
        assert paper in text
    assert "Table 1" in text
