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
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["index", "kind", "claim", "same_statement", "first", "second", "changed", "first_ours", "second_ours"]


def second_seeds(name: str) -> dict[str, Any]:
    """The chapter's declared second seed set (``mcreg_lib.chapters.NAME.SECOND_SEEDS``)."""
    module = importlib.import_module(f"mcreg_lib.chapters.{name}")
    second = getattr(module, "SECOND_SEEDS", None)
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
              second: dict[str, Any] | None = None) -> pd.DataFrame:
    """Execute chapter ``name`` at ``parameters`` and at ``parameters`` with ``second`` on top (default: the
    chapter's ``SECOND_SEEDS``) into ``out/first`` and ``out/second``; returns :func:`verdicts` of the two and writes
    it to ``out/seed_sets.csv``. With ``$MCREG_CACHE`` set, runs already in the cache are read, not trained."""
    from .run import execute

    declared = importlib.import_module(f"mcreg_lib.chapters.{name}").PARAMETERS
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
        execute(name, params, folder / f"{name}.ipynb")
        files.append(claims)
    table = verdicts(*files)
    table.to_csv(out / "seed_sets.csv", index=False)
    return table


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

