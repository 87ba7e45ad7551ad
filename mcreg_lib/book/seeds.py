"""A chapter's claims at a second seed set: is a verdict a property of the setting or of the seeds drawn?

Every chapter module declares ``SECOND_SEEDS``: each seed parameter it has, moved to values its defaults do not use.
:func:`seed_sets` executes the chapter twice (the book's runner, papermill) with the same parameters, the second time
with ``SECOND_SEEDS`` on top, and lists every claim with its verdict at both; from the shell::

    python -m mcreg_lib.book seed-sets balancedness                  # at the paper's protocol, through the cache
    python -m mcreg_lib.book seed-sets depth -p preview=True --out _build/seed_sets/depth
    python -m mcreg_lib.book seed-sets norms --second seeds=[6,7,8]  # another second seed set

Claims are matched by position: a statement may name a number that moves with the seeds (an m or an initialization
chosen from the first runs), so ``same_statement`` says whether the texts agree. Numbers are expected to differ
between seed sets; a paper claim whose verdict changes is seed-dependent, a finding to report, not an error.

A comparison at the defaults (the papers' protocol) takes hours for some chapters, so it is not part of every build:
``seed-sets NAME --record`` (or :func:`record`) keeps it in ``book/seed_sets/NAME.json``, with the commit and date
it was measured at. The chapter's claims table and the ledger then show each claim's verdict at the second seed
set next to this build's, where the record applies: the same parameters, the same statement and the same verdict
at the first seed set as this build (otherwise the record is from other code, and the claim says so).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import chapters
from .claims import _plain, markdown_text

COLUMNS = ["index", "kind", "claim", "same_statement", "first", "second", "changed", "first_ours", "second_ours"]


def second_seeds(name: str) -> dict[str, Any]:
    """The chapter's declared second seed set (``mcreg_lib.chapters.NAME.SECOND_SEEDS``)."""
    second = getattr(chapters.module(name), "SECOND_SEEDS", None)
    if not second:
        raise ValueError(f"chapter={name!r} is not allowed: mcreg_lib.chapters.{name} declares no SECOND_SEEDS")
    return dict(second)


def verdicts(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> pd.DataFrame:
    """Two claims files of one chapter, claim by claim (by position): kind, the first run's statement, whether the
    second's reads the same, both verdicts (None where the second run has no such claim) and both numbers."""
    a = json.loads(Path(first).read_text())["claims"]
    b = json.loads(Path(second).read_text())["claims"]
    rows = []
    for i, ca in enumerate(a):
        cb = b[i] if i < len(b) else None
        rows.append({"index": i, "kind": ca.get("kind", "paper"), "claim": ca["claim"],
                     "same_statement": cb is not None and cb["claim"] == ca["claim"],
                     "first": bool(ca["holds"]), "second": None if cb is None else bool(cb["holds"]),
                     "changed": cb is None or bool(ca["holds"]) != bool(cb["holds"]),
                     "first_ours": ca.get("ours"), "second_ours": None if cb is None else cb.get("ours")})
    return pd.DataFrame(rows, columns=COLUMNS)


def seed_sets(name: str, out: str | os.PathLike[str], parameters: dict[str, Any] | None = None,
              second: dict[str, Any] | None = None, *, progress: bool = False) -> pd.DataFrame:
    """Execute chapter ``name`` at ``parameters`` and at ``parameters`` with ``second`` on top (default: the
    chapter's ``SECOND_SEEDS``) into ``out/first`` and ``out/second``; returns :func:`verdicts` of the two and writes
    it to ``out/seed_sets.csv``. With ``$MCREG_CACHE`` set, runs already in the cache are read, not trained.
    ``progress``: the chapter's current sweep as the build shows it (a bar on a terminal, else a line a minute)."""
    from .build import watched
    from .run import declared as declaration, execute

    declared = declaration(name)
    second = dict(second) if second else second_seeds(name)
    parameters = dict(parameters or {})
    unknown = sorted(set(second) - set(declared.names))
    if unknown:
        raise ValueError(f"second={second!r} is not allowed: {unknown} are not parameters of chapter {name!r}")
    first = declared.resolve(**parameters)  # both runs' parameters are validated before either runs
    # A seed list no longer than the first run's: at preview size the second set has as many seeds as the first.
    second = {k: (v[:len(first[k])] if isinstance(v, list) and isinstance(first[k], list) else v)
              for k, v in second.items()}
    declared.resolve(**{**parameters, **second})
    out = Path(out).resolve()
    files = []
    for label, extra in (("first", {}), ("second", second)):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        claims = folder / f"{name}.json"
        params = {**parameters, **extra, "claims_path": str(claims)}
        shown = {k: v for k, v in params.items() if k != "claims_path"}
        print(f"{name}, {label} seed set: {json.dumps(shown)}", flush=True)
        start = time.perf_counter()
        with watched(f"{name} ({label})", folder / f"{name}.progress.json", progress):
            execute(name, params, folder / f"{name}.ipynb")
        print(f"{name}, {label} seed set: done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        files.append(claims)
    table = verdicts(*files)
    table.to_csv(out / "seed_sets.csv", index=False)
    return table


def _declared(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The chapter's declared parameters out of a parameters snapshot (a claims file's may also hold measurements),
    JSON-safe as the claims files store them."""
    from .run import declared

    return _plain({k: params.get(k) for k in declared(name).names if k != "claims_path"})


def record_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where the recorded comparison of chapter ``name`` at the defaults lives: ``book/seed_sets/NAME.json``."""
    from .run import ROOT

    return Path(root or ROOT) / "book" / "seed_sets" / f"{name}.json"


def record(name: str, out: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Keep the comparison that :func:`seed_sets` wrote into ``out`` (both claims files) as the chapter's record.
    Only a comparison at the defaults with the chapter's own ``SECOND_SEEDS`` is recorded: the record stands for
    "this chapter at the papers' protocol, at a second seed set"."""
    from .build import git_commit
    from .run import ROOT, declared

    out = Path(out)
    first, second = (json.loads((out / label / f"{name}.json").read_text()) for label in ("first", "second"))
    defaults = _declared(name, declared(name).resolve())
    if _declared(name, first["parameters"]) != defaults:
        changed = sorted(k for k in defaults if first["parameters"].get(k) != defaults[k])
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ValueError(f"out={str(out)!r} is not allowed for a record: its first run changed {shown} from the "
                         "defaults; record only a comparison at the defaults")
    moved = {k: second["parameters"].get(k) for k in second_seeds(name)}
    expected = _plain(second_seeds(name))
    if moved != expected:
        raise ValueError(f"out={str(out)!r} is not allowed for a record: its second run used {moved}, not the "
                         f"chapter's SECOND_SEEDS {expected}")
    table = verdicts(out / "first" / f"{name}.json", out / "second" / f"{name}.json")
    data = {"chapter": name, "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "commit": git_commit(Path(root or ROOT)), "second_seeds": expected, "parameters": defaults,
            "claims": _plain(table.to_dict(orient="records"))}
    path = record_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def recorded(name: str, claims: dict[str, Any], root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The chapter's record where it applies to ``claims`` (a claims file's content: same parameters), as
    ``{"commit", "recorded", "second_seeds", "verdicts"}``: one entry per claim, its verdict at the second seed
    set (True: holds), or None where the record does not speak for this claim (another statement, or another verdict at the first seed set). None when
    there is no record or it was made at other parameters."""
    path = record_path(name, root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("parameters") != _declared(name, claims.get("parameters", {})):
        return None
    rows = data["claims"]
    out = []
    for i, c in enumerate(claims["claims"]):
        r = rows[i] if i < len(rows) else None
        ok = r is not None and r["claim"] == c["claim"] and bool(r["first"]) == bool(c["holds"])
        out.append(None if not ok or r["second"] is None else bool(r["second"]))
    return {"commit": data["commit"], "recorded": data["recorded"], "second_seeds": data["second_seeds"],
            "verdicts": out}


def kept(rec: dict[str, Any], claims: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(paper claims keeping their verdict at the second seed set, paper claims the record speaks for, paper
    claims) for :func:`recorded`'s ``rec`` and the claims it was matched against."""
    pairs = [(c, v) for c, v in zip(claims, rec["verdicts"]) if c.get("kind", "paper") == "paper"]
    known = [(c, v) for c, v in pairs if v is not None]
    return sum(v == bool(c["holds"]) for c, v in known), len(known), len(pairs)


def record_note(name: str, rec: dict[str, Any], claims: list[dict[str, Any]]) -> str:
    """One sentence on a chapter's record: how many paper claims keep their verdict at the second seed set."""
    same, known, papers = kept(rec, claims)
    seeds = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in rec["second_seeds"].items())
    text = (f"At a second seed set ({seeds}; measured at commit {rec['commit']} on {rec['recorded']} by "
            f"`python -m mcreg_lib.book seed-sets {name} --record`): {same} of {known} paper claims keep their "
            f"verdict, {known - same} change")
    if known < papers:
        text += f"; for {papers - known} the record is from other code (another statement or verdict)"
    return text + "."


def chapter_note(name: str, rec: dict[str, Any] | None, items: list[dict[str, Any]]) -> str:
    """What a chapter's page and the ledger say about its second seed set: for :func:`recorded`'s ``rec`` and the
    claims it was matched against, :func:`record_note` and the paper claims whose verdict changes there; where
    ``rec`` is None, that none is recorded for these parameters."""
    if rec is None:
        return (f"No comparison at a second seed set is recorded for these parameters (`python -m mcreg_lib.book "
                f"seed-sets {name} --record` makes one at the defaults).")
    word = {True: "holds", False: "fails"}
    changed = [f"{markdown_text(c['claim'])} ({word[bool(c['holds'])]} here, {word[v]} there)"
               for c, v in zip(items, rec["verdicts"])
               if c.get("kind", "paper") == "paper" and v is not None and v != bool(c["holds"])]
    text = record_note(name, rec, items)
    return text + (" Seed-dependent, so not settled by one seed set: " + "; ".join(changed) + "." if changed else "")


def report(table: pd.DataFrame) -> str:
    """The comparison as text: the claims whose verdict changes first, paper claims before checks."""
    word = {True: "holds", False: "fails", None: "missing"}
    lines = []
    for _, r in table.sort_values(["changed", "kind"], ascending=[False, False], kind="stable").iterrows():
        second = None if pd.isna(r["second"]) else bool(r["second"])
        lines.append(f"{'CHANGES' if r['changed'] else 'same   '} {r['kind']:5} {word[bool(r['first'])]:>7} -> "
                     f"{word[second]:<7} {r['claim']}")
    changed = table[table["changed"]]
    lines.append(f"\n{len(changed)} of {len(table)} claims change verdict between the seed sets "
                 f"({int((changed['kind'] == 'paper').sum())} paper claims)")
    return "\n".join(lines)

