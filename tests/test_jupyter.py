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
