import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MCREG_PROGRESS", "0")


@pytest.fixture(scope="session")
def small_book(tmp_path_factory):
    """A copy of the book's sources with every chapter executed by papermill at its small parameters.

    Returns (folder, {chapter: seconds}); each chapter writes its claims to ``_build/claims/NAME.json`` there.
    """
    from mcreg_lib import chapters

    from .chapter_params import SMALL

    book = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "book", book / "book")
    shutil.copytree(ROOT / "notebooks", book / "notebooks",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "*_files"))
    timings, errors = {}, {}
    for name in chapters.chapter_names(ROOT):
        params = dict(SMALL[name])
        params["claims_path"] = str(book / "_build" / "claims" / f"{name}.json")
        try:
            timings[name] = chapters.execute(name, params, notebooks=book / "notebooks")
        except Exception as exc:  # reported by the per-chapter test
            errors[name] = exc
    from mcreg_lib.ledger import write_ledger

    write_ledger(book / "_build" / "claims", book / "book", chapters.chapter_names(ROOT))
    return book, timings, errors


@pytest.fixture(scope="session")
def built_book(small_book):
    """The small book built to HTML with ``jupyter-book build -W``; returns the html folder."""
    import subprocess
    import sys

    book, _, errors = small_book
    assert not errors, f"chapters failed: {sorted(errors)}"
    jb = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "-W", "--keep-going"]
    result = subprocess.run(jb, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return book / "_build" / "html"
