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
