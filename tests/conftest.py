import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MCREG_PROGRESS", "0")
# Beyond preview=True (every parameter at its declared preview value), what the tests add: the generated MovieLens file.
PREVIEW_EXTRAS = {name: {"movielens_path": str(ROOT / "tests" / "data" / "u_small.data")} for name in ("penalty", "depth")}


@pytest.fixture(scope="session")
def small_book(tmp_path_factory):
    """A copy of the book's sources built the way `make preview` builds it: every chapter executed at its preview
    parameters through a run cache (with audits), then the ledger, the figure map and the provenance page.

    Returns (folder, {chapter: seconds}, {chapter: error}); claims in ``_build/claims``, provenance in
    ``_build/provenance`` there.
    """
    from mcreg_lib.book import run as chapters
    from mcreg_lib.book.build import build, write_provenance
    from mcreg_lib.book.figures import write_figure_map
    from mcreg_lib.book.ledger import write_ledger

    book = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml", "jupytext.toml"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "book", book / "book", ignore=shutil.ignore_patterns("_static"))
    (book / "book" / "_static").symlink_to(ROOT / "book" / "_static")
    shutil.copytree(ROOT / "notebooks", book / "notebooks",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "*_files"))
    timings, errors, record = {}, {}, None
    for name in chapters.chapter_names(ROOT):
        try:
            one = build([name], preview=True, cache=book / "cache", progress=False, out=book / "_build",
                        notebooks=book / "notebooks", extra=PREVIEW_EXTRAS)
        except Exception as exc:  # reported by the per-chapter test
            errors[name] = exc
            continue
        timings[name] = one["chapters"][name]["seconds"]
        if record is None:
            record = one
        else:
            record["chapters"].update(one["chapters"])
            record["seconds"] += one["seconds"]
    write_ledger(book / "_build" / "claims", book / "book", chapters.chapter_names(ROOT), preview=True)
    write_figure_map(book / "_build" / "claims", book / "book" / "figure_map.md", preview=True)
    if record is not None:
        write_provenance(record, book / "book")
    return book, timings, errors


@pytest.fixture(scope="session")
def built_book(request):
    """The small book built to HTML with ``jupyter-book build -W``; returns the html folder.

    With ``MCREG_BOOK_HTML`` set (``make check-book``), the already built book there is checked instead.
    """
    import subprocess
    import sys

    given = os.environ.get("MCREG_BOOK_HTML")
    if given:
        return Path(given).resolve()
    book, _, errors = request.getfixturevalue("small_book")
    assert not errors, f"chapters failed: {sorted(errors)}"
    from mcreg_lib.book.build import book_config

    jb = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "-W", "--keep-going",
          "--config", str(book_config(True, book))]
    result = subprocess.run(jb, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return book / "_build" / "html"
