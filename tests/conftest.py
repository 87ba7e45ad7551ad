import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MCREG_PROGRESS", "0")
# Beyond preview=True (every parameter at its declared preview value), what the tests add: the generated MovieLens file.
PREVIEW_EXTRAS = {"penalty": {"movielens_path": str(ROOT / "tests" / "data" / "u_small.data")}}


@pytest.fixture(scope="session")
def small_book(tmp_path_factory):
    """A copy of the book's sources with every chapter executed by papermill at its preview parameters.

    Returns (folder, {chapter: seconds}); each chapter writes its claims to ``_build/claims/NAME.json`` there.
    """
    from mcreg_lib.book import run as chapters

    book = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "book", book / "book")
    shutil.copytree(ROOT / "notebooks", book / "notebooks",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "*_files"))
    timings, errors = {}, {}
    for name in chapters.chapter_names(ROOT):
        params = dict(preview=True, **PREVIEW_EXTRAS.get(name, {}))
        params["claims_path"] = str(book / "_build" / "claims" / f"{name}.json")
        try:
            timings[name] = chapters.execute(name, params, notebooks=book / "notebooks")
        except Exception as exc:  # reported by the per-chapter test
            errors[name] = exc
    from mcreg_lib.book.ledger import write_ledger

    write_ledger(book / "_build" / "claims", book / "book", chapters.chapter_names(ROOT))
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
    jb = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "-W", "--keep-going"]
    result = subprocess.run(jb, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return book / "_build" / "html"
