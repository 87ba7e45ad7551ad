"""Building the book: every chapter executed through the run cache, with progress, audits and provenance.

    python -m mcreg_lib.book build              # the papers' protocol (what `make book` does)
    python -m mcreg_lib.book build --preview    # every parameter at its preview value (`make preview`)

What a build does, in order:

1. checks the settings (``MCREG_RUN_ON``, ``MCREG_DEVICE``, the cache folder; :func:`mcreg_lib.settings.check`)
   before any chapter runs, and prints an estimate of the cold time (from the last build of the same size in this
   cache, else from the times measured with the current training loop on a 2-core machine that each chapter
   module records);
2. executes each chapter with papermill in place (``notebooks/NAME.ipynb``), its kernel told by environment
   variables where the cache is (so finished runs are read, not trained, and a killed build resumes), how many
   cached results to audit (re-compute and compare: a stale entry fails the build) and where to log what it did;
   one line per chapter as it starts and ends, and a bar over the chapter's current sweep;
3. touches ``notebooks/NAME.md`` after its ``.ipynb`` is written, so JupyterLab (jupytext) opens the pair;
4. writes the provenance of the build (``_build/provenance/build.json``, the pages ``book/provenance.md`` and
   ``book/build_summary.md``), the claims ledger and the figure map.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import __version__, settings
from .run import NOTEBOOKS, ROOT, chapter_names, declared, execute

AUDITS_PER_CHAPTER = 3


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 else \
            "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _Bar:
    """Shows the chapter's current sweep from its progress file (the kernel runs in another process): a bar on a
    terminal, else a line a minute (for a build whose output goes to a file)."""

    def __init__(self, path: Path, name: str, tty: bool) -> None:
        self.path, self.name, self.tty = path, name, tty
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Bar:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        bar, label, work, begun = None, None, None, time.time()
        printed = begun
        while not self.stop.wait(1.0):
            state = settings.read_progress(self.path)
            running = bool(state and state.get("total")) and state["steps"] < state["total"]
            if state and state.get("total"):
                key = (state["label"], state["total"], state["total_runs"])
                if key != label:
                    # the rate of the run-steps actually taken over the last minute (settings.WorkRate), from zero
                    # at the sweep's start: not since it began, as a sweep resumed from checkpoints reports the
                    # steps it resumed at once
                    label, work = key, settings.WorkRate()
                    work.add(0)
                    if bar is not None:
                        bar.close()
                        bar = None
                    if self.tty:
                        bar = settings.sweep_bar(auto=False, total=state["total"],
                                                 desc=f"  {self.name}: {state['label']}", unit="step",
                                                 unit_scale=True, leave=False, file=sys.stderr, smoothing=0.1)
                        bar.work = work
                if bar is not None:
                    work.add(state.get("taken", state["steps"]))
                    bar.n = min(state["steps"], state["total"])
                    bar.set_postfix_str(f"runs {state['runs']}/{state['total_runs']}", refresh=False)
                    bar.refresh()
            if self.tty or time.time() - printed < 60:
                continue
            printed = time.time()  # a line a minute for a build whose output goes to a file
            if running:
                done = state["steps"] / state["total"]
                work.add(state.get("taken", state["steps"]), printed)
                rate = work.rate() or 0.0
                head = f"  {self.name}: {state['label']}: runs {state['runs']}/{state['total_runs']}, {done:.0%} of " \
                       "the run-steps, "
                tail = " (the count takes every running run to its step budget; a run that meets its stop rule ends " \
                       "sooner)"
                if rate > 0:
                    left = (state["total"] - state["steps"]) / rate
                    print(f"{head}at most about {left / 60:.0f} min left in this sweep if the last minute's rate "
                          f"holds{tail}", flush=True)
                else:  # a minute without a reported step: a long stretch between reports, or the process paused
                    print(f"{head}no steps reported in the last minute", flush=True)
            else:
                doing = state.get("computing") if state else None
                print(f"  {self.name}: {(printed - begun) / 60:.0f} min into the chapter (no sweep running now"
                      + (f"; computing {doing})" if doing else ")"), flush=True)
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def _environment_restored(names: tuple[str, ...]) -> Iterator[None]:
    """The environment variables ``names`` as they were before the block, whatever it set."""
    saved = {k: os.environ.get(k) for k in names}
    try:
        yield
    finally:
        for k, val in saved.items():
            if val is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = val


@contextlib.contextmanager
def watched(name: str, progress_file: Path, show: bool) -> Iterator[None]:
    """While the block runs, the chapter's sweeps write their progress to ``progress_file`` (the kernel runs in
    another process) and, with ``show``, :class:`_Bar` draws it: a bar on a terminal, else a line a minute. The
    variables it sets for the kernel are restored afterwards."""
    with _environment_restored(("MCREG_PROGRESS_FILE", "MCREG_PROGRESS")):
        progress_file.parent.mkdir(parents=True, exist_ok=True)
        progress_file.unlink(missing_ok=True)
        os.environ.update({"MCREG_PROGRESS_FILE": str(progress_file), "MCREG_PROGRESS": "0"})  # the kernel: no bar
        if show:
            with _Bar(progress_file, name, sys.stderr.isatty()):
                yield
        else:
            yield


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by a kill: not counted
            continue
    return out


def summarize_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of runs and values trained and read, and the audits with their largest difference."""
    c = Counter((e["event"], e.get("kind")) for e in events)
    audits = [e for e in events if e["event"] == "audited"]
    return {"runs_trained": c[("trained", "run")], "runs_read": c[("read", "run")],
            "values_computed": c[("trained", "value")], "values_read": c[("read", "value")],
            "audits": len(audits), "audits_ok": sum(bool(e.get("ok")) for e in audits),
            "audit_max_rel_diff": max((float(e.get("max_rel_diff", 0.0)) for e in audits), default=None),
            "audited": [e.get("what", "") for e in audits]}


def estimate(names: list[str], preview: bool, cache: Path) -> tuple[float, str]:
    """Seconds a cold build of these chapters takes, and where the number comes from."""
    size = "preview" if preview else "protocol"
    last = cache / f"last-build-{size}.json"
    if last.exists():
        data = json.loads(last.read_text())
        cold = data.get("cold_seconds", {})
        if all(n in cold for n in names):
            return sum(cold[n] for n in names), f"the last cold build of this size on this machine ({data['date']})"
    from .. import chapters

    total = sum(chapters.module(n).COLD_SECONDS[size] for n in names)
    if preview:
        return total, "the times measured on the 2-core build machine (recorded in mcreg_lib/chapters/*.py)"
    return total, ("the times measured with the current training loop on a 2-core machine (recorded in "
                   "mcreg_lib/chapters/*.py; the slower build machine, with an earlier loop, took about twice as long)")


BUILD_VARIABLES = ("MCREG_CACHE", "MCREG_AUDIT", "MCREG_AUDIT_SEED", "MCREG_EVENTS", "MCREG_PROGRESS_FILE",
                   "MCREG_PROGRESS")


def build(names: list[str] | None = None, *, preview: bool = False, cache: str | Path | None = None,
          audits: int = AUDITS_PER_CHAPTER, seed: str | None = None, progress: bool = True,
          out: Path = ROOT / "_build", notebooks: Path = NOTEBOOKS,
          extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Execute the chapters (default: every chapter of _toc.yml) and record the build's provenance.

    Claims go to ``out/claims``, provenance to ``out/provenance``; ``extra``: more parameters per chapter. The
    environment variables the build sets for the kernels are restored afterwards."""
    with _environment_restored(BUILD_VARIABLES):
        return _build(names or chapter_names(), preview, cache, audits, seed, progress, Path(out), notebooks,
                      extra or {})


def _build(names: list[str], preview: bool, cache: str | Path | None, audits: int, seed: str | None,
           progress: bool, out: Path, notebooks: Path, extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cache = Path(cache or os.environ.get("MCREG_CACHE") or ROOT / ".mcreg_cache").resolve()
    os.environ["MCREG_CACHE"] = str(cache)
    where = settings.check()  # before any chapter: a bad setting is a clear error now, not after an hour
    seed = seed or secrets.token_hex(4)
    claims_dir = out / "claims"
    provenance = out / "provenance"
    provenance.mkdir(parents=True, exist_ok=True)
    seconds, source = estimate(names, preview, cache)
    size = "preview" if preview else "paper-protocol"
    print(f"Building the {size} book: {len(names)} chapters; a cold build (nothing cached) takes about "
          f"{seconds / 60:.0f} min by {source}. Runs already in {cache} are read, not trained.", flush=True)
    print(f"Runs go to {where['run_on']} on {where['device']}; audit seed {seed}.", flush=True)
    record: dict[str, Any] = {
        "kind": size, "preview": preview, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": git_commit(ROOT),
        "mcreg_lib": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {where['device_name']}",
        "run_on": where["run_on"], "device": where["device"], "cache": str(cache), "audit_seed": seed, "chapters": {}}
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        events = provenance / f"{name}.events.jsonl"
        events.unlink(missing_ok=True)
        os.environ.update({"MCREG_AUDIT": str(audits), "MCREG_AUDIT_SEED": f"{seed}:{name}",
                           "MCREG_EVENTS": str(events)})
        params = {"preview": True} if preview else {}
        params.update(extra.get(name, {}))
        params["claims_path"] = str((claims_dir / f"{name}.json").resolve())
        print(f"[{i}/{len(names)}] {name}: started", flush=True)
        t0 = time.perf_counter()
        try:
            with watched(name, provenance / f"{name}.progress.json", progress):
                execute(name, params, notebooks=notebooks)
        finally:
            (notebooks / f"{name}.md").touch()  # the text file is the newer of the pair: jupytext opens it
        wall = time.perf_counter() - t0
        counts = summarize_events(_events(events))
        claims = json.loads((claims_dir / f"{name}.json").read_text())
        changed = declared(name).changed(claims["parameters"])
        record["chapters"][name] = {"seconds": wall, **counts, "changed_parameters": changed}
        _remember(record, cache, name)  # now, so a build stopped later still teaches the next one's estimate
        audit = (f"{counts['audits_ok']} of {counts['audits']} audits match" if counts["audits"] else "no audits")
        print(f"[{i}/{len(names)}] {name}: done in {wall:.0f} s: trained {counts['runs_trained']} runs and "
              f"{counts['values_computed']} other results, read {counts['runs_read'] + counts['values_read']} from "
              f"the cache; {audit}", flush=True)
    record["seconds"] = time.perf_counter() - start
    (provenance / "build.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"All {len(names)} chapters in {record['seconds'] / 60:.1f} min.", flush=True)
    return record


def _remember(record: dict[str, Any], cache: Path, name: str) -> None:
    """Keep a chapter's time if it ran cold (nothing read from the cache), for the next build's estimate."""
    ch = record["chapters"][name]
    if ch["runs_read"] or ch["values_read"]:
        return
    size = "preview" if record["preview"] else "protocol"
    path = cache / f"last-build-{size}.json"
    data = json.loads(path.read_text()) if path.exists() else {"cold_seconds": {}}
    data["cold_seconds"][name] = ch["seconds"]
    data["date"] = record["date"]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def write_provenance(record: dict[str, Any], out_dir: Path) -> Path:
    """The provenance page: how this build was made, chapter by chapter."""
    import pandas as pd

    rows = []
    for name, ch in record["chapters"].items():
        audits = ("none" if not ch["audits"] else f"{ch['audits_ok']} of {ch['audits']} match" +
                  (f" (largest relative difference {ch['audit_max_rel_diff']:.2g})"
                   if ch["audit_max_rel_diff"] else " (identical)"))
        changed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in ch["changed_parameters"].items()
                            if k != "preview") or "none"
        rows.append({"chapter": f"{{doc}}`../notebooks/{name}`", "wall time": f"{ch['seconds']:.0f} s",
                     "runs trained": ch["runs_trained"], "runs read from the cache": ch["runs_read"],
                     "other results computed / read": f"{ch['values_computed']} / {ch['values_read']}",
                     "cache audits": audits, "parameters differing from the defaults": changed})
    size = ("a **preview build**: every chapter ran at its small preview values (parameters still at their "
            "defaults took their preview values), not at the papers' protocol" if record["preview"] else
            "the **paper-protocol build**: every chapter ran at its declared defaults, the papers' protocol")
    lines = [
        "# Provenance of this build", "",
        f"This is {size}. Built {record['date']} from commit `{record['commit']}` with mcreg_lib "
        f"{record['mcreg_lib']}, torch {record['torch']} and Python {record['python']}, on {record['machine']}. "
        f"Runs went to {record['run_on']} on `{record['device']}`; {record['seconds'] / 60:.1f} minutes in all.", "",
        "Every run and every other cached computation is stored in the run cache under a hash of everything that "
        "determines its numbers (its configuration, its problem's data, the device type, torch's version and the "
        "library's results version): a later build reads it instead of training it again. To keep stale results "
        "from hiding there, each chapter re-computes a few of the results it read (chosen by the build's audit "
        f"seed, `{record['audit_seed']}`) and compares them with the stored ones; a mismatch fails the build.", "",
        pd.DataFrame(rows).to_markdown(index=False), "",
    ]
    path = out_dir / "provenance.md"
    path.write_text("\n".join(lines))
    return path


def book_config(preview: bool, root: Path = ROOT) -> Path | None:
    """For a preview build: the book's _config.yml with a banner on every page saying so."""
    if not preview:
        return None
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("html", {})["announcement"] = (
        "Preview build: every chapter ran at its small preview values, not at the papers' protocol. "
        "Verdicts here are a smoke test; `make book` builds the reproduction.")
    path = root / "_build" / "preview_config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main_build(preview: bool = False, fresh: bool = False, names: list[str] | None = None,
               html: bool = True, progress: bool = True) -> int:
    """The whole build: chapters, ledger, figure map, provenance page, then the HTML (jupyter-book, -W).
    ``progress``: a bar over each chapter's current sweep on a terminal, else a line a minute."""
    import shutil

    from .figures import write_figure_map
    from .ledger import write_ledger

    cache = Path(os.environ.get("MCREG_CACHE") or ROOT / ".mcreg_cache").resolve()
    if fresh and cache.exists():
        print(f"FRESH: removing the cache {cache}", flush=True)
        shutil.rmtree(cache)
    claims_dir = ROOT / "_build" / "claims"
    shutil.rmtree(claims_dir, ignore_errors=True)
    record = build(names, preview=preview, cache=cache, progress=progress)
    tally = write_ledger(claims_dir, ROOT / "book", preview=preview)
    write_figure_map(claims_dir, ROOT / "book" / "figure_map.md", preview=preview)
    write_provenance(record, ROOT / "book")
    print(f"Paper claims holding: {tally['paper'][0]} of {tally['paper'][1]}; implementation checks passing: "
          f"{tally['check'][0]} of {tally['check'][1]}.", flush=True)
    if not html:
        return 0
    out = ROOT / "_build" / ("preview" if preview else "")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "-W", "--keep-going"]
    config = book_config(preview)
    if config is not None:
        cmd += ["--config", str(config), "--path-output", str(out)]
    result = subprocess.run(cmd)
    if result.returncode:
        return result.returncode
    print(f"The book: {out / '_build' / 'html' / 'index.html' if preview else ROOT / '_build' / 'html' / 'index.html'}")
    return 0
