"""The build: a chapter through a Dask LocalCluster and the run cache, a rebuild that trains nothing, clear errors
before any chapter runs, and the cold-time estimate."""

import json
import shutil

import pytest

from mcreg_lib.book import build as build_mod

from ..conftest import ROOT


def _sources(tmp_path):
    for name in ("_config.yml", "_toc.yml", "jupytext.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "*_files"))
    return tmp_path


@pytest.mark.slow
def test_a_chapter_through_a_dask_cluster_then_a_rebuild_that_trains_nothing(tmp_path, monkeypatch):
    from distributed import LocalCluster

    src = _sources(tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("MCREG_RUN_ON", f"dask:{cluster.scheduler_address}")
        kw = dict(preview=True, cache=tmp_path / "cache", progress=False, out=tmp_path / "_build",
                  notebooks=src / "notebooks")
        first = build_mod.build(["getting_started"], **kw)
        second = build_mod.build(["getting_started"], **kw)
    a, b = first["chapters"]["getting_started"], second["chapters"]["getting_started"]
    assert "Dask" in first["run_on"]
    assert a["runs_trained"] > 0 and a["runs_read"] == 0
    assert b["runs_trained"] == 0 and b["values_computed"] == 0, "a rebuild reads every result from the cache"
    assert b["runs_read"] == a["runs_trained"] and b["values_read"] == a["values_computed"]
    assert b["audits"] >= 1 and b["audits_ok"] == b["audits"], "the rebuild audited what it read"
    claims = json.loads((tmp_path / "_build" / "claims" / "getting_started.json").read_text())
    assert claims["parameters"]["preview"] is True
    assert (src / "notebooks" / "getting_started.md").stat().st_mtime >= \
        (src / "notebooks" / "getting_started.ipynb").stat().st_mtime, "the text file is the newer of the pair"


def test_bad_settings_fail_before_any_chapter(tmp_path, monkeypatch):
    src = _sources(tmp_path)
    kw = dict(cache=tmp_path / "cache", progress=False, out=tmp_path / "_build", notebooks=src / "notebooks")
    monkeypatch.setenv("MCREG_RUN_ON", "dask:tcp://127.0.0.1:9")
    with pytest.raises(ConnectionError, match="could not reach the Dask scheduler"):
        build_mod.build(["getting_started"], **kw)
    monkeypatch.setenv("MCREG_RUN_ON", "gpu")
    with pytest.raises(ValueError, match="MCREG_RUN_ON='gpu' is not allowed"):
        build_mod.build(["getting_started"], **kw)
    monkeypatch.delenv("MCREG_RUN_ON")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises((PermissionError, ValueError)):
        build_mod.build(["getting_started"], **{**kw, "cache": tmp_path / "file"})
    assert not (tmp_path / "_build" / "claims").exists(), "no chapter ran"


def test_estimate_prefers_the_last_cold_build_of_this_cache(tmp_path):
    seconds, source = build_mod.estimate(["getting_started", "depth"], False, tmp_path)
    assert "2-core" in source and seconds > 0
    (tmp_path / "last-build-protocol.json").write_text(json.dumps(
        {"date": "today", "cold_seconds": {"getting_started": 10.0, "depth": 20.0}}))
    assert build_mod.estimate(["getting_started", "depth"], False, tmp_path) == (
        30.0, "the last cold build of this size on this machine (today)")


def test_a_build_into_a_file_prints_a_line_a_minute(tmp_path, monkeypatch, capsys):
    """Without a terminal the bar becomes a line a minute: the sweep's progress while one runs, else that the
    chapter is still alive (the clock is sped up: a minute passes every poll)."""
    clock = iter(range(0, 10_000, 61))
    monkeypatch.setattr(build_mod.time, "time", lambda: float(next(clock)))
    path = tmp_path / "p.json"
    bar = build_mod._Bar(path, "demo", tty=False)
    polls = iter([None, {"label": "depth 3 gd", "steps": 50, "total": 100, "runs": 1, "total_runs": 2},
                  {"computing": "baselines.nuclear_norm_minimization"}])

    class Stop:
        def wait(self, _):
            try:
                state = next(polls)
            except StopIteration:
                return True
            path.write_text(json.dumps(state)) if state else path.unlink(missing_ok=True)
            return False

    bar.stop = Stop()
    bar._loop()
    out = capsys.readouterr().out.splitlines()
    assert "demo:" in out[0] and "no sweep running now" in out[0]
    assert "depth 3 gd: runs 1/2, 50% of the run-steps, at most about" in out[1]
    assert out[2].endswith("(no sweep running now; computing baselines.nuclear_norm_minimization)")


def _lines_for(tmp_path, monkeypatch, steps, taken=None, total=1000):
    """Run a file-output bar over one sweep of ``total`` run-steps that reports ``steps`` (the budget used up) and
    ``taken`` (the run-steps taken; default: the same), one report a minute."""
    clock = iter(range(0, 10_000, 61))
    monkeypatch.setattr(build_mod.time, "time", lambda: float(next(clock)))
    path = tmp_path / "p.json"
    bar = build_mod._Bar(path, "demo", tty=False)
    polls = iter([{"label": "s", "steps": s, "total": total, "runs": 0, "total_runs": 2, "taken": t}
                  for s, t in zip(steps, taken or steps)])

    class Stop:
        def wait(self, _):
            try:
                path.write_text(json.dumps(next(polls)))
            except StopIteration:
                return True
            return False

    bar.stop = Stop()
    bar._loop()


def test_the_line_a_minute_estimates_from_the_last_minute(tmp_path, monkeypatch, capsys):
    """A sweep resumed from checkpoints reports its resumed steps at once: the time left is estimated from the
    steps of the last minute, not from the jump."""
    import re

    _lines_for(tmp_path, monkeypatch, (0, 500, 510, 520))
    minutes = [int(m) for m in re.findall(r"at most about (\d+) min left", capsys.readouterr().out)]
    assert len(minutes) >= 2 and minutes[-1] > 10 * minutes[0]


def test_the_line_a_minute_takes_its_rate_from_the_steps_taken(tmp_path, monkeypatch, capsys):
    """A run that stops early credits its unused budget to the run-steps at once: that is no work done, so a minute
    in which runs stop does not promise the rest of the sweep in a minute (it did: "at most about 3 min left",
    then 43 at the next line, in a build of the penalty chapter)."""
    import re

    _lines_for(tmp_path, monkeypatch, (100, 200, 5200, 5300, 5400), taken=(100, 200, 300, 400, 500), total=10_000)
    minutes = [int(m) for m in re.findall(r"at most about (\d+) min left in this sweep if the last minute's rate holds",
                                          capsys.readouterr().out)]
    assert len(minutes) == 5
    assert minutes[2] >= 40 and max(minutes[2:]) <= 1.2 * min(minutes[2:])  # from 1 min (the credit) back to 47


def test_a_minute_without_steps_says_so(tmp_path, monkeypatch, capsys):
    """A sweep paused (or between two reports) for a minute gets no estimate, never "nan min left"."""
    _lines_for(tmp_path, monkeypatch, (100, 100, 200))
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "10% of the run-steps, no steps reported in the last minute" in out
    assert "20% of the run-steps, at most about" in out


def test_the_command_line_build_shows_progress_unless_turned_off(monkeypatch):
    from mcreg_lib.book import run

    seen = {}
    monkeypatch.setattr(build_mod, "main_build", lambda **kw: seen.update(kw) or 0)
    monkeypatch.delenv("MCREG_PROGRESS", raising=False)
    assert run.main(["build", "--no-html"]) == 0 and seen["progress"] is True
    monkeypatch.setenv("MCREG_PROGRESS", "0")
    assert run.main(["build", "--no-html"]) == 0 and seen["progress"] is False


def test_each_cold_chapter_is_remembered_as_it_finishes(tmp_path):
    record = {"preview": False, "date": "today", "chapters": {
        "a": {"seconds": 10.0, "runs_read": 0, "values_read": 0},
        "b": {"seconds": 2.0, "runs_read": 3, "values_read": 0}}}
    build_mod._remember(record, tmp_path, "a")
    build_mod._remember(record, tmp_path, "b")  # read from the cache: not a cold time
    data = json.loads((tmp_path / "last-build-protocol.json").read_text())
    assert data["cold_seconds"] == {"a": 10.0}
    seconds, source = build_mod.estimate(["a"], False, tmp_path)
    assert seconds == 10.0 and "last cold build" in source
