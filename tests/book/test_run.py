"""The papermill runner: every chapter executes at its preview parameters and writes its claims, the book builds with
-W, the parameters cell and the rerun box come from the chapter's one declaration."""

import json

import pytest

from mcreg_lib import chapters as chapter_modules
from mcreg_lib.book import run as chapters

from ..conftest import ROOT

NAMES = chapters.chapter_names(ROOT)


def test_every_chapter_of_the_toc_has_a_module():
    assert sorted(NAMES) == sorted(chapter_modules.NAMES)
    for name in NAMES:
        assert chapter_modules.module(name).PARAMETERS.chapter == name
    with pytest.raises(ValueError, match="chapter='nope' is not allowed"):
        chapter_modules.module("nope")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chapter_executes_and_writes_claims(small_book, name):
    book, timings, errors = small_book
    if name in errors:
        raise errors[name]
    data = json.loads((book / "_build" / "claims" / f"{name}.json").read_text())
    assert data["chapter"] == name
    assert data["claims"], "a chapter states at least one claim"
    assert data["parameters"]["preview"] is True
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
        assert "second seed set is recorded" in page or "At a second seed set" in page, \
            f"{name} says nothing of its second seed set under its claims"


def test_bad_chapter_name_is_a_clear_error():
    with pytest.raises(ValueError, match="chapter='nope' is not allowed"):
        chapters.execute("nope")


def test_bad_parameter_fails_at_the_first_cell(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match=r"depths\[0\]=0 is not allowed"):
        chapters.execute("getting_started", {"depths": [0, 2], "claims_path": str(tmp_path / "c.json")},
                         tmp_path / "out.ipynb")


def test_a_rerun_with_a_bad_parameter_stops_before_any_kernel(monkeypatch):
    """`make rerun` checks the parameters against the chapter's declaration first: one line naming the parameter,
    the value and what is allowed, not a kernel's traceback."""
    monkeypatch.setattr(chapters, "execute", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(SystemExit, match=r"rerun penalty: n_observed_grid\[6\]=4000 is not allowed: .* between 1 and "
                                         r"3600"):
        chapters.main(["run", "penalty", "-p", "n=60"])
    with pytest.raises(SystemExit, match=r"\['nn'\] are not parameters of chapter 'depth'"):
        chapters.main(["run", "depth", "-p", "nn=60"])


def test_parse_parameters():
    assert chapters.parse_parameters(["n=50", "depths=[2,3]", "dtype=float64"]) == {
        "n": 50, "depths": [2, 3], "dtype": "float64"}


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_is_the_declaration(name):
    """The notebook's parameters cell is generated from the chapter's declaration (`python -m mcreg_lib.book
    sync-parameters`); papermill must parse every line of it (a comment holding "=" would defeat it, and papermill
    would warn "Unable to parse line" and call a reader's -p overrides unknown)."""
    declared = chapters.declared(name)
    assert chapters.parameters_cell(name) == declared.cell(), "run: python -m mcreg_lib.book sync-parameters"
    namespace: dict = {}
    exec(declared.cell(), namespace)  # noqa: S102 - the generated cell is plain assignments
    assert {k: namespace[k] for k in declared.names} == declared.defaults()


@pytest.mark.parametrize("name", NAMES)
def test_papermill_reads_every_parameter(name, tmp_path):
    import jupytext
    import papermill

    path = tmp_path / f"{name}.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{name}.md"), path)
    assert set(papermill.inspect_notebook(str(path))) == set(chapters.declared(name).names)


def test_rerun_box_lists_the_declaration():
    box = chapters.rerun_box("getting_started", "-p n=50 -p depths=[2,3]")
    assert 'make rerun CHAPTER=getting_started ARGS="-p n=50 -p depths=[2,3]"' in box
    assert "-y '{n: 50, depths: [2,3]}'" in box
    for row in chapters.declared("getting_started").table():
        assert f"| `{row['name']}` |" in box and row["allowed"] in box
    assert "this chapter took about 18 s on a\n2-core machine; at the preview values about 14 s" in box
    assert [chapters.duration(s) for s in (40, 445, 4946, 7168)] == ["40 s", "7 min", "82 min", "1 h 59 min"]
