"""Chapters open in Jupyter as notebooks from their text files, and saving keeps the pair in sync (jupytext)."""

import shutil

import pytest

from mcreg_lib.book import run as chapters

from .conftest import ROOT


@pytest.fixture
def contents_manager(tmp_path):
    from jupytext import TextFileContentsManager

    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    cm = TextFileContentsManager(root_dir=str(tmp_path))  # what Jupyter uses once jupytext is installed
    return cm, tmp_path


@pytest.mark.parametrize("name", chapters.chapter_names(ROOT))
def test_chapter_opens_as_a_notebook_and_saving_keeps_the_pair(contents_manager, name):
    cm, root = contents_manager
    path = f"notebooks/{name}.md"
    before = (root / path).read_text()
    model = cm.get(path)
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    cm.save(model, path)
    assert (root / f"notebooks/{name}.ipynb").exists(), "saving writes the paired .ipynb"
    assert (root / path).read_text() == before, "a round trip leaves the text file unchanged"
    # an edit made in Jupyter lands in the text file
    model = cm.get(path)
    model["content"]["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "A reader's note."})
    cm.save(model, path)
    assert "A reader's note." in (root / path).read_text()
    paired = cm.get(f"notebooks/{name}.ipynb")
    assert paired["content"]["cells"][-1]["source"] == "A reader's note."


@pytest.mark.slow
@pytest.mark.parametrize("name", chapters.chapter_names(ROOT))
def test_after_a_build_every_chapter_opens_from_its_text_file(small_book, name):
    """papermill writes NAME.ipynb after NAME.md; jupytext refuses a pair whose .ipynb is the newer one unless the
    build touches the .md afterwards. Open each executed chapter as JupyterLab does, with its outputs, and save it."""
    from jupytext import TextFileContentsManager

    book, _, errors = small_book
    assert name not in errors
    cm = TextFileContentsManager(root_dir=str(book))
    path = f"notebooks/{name}.md"
    before = (book / path).read_text()
    model = cm.get(path)  # raises "... is more recent than ..." if the pair is out of order
    cells = model["content"]["cells"]
    assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "the executed outputs come along"
    cm.save(model, path)
    assert (book / path).read_text() == before, "saving keeps the text file as it was"
