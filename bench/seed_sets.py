"""Run one chapter at two seed sets and report which claims change their verdict.

    PYTHONPATH=$PWD python bench/seed_sets.py norms -p preview=True \
        --a "seeds=[0,1,2]" --b "seeds=[3,4,5]"

Every ``-p NAME=VALUE`` goes to both runs; ``--a`` and ``--b`` (repeatable) give each run its own seed parameters.
The two runs' claims (``claims_path``) go to ``_build/seed_sets/NAME/{a,b}/``; the report lists every claim with its
verdict at both seed sets, and "verdict differs" where they disagree (exit status 1 if any does). Numbers are
expected to differ between seed sets; only verdicts are compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mcreg_lib.book.run import ROOT, execute, parse_parameters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--a", action="append", default=[], metavar="NAME=VALUE", help="seed parameters of run a")
    ap.add_argument("--b", action="append", default=[], metavar="NAME=VALUE", help="seed parameters of run b")
    ap.add_argument("--out", default=str(ROOT / "_build" / "seed_sets"))
    args = ap.parse_args(argv)
    common = parse_parameters(args.parameter)
    verdicts = {}
    for label, extra in (("a", args.a), ("b", args.b)):
        folder = Path(args.out) / args.name / label
        folder.mkdir(parents=True, exist_ok=True)
        params = {**common, **parse_parameters(extra), "claims_path": str((folder / f"{args.name}.json").resolve())}
        seconds = execute(args.name, params, folder / f"{args.name}.ipynb")
        print(f"seed set {label} ({' '.join(extra) or 'defaults'}): {seconds:.0f} s", flush=True)
        data = json.loads((folder / f"{args.name}.json").read_text())
        verdicts[label] = {c["claim"]: (c["kind"], c["holds"], c["ours"]) for c in data["claims"]}
    changed = 0
    for claim in dict.fromkeys([*verdicts["a"], *verdicts["b"]]):
        a, b = verdicts["a"].get(claim), verdicts["b"].get(claim)
        status = ("only in a" if b is None else "only in b" if a is None
                  else "same verdict" if a[1] == b[1] else "verdict differs")
        changed += status != "same verdict"
        kind = (a or b)[0]
        fmt = lambda x: "-" if x is None else ("holds" if x[1] else "NO")  # noqa: E731
        print(f"[{status:>15}] {kind:<5} a: {fmt(a):<5} b: {fmt(b):<5} {claim}")
    print(f"\n{changed} claim(s) differ between the seed sets")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
