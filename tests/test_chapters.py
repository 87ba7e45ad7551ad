"""Every chapter executes under papermill at small parameters, writes its claims, and the book builds with -W."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcreg_lib import chapters

from .chapter_params import SMALL
from .conftest import ROOT

NAMES = chapters.chapter_names(ROOT)


def test_every_chapter_has_small_parameters():
    assert sorted(NAMES) == sorted(SMALL), "add the chapter's small parameters to tests/chapter_params.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chapter_executes_and_writes_claims(small_book, name):
    book, timings, errors = small_book
    if name in errors:
        raise errors[name]
    data = json.loads((book / "_build" / "claims" / f"{name}.json").read_text())
    assert data["chapter"] == name
    assert data["claims"], "a chapter states at least one claim"
    for claim in data["claims"]:
        assert set(claim) >= {"claim", "paper", "source", "ours", "holds"}
        assert isinstance(claim["holds"], bool)
    assert (book / "notebooks" / f"{name}.ipynb").exists()


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(built_book):
    html = built_book
    assert (html / "index.html").exists()
    assert (html / "book" / "claims_ledger.html").exists()
    for name in NAMES:
        page = (html / "notebooks" / f"{name}.html").read_text()
        assert "<img" in page, f"{name} has no figure"
        assert "Traceback" not in page
        assert f"{name}.ipynb" in page, f"{name} offers no notebook download"


def test_bad_chapter_name_is_a_clear_error():
    with pytest.raises(ValueError, match="chapter='nope' is not allowed"):
        chapters.execute("nope")


def test_bad_parameter_fails_at_the_first_cell(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="depths"):
        chapters.execute("getting_started", {"depths": [0, 2], "claims_path": str(tmp_path / "c.json")},
                         tmp_path / "out.ipynb")


def test_parse_parameters():
    assert chapters.parse_parameters(["n=50", "depths=[2,3]", "dtype=float64"]) == {
        "n": 50, "depths": [2, 3], "dtype": "float64"}


def test_parameters_table_and_rerun_box_come_from_the_parameters_cell():
    rows = chapters.parameters("getting_started")
    names = [r["name"] for r in rows]
    assert names[:3] == ["n", "rank", "n_observed"] and "claims_path" in names
    assert all(r["meaning"] and r["allowed"] for r in rows), "every parameter needs '# meaning [allowed]'"
    box = chapters.rerun_box("getting_started", "-p n=50 -p depths=[2,3]")
    assert 'make rerun CHAPTER=getting_started ARGS="-p n=50 -p depths=[2,3]"' in box
    assert "-y '{n: 50, depths: [2,3]}'" in box


@pytest.mark.parametrize("name", NAMES)
def test_every_chapter_documents_its_parameters(name):
    rows = chapters.parameters(name)
    missing = [r["name"] for r in rows if not (r["meaning"] and r["allowed"])]
    assert not missing, f"{name}: parameters without '# meaning [allowed values]': {missing}"
    assert "claims_path" in [r["name"] for r in rows]


@pytest.mark.parametrize("name", NAMES)
def test_papermill_reads_every_parameter(name, tmp_path):
    """papermill must parse each line of the parameters cell (a comment holding "=" defeats it), or it warns
    "Unable to parse line" at every run and calls a reader's -p overrides unknown parameters."""
    import jupytext
    import papermill

    path = tmp_path / f"{name}.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{name}.md"), path)
    found = set(papermill.inspect_notebook(str(path)))
    assert found == {p["name"] for p in chapters.parameters(name)}
