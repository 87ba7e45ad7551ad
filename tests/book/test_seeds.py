import importlib
import json
from pathlib import Path

import pandas as pd
import pytest

from mcreg_lib.book import run, seeds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", run.chapter_names(ROOT))
def test_every_chapter_moves_every_seed(name):
    """SECOND_SEEDS names only the chapter's parameters, covers each one whose name says it is a seed, and moves
    each of them off its default."""
    module = importlib.import_module(f"mcreg_lib.chapters.{name}")
    second = seeds.second_seeds(name)
    declared = module.PARAMETERS
    seedlike = {n for n in declared.names if "seed" in n or n == "instances"}
    assert set(second) == seedlike
    for k, value in second.items():
        default = declared[k].default
        overlap = set(value if isinstance(value, list) else [value]) & set(
            default if isinstance(default, list) else [default])
        assert not overlap, f"{name}: {k} keeps {overlap} of its default"
    declared.resolve(**second)


def _fake_execute(verdicts_by_seed):
    def execute(name, params, output):
        holds = verdicts_by_seed[tuple(params.get("seeds", [0, 1, 2]))]
        claims = [{"claim": f"claim {i}", "kind": "paper" if i else "check", "holds": h, "ours": i}
                  for i, h in enumerate(holds)]
        Path(params["claims_path"]).write_text(json.dumps({"chapter": name, "claims": claims}))
        Path(output).write_text("{}")
        return 0.0
    return execute


def test_seed_sets_lists_both_verdicts(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", _fake_execute({(0, 1, 2): [True, True, False], (3, 4, 5): [True, False, False]}))
    table = seeds.seed_sets("balancedness", tmp_path, {"preview": False})
    assert list(table["changed"]) == [False, True, False]
    assert table["same_statement"].all()
    assert pd.read_csv(tmp_path / "seed_sets.csv").shape[0] == 3
    text = seeds.report(table)
    assert text.splitlines()[0].startswith("CHANGES paper   holds -> fails")
    assert "1 of 3 claims change verdict between the seed sets (1 paper claims)" in text


def test_seed_lists_follow_the_first_runs_length(tmp_path, monkeypatch):
    seen = []

    def execute(name, params, output):
        seen.append(params)
        Path(params["claims_path"]).write_text(json.dumps({"chapter": name, "claims": []}))
        return 0.0

    monkeypatch.setattr(run, "execute", execute)
    seeds.seed_sets("balancedness", tmp_path, {"preview": True})  # preview seeds: fewer than the defaults
    preview = importlib.import_module("mcreg_lib.chapters.balancedness").PARAMETERS["seeds"].preview_value
    assert seen[1]["seeds"] == [3, 4, 5][:len(preview)] and seen[1]["seed"] == 1


def test_seed_sets_show_each_runs_sweeps_and_time(tmp_path, monkeypatch, capsys):
    """Both executions write their sweeps' progress to a file of their own (the build's bar reads it); the
    variables are restored afterwards, and each seed set's wall time is printed."""
    import os

    seen = []

    def execute(name, params, output):
        seen.append((os.environ.get("MCREG_PROGRESS_FILE"), os.environ.get("MCREG_PROGRESS")))
        Path(params["claims_path"]).write_text(json.dumps({"chapter": name, "claims": []}))
        return 0.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setenv("MCREG_PROGRESS", "1")
    monkeypatch.delenv("MCREG_PROGRESS_FILE", raising=False)
    seeds.seed_sets("balancedness", tmp_path, {"preview": True}, progress=True)
    assert seen == [(str(tmp_path.resolve() / label / "balancedness.progress.json"), "0")
                    for label in ("first", "second")]
    assert os.environ["MCREG_PROGRESS"] == "1" and "MCREG_PROGRESS_FILE" not in os.environ
    out = capsys.readouterr().out
    assert "balancedness, first seed set: done in" in out and "balancedness, second seed set: done in" in out


def test_bad_second_seed_set_fails_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ValueError, match="not parameters of chapter 'norms'"):
        seeds.seed_sets("norms", tmp_path, second={"seedz": [1]})
    with pytest.raises(ValueError, match="seeds"):
        seeds.seed_sets("norms", tmp_path, second={"seeds": [-1]})


@pytest.mark.slow
def test_seed_sets_runs_a_chapter_twice(tmp_path):
    """A real chapter (getting started, at a few steps) at both seed sets: the second run used the second seeds."""
    table = seeds.seed_sets("getting_started", tmp_path, {"preview": True, "max_steps": 50, "step_check": 1.0})
    assert len(table) and table["kind"].isin(["paper", "check"]).all()
    second = json.loads((tmp_path / "second" / "getting_started.json").read_text())["parameters"]
    assert second["seeds"] == [10, 11]


def _fake_protocol_execute(verdicts_by_seed):
    """A fake chapter run that writes the parameters snapshot a real run writes."""
    def execute(name, params, output):
        declared = importlib.import_module(f"mcreg_lib.chapters.{name}").PARAMETERS
        snapshot = declared.resolve(**{k: v for k, v in params.items() if k != "claims_path"})
        holds = verdicts_by_seed.get(tuple(snapshot["seeds"]), [True])
        claims = [{"claim": f"claim {i}", "kind": "paper" if i else "check", "holds": h, "ours": i}
                  for i, h in enumerate(holds) if h is not None]  # None: the run makes no such claim
        Path(params["claims_path"]).write_text(json.dumps(
            {"chapter": name, "title": "T", "parameters": {**snapshot, "timings_s": {"x": 1.0}}, "claims": claims}))
        return 0.0
    return execute


def test_a_recorded_seed_set_shows_in_the_claims_table_and_the_ledger(tmp_path, monkeypatch):
    from mcreg_lib.book import claims as claims_mod, ledger

    monkeypatch.setattr(run, "execute", _fake_protocol_execute(
        {(0, 1, 2): [True, True, False, True], (3, 4, 5): [True, False, False, None]}))
    monkeypatch.setattr(seeds, "record_path", lambda name, root=None: tmp_path / "book" / "seed_sets" / f"{name}.json")
    seeds.seed_sets("balancedness", tmp_path / "runs")
    # The fourth claim is missing from the second run: the record has no verdict for it.
    path = seeds.record(("balancedness"), tmp_path / "runs")
    assert path == tmp_path / "book" / "seed_sets" / "balancedness.json"
    first = json.loads((tmp_path / "runs" / "first" / "balancedness.json").read_text())
    rec = seeds.recorded("balancedness", first)
    assert rec["verdicts"] == [True, False, False, None]
    assert rec["second_seeds"] == seeds.second_seeds("balancedness")
    assert "1 of 2 paper claims keep their verdict, 1 change" in seeds.record_note("balancedness", rec,
                                                                                   first["claims"])

    # Another statement or another first verdict: the record does not speak for that claim.
    other = json.loads(json.dumps(first))
    other["claims"][1]["claim"] = "claim one, reworded"
    other["claims"][2]["holds"] = True
    assert seeds.recorded("balancedness", other)["verdicts"] == [True, None, None, None]
    # Other parameters (a preview): no record applies.
    preview = {**first, "parameters": {**first["parameters"], "preview": True}}
    assert seeds.recorded("balancedness", preview) is None

    c = claims_mod.Claims("balancedness", "T", parameters=first["parameters"])
    for item in first["claims"]:
        (c.paper if item["kind"] == "paper" else c.check)(item["claim"], ours=item["ours"], holds=item["holds"],
                                                          **({"paper": "p", "source": "paper", "threshold": "t"}
                                                             if item["kind"] == "paper" else {}))
    table = c.table()
    column = [k for k in table.columns if k.startswith("at the second seed set")]
    assert len(column) == 1 and list(table[column[0]]) == ["NO", "NO", "", "yes"]  # paper claims first
    # The chapter's page names the paper claims that change (claim 1); claim 2 fails at both, claim 3 is not spoken for.
    note = c.seed_note()
    assert "1 of 2 paper claims keep their verdict" in note
    assert "Seed-dependent, so not settled by one seed set: claim 1 (holds here, fails there)." in note
    assert "claim 2" not in note and "claim 3" not in note
    unrecorded = claims_mod.Claims("balancedness", "T", parameters={**first["parameters"], "preview": True})
    assert unrecorded.seed_note().startswith("No comparison at a second seed set is recorded")

    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    (claims_dir / "balancedness.json").write_text(json.dumps(c.to_dict()))
    ledger.write_ledger(claims_dir, tmp_path / "out", chapters=["balancedness"])
    text = (tmp_path / "out" / "claims_ledger.md").read_text()
    assert "second seed set" in text and "**NO: changes**" in text
    assert "1 of 2 paper claims keep their verdict" in text
    first_page = (tmp_path / "out" / "claims_summary.md").read_text()
    assert "At a second seed set (recorded" in first_page and "T, 1 of 2 paper claims keep their verdict" in first_page


def test_only_a_comparison_at_the_defaults_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", _fake_protocol_execute({}))
    monkeypatch.setattr(seeds, "record_path", lambda name, root=None: tmp_path / f"{name}.json")
    seeds.seed_sets("balancedness", tmp_path / "runs", {"preview": True})
    with pytest.raises(ValueError, match=r"first run changed .* from the defaults"):
        seeds.record("balancedness", tmp_path / "runs")
    seeds.seed_sets("balancedness", tmp_path / "other", second={"seed": 7, "seeds": [8, 9, 10]})
    with pytest.raises(ValueError, match="not the chapter's SECOND_SEEDS"):
        seeds.record("balancedness", tmp_path / "other")
    assert not (tmp_path / "balancedness.json").exists()
    with pytest.raises(SystemExit):  # the command line refuses before running anything
        run.main(["seed-sets", "balancedness", "--record", "-p", "preview=True"])
