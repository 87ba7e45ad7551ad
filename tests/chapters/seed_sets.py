"""Rerun a chapter at a second seed set and list the claims whose verdict changes.

    PYTHONPATH=$PWD MCREG_CACHE=/path/to/cache python tests/chapters/seed_sets.py balancedness
    PYTHONPATH=$PWD python tests/chapters/seed_sets.py getting_started --preview
    PYTHONPATH=$PWD python tests/chapters/seed_sets.py balancedness -p relu_steps=2000 --second seed=2 --second seeds=[6,7,8]

The chapter runs twice with papermill (the book's runner, ``mcreg_lib.book.run.execute``): once with the given
parameters (``-p``, on top of ``--preview`` if given) and once with the second seed set on top of them (``--second``;
default: :data:`SECOND` for the chapter). Each run writes its claims to a JSON file; the two are compared with
``mcreg_lib.book.claims.compare`` and every claim is printed with its two verdicts, the ones that differ first. With
``$MCREG_CACHE`` set, runs already in the cache are read, not trained. The exit status is 0 whether or not a verdict
changes (a change is a finding to report, not an error); 2 if a run fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

# The second seed set of each chapter that has one: every seed the chapter uses, moved off its defaults.
SECOND = {
    "balancedness": {"seed": 1, "seeds": [3, 4, 5]},
    "getting_started": {"seeds": [5, 6, 7, 8, 9], "check_seeds": [0, 1, 2, 3, 4]},
}


def run_twice(name: str, parameters: dict, second: dict, out: Path) -> tuple[Path, Path]:
    """Execute ``name`` with ``parameters`` and with ``parameters | second``; returns the two claims files."""
    from mcreg_lib.book.run import execute

    files = []
    for label, extra in (("first", {}), ("second", second)):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        claims = folder / f"{name}.json"
        params = {**parameters, **extra, "claims_path": str(claims)}
        print(f"{name}, {label} seed set: {json.dumps({k: v for k, v in params.items() if k != 'claims_path'})}",
              flush=True)
        execute(name, params, folder / f"{name}.ipynb")
        files.append(claims)
    return files[0], files[1]


def verdicts(first: Path, second: Path) -> list[dict]:
    """One row per claim of the first run: kind, claim, the two verdicts and whether the text changed."""
    a = json.loads(first.read_text())["claims"]
    b = json.loads(second.read_text())["claims"]
    rows = []
    for i, ca in enumerate(a):
        cb = b[i] if i < len(b) else None
        rows.append({"kind": ca.get("kind", "paper"), "claim": ca["claim"], "first": ca["holds"],
                     "second": None if cb is None else cb["holds"],
                     "same_text": cb is not None and cb["claim"] == ca["claim"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    from mcreg_lib.book.run import parse_parameters

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapter")
    parser.add_argument("--preview", action="store_true", help="every parameter at its preview value")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--second", action="append", default=[], metavar="NAME=VALUE",
                        help="the second seed set (default: SECOND[chapter])")
    parser.add_argument("--out", default=None, help="folder for the two runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    parameters = {**({"preview": True} if args.preview else {}), **parse_parameters(args.parameter)}
    second = parse_parameters(args.second) if args.second else SECOND.get(args.chapter)
    if not second:
        parser.error(f"no second seed set known for {args.chapter!r}: give --second name=value")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"seed-sets-{args.chapter}-"))
    try:
        first, other = run_twice(args.chapter, parameters, second, out)
    except Exception as exc:  # papermill reports the failing cell
        print(f"a run failed: {exc}", file=sys.stderr)
        return 2
    rows = sorted(verdicts(first, other), key=lambda r: (r["first"] == r["second"], r["kind"] != "paper"))
    changed = [r for r in rows if r["first"] != r["second"]]
    print(f"\n{len(changed)} of {len(rows)} claims change verdict between the seed sets "
          f"({sum(r['kind'] == 'paper' for r in changed)} paper claims); runs in {out}")
    for r in rows:
        mark = "CHANGES" if r["first"] != r["second"] else "same   "
        verdict = lambda x: "holds" if x else ("missing" if x is None else "fails")  # noqa: E731
        print(f"{mark} {r['kind']:5} {verdict(r['first']):>7} -> {verdict(r['second']):<7} {r['claim']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
