"""The claims ledger: one page, built from the claims JSON that every chapter writes when it runs.

    python -m mcreg_lib.book.ledger _build/claims book [--preview]

writes ``claims_ledger.md`` (the ledger page, in the book's table of contents) and ``claims_summary.md`` (the lines on
the book's first page). Paper claims and implementation checks are counted and listed apart; a claim that does not
hold is listed as not holding; a chapter in the table of contents that wrote no claims is listed as missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from . import seeds
from .claims import KINDS, SOURCES, markdown_text as _cell


def _parameters(params: dict) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in params.items())


def _table(claims: list[dict], kind: str, second: list[str | None] | None = None) -> str:
    rows = []
    for i, c in enumerate(claims):
        if c.get("kind", "paper") != kind:
            continue
        budget = c.get("budget")
        ours = _cell(c["ours"]) + (f" ({budget['hit']} of {budget['runs']} runs hit the step budget)" if budget else "")
        row = {"claim": _cell(c["claim"])}
        if kind == "paper":
            row.update({"paper": _cell(c["paper"]), "source": c["source"], "decided by": _cell(c.get("threshold", ""))})
        row.update({"ours": ours, "holds": "yes" if c["holds"] else "**NO: does not hold**"})
        if second is not None:
            verdict = second[i]
            text = "" if verdict is None else "yes" if verdict else "NO"
            row["second seed set"] = f"**{text}: changes**" if verdict not in (None, c["holds"]) else text
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False) if rows else "None."


def counts(found: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """{kind: (holding, total)} over every chapter's claims."""
    out = {}
    for kind in KINDS:
        items = [c for data in found.values() for c in data["claims"] if c.get("kind", "paper") == kind]
        out[kind] = (sum(c["holds"] for c in items), len(items))
    return out


def write_ledger(claims_dir: str | Path, out_dir: str | Path, chapters: list[str] | None = None,
                 preview: bool = False) -> dict[str, tuple[int, int]]:
    """Write the ledger and the summary lines; returns {kind: (holding, total)}."""
    claims_dir, out_dir = Path(claims_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chapters is None:
        from .run import chapter_names

        chapters = chapter_names()
    found = {p.stem: json.loads(p.read_text()) for p in sorted(claims_dir.glob("*.json"))}
    order = [c for c in chapters if c in found] + sorted(set(found) - set(chapters))
    tally = counts(found)
    (paper_ok, paper_n), (check_ok, check_n) = tally["paper"], tally["check"]
    size = ("**Preview build**: every chapter ran at its small preview values, not at the papers' protocol, so "
            "these verdicts are a smoke test, not a reproduction." if preview else
            "**Paper-protocol build**: every chapter ran at its declared defaults, the papers' protocol.")
    summary = (f"{size} **Paper claims holding: {paper_ok} of {paper_n}**; implementation checks passing: "
               f"{check_ok} of {check_n}.")
    lines = ["# Claims ledger", "",
             "Every claim the chapters make, as measured in this build of the book. A *paper claim* states what a "
             "paper states, with its number and where that comes from, and the threshold that decides it, fixed "
             "from the paper before running; only paper claims count toward a paper's result holding. An "
             "*implementation check* is an identity or a sanity bound that cannot fail without a bug in our code. "
             "Generated from the claims each chapter writes when it runs; nothing here is typed in.", "",
             summary, "",
             "Source labels: " + "; ".join(f"**{k}**: {v}" for k, v in SOURCES.items()) + ".", ""]
    second_sets = []  # (chapter title, paper claims keeping their verdict, paper claims the record speaks for)
    for name in order:
        data = found[name]
        items = data["claims"]
        n_paper = [c for c in items if c.get("kind", "paper") == "paper"]
        n_check = [c for c in items if c.get("kind", "paper") == "check"]
        rec = seeds.recorded(name, data)
        second = rec["verdicts"] if rec else None
        if rec:
            second_sets.append((data["title"], *seeds.kept(rec, items)[:2]))
        lines += [f"## {data['title']}", "",
                  f"Chapter {{doc}}`../notebooks/{name}`: paper claims holding {sum(c['holds'] for c in n_paper)} "
                  f"of {len(n_paper)}; checks passing {sum(c['holds'] for c in n_check)} of {len(n_check)}.", "",
                  f"Measured at: {_parameters(data['parameters'])}.", "",
                  seeds.chapter_note(name, rec, items), "",
                  "### Paper claims", "", _table(items, "paper", second), "",
                  "### Implementation checks", "", _table(items, "check", second), ""]
    missing = [c for c in chapters if c not in found]
    if missing:
        lines += ["## Chapters without claims", "",
                  "These chapters wrote no claims in this build: " + ", ".join(missing) + ".", ""]
    (out_dir / "claims_ledger.md").write_text("\n".join(lines))
    if second_sets:
        summary += (" At a second seed set (recorded; the ledger says when and where): " + "; ".join(
            f"{title}, {k} of {n} paper claims keep their verdict" for title, k, n in second_sets) + ".")
    (out_dir / "claims_summary.md").write_text(
        summary + " See the {doc}`claims ledger <claims_ledger>`, the {doc}`figure map <figure_map>` and the "
        "{doc}`provenance of this build <provenance>`.\n")
    return tally


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    preview = "--preview" in args
    args = [a for a in args if a != "--preview"]
    if len(args) != 2:
        print("usage: python -m mcreg_lib.book.ledger CLAIMS_DIR OUT_DIR [--preview]", file=sys.stderr)
        return 2
    tally = write_ledger(args[0], args[1], preview=preview)
    print(f"claims ledger: paper claims {tally['paper'][0]} of {tally['paper'][1]} hold, checks "
          f"{tally['check'][0]} of {tally['check'][1]} pass -> {Path(args[1]) / 'claims_ledger.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
