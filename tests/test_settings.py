"""mcreg_lib.settings: where runs go, chosen by the environment; every setting checked before work starts."""

import os

import pytest
import torch

from mcreg_lib import settings


def test_run_on_forms(monkeypatch):
    monkeypatch.delenv("MCREG_RUN_ON", raising=False)
    assert settings.run_on().kind == "local"
    assert settings.run_on("processes:3").processes == 3
    assert settings.run_on("dask:tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    assert settings.run_on("cuda").device == "cuda"
    for bad in ("processes:0", "processes:x", "dask:", "gpu"):
        with pytest.raises(ValueError, match=f"MCREG_RUN_ON='{bad}' is not allowed"):
            settings.run_on(bad)


def test_device_and_cache_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MCREG_DEVICE", "cpu")
    assert settings.device() == torch.device("cpu")
    monkeypatch.setenv("MCREG_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MCREG_DEVICE='tpu'"):
        settings.device()
    monkeypatch.delenv("MCREG_DEVICE")
    monkeypatch.setenv("MCREG_CACHE", str(tmp_path / "c"))
    assert settings.cache_dir() == tmp_path / "c"
    assert settings.check()["cache"] == str(tmp_path / "c")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_check_refuses_a_missing_cuda_device(monkeypatch):
    monkeypatch.setenv("MCREG_RUN_ON", "cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        settings.check()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only folder")
def test_check_refuses_a_read_only_cache(monkeypatch, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("MCREG_CACHE", str(folder))
    with pytest.raises(PermissionError, match="MCREG_CACHE="):
        settings.check()


def test_check_refuses_a_cache_that_is_a_file(monkeypatch, tmp_path):
    """As root (where chmod does not stop writes) a file in place of the folder still cannot be written into."""
    path = tmp_path / "file"
    path.write_text("x")
    monkeypatch.setenv("MCREG_CACHE", str(path))
    with pytest.raises(PermissionError, match="MCREG_CACHE="):
        settings.check()


def test_check_refuses_an_unreachable_scheduler(monkeypatch):
    monkeypatch.setenv("MCREG_RUN_ON", "dask:tcp://127.0.0.1:9")
    with pytest.raises(ConnectionError, match="could not reach the Dask scheduler"):
        settings.check(connect_timeout=1.0)


def test_events_are_appended_as_json_lines(monkeypatch, tmp_path):
    import json

    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("MCREG_EVENTS", str(log))
    settings.log_event("read", kind="run", key="abc")
    settings.log_event("trained", kind="value", key="def", seconds=1.5)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["read", "trained"] and lines[1]["seconds"] == 1.5


@pytest.mark.parametrize("name", ["MCREG_CHECKPOINT_SECONDS", "MCREG_AUDIT_MAX_SECONDS"])
@pytest.mark.parametrize("bad", ["-1", "soon", "nan"])
def test_check_refuses_a_bad_number_of_seconds(monkeypatch, name, bad):
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError, match=f"{name}='{bad}' is not allowed: it must be a number of seconds >= 0"):
        settings.check()


def test_a_sweep_bar_tells_its_time_left_from_the_steps_taken():
    """Runs that stop early credit their unused budgets to the bar's count at once; its rate (and time left) is
    that of the run-steps taken over the last minute, so a moment in which runs stop does not promise the rest."""
    import io

    window = settings.WorkRate(window=60.0)
    assert window.rate() is None
    for t, taken in [(0, 0), (30, 300), (60, 600), (90, 900), (200, 2000)]:
        window.add(taken, now=float(t))
    assert window.rate() == pytest.approx(10.0)  # the samples older than a minute before the last are dropped
    assert window.samples[0][0] == 90.0

    out = io.StringIO()
    bar = settings.sweep_bar(auto=False, total=10_000, desc="s", unit="step", file=out, mininterval=0)
    bar.work.add(0, now=0.0)
    bar.work.add(100, now=10.0)
    bar.update(5_200)  # 4,900 of it a stopped run's unused budget: the bar's own rate would call it nearly done
    bar.close()
    assert "08:00 left if every run takes its whole step budget, 10.00step/s" in out.getvalue()


def test_a_memoized_computation_names_itself_in_the_progress_file(tmp_path, monkeypatch):
    """Between sweeps the build names what the chapter computes: a memoized computation (nuclear-norm minimization,
    OptSpace, P4's tensors...) says so in the progress file while it runs, the outer one again after an inner one."""
    from mcreg_lib import cache

    path = tmp_path / "progress.json"
    monkeypatch.setenv("MCREG_PROGRESS_FILE", str(path))
    monkeypatch.setenv("MCREG_CACHE", str(tmp_path / "cache"))
    seen = []

    @cache.memoize
    def inner(x):
        seen.append(settings.read_progress(path).get("computing"))
        return x + 1

    @cache.memoize
    def outer(x):
        seen.append(settings.read_progress(path).get("computing"))
        y = inner(x)
        seen.append(settings.read_progress(path).get("computing"))
        return y

    assert outer(1) == 2
    assert seen == [f"{__name__.removeprefix('mcreg_lib.')}.{n}" for n in (
        "test_a_memoized_computation_names_itself_in_the_progress_file.<locals>.outer",
        "test_a_memoized_computation_names_itself_in_the_progress_file.<locals>.inner",
        "test_a_memoized_computation_names_itself_in_the_progress_file.<locals>.outer")]
    assert "computing" not in settings.read_progress(path)  # done: nothing named
    assert outer(1) == 2 and len(seen) == 3  # read from the cache: nothing computed, nothing announced
