"""The claims ledger: one page, built from the claims JSON that every chapter writes when it runs.

    python -m mcreg_lib.book.ledger _build/claims book

writes ``claims_ledger.md`` (the ledger page, in the book's table of contents) and ``claims_summary.md`` (the line
on the book's first page). A claim that does not hold is listed as not holding; a chapter in the table of contents
that wrote no claims is listed as missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .claims import SOURCES


def _cell(x: object) -> str:
    if isinstance(x, float):
        text = f"{x:.4g}"
    elif isinstance(x, list):
        text = ", ".join(_cell(i) for i in x)
    else:
        text = str(x)
    return text.replace("|", "\\|").replace("\n", " ")


def _parameters(params: dict) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in params.items())


def write_ledger(claims_dir: str | Path, out_dir: str | Path, chapters: list[str] | None = None) -> tuple[int, int]:
    """Write the ledger and the summary line; returns (claims holding, claims in all)."""
    claims_dir, out_dir = Path(claims_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chapters is None:
        from .run import chapter_names

        chapters = chapter_names()
    found = {p.stem: json.loads(p.read_text()) for p in sorted(claims_dir.glob("*.json"))}
    order = [c for c in chapters if c in found] + sorted(set(found) - set(chapters))
    total = holding = 0
    lines = ["# Claims ledger", "",
             "Every claim the chapters make, as measured in this build of the book: the paper's statement or number "
             "with where it comes from, our number, the parameters it was measured at, and whether it holds. "
             "It is generated from the claims each chapter writes when it runs; nothing here is typed in.", "",
             "Source labels: " + "; ".join(f"**{k}**: {v}" for k, v in SOURCES.items()) + ".", "",
             "{summary}", ""]
    for name in order:
        data = found[name]
        n_hold = sum(c["holds"] for c in data["claims"])
        total += len(data["claims"])
        holding += n_hold
        lines += [f"## {data['title']}", "",
                  f"Chapter {{doc}}`../notebooks/{name}`: {n_hold} of {len(data['claims'])} claims hold.", "",
                  f"Measured at: {_parameters(data['parameters'])}.", "",
                  "| chapter | claim | paper | source | ours | holds |", "|---|---|---|---|---|---|"]
        for c in data["claims"]:
            verdict = "yes" if c["holds"] else "**NO: does not hold**"
            lines.append(f"| {name} | {_cell(c['claim'])} | {_cell(c['paper'])} | {c['source']} | {_cell(c['ours'])} "
                         f"| {verdict} |")
        lines.append("")
    missing = [c for c in chapters if c not in found]
    if missing:
        lines += ["## Chapters without claims", "",
                  "These chapters wrote no claims in this build: " + ", ".join(missing) + ".", ""]
    summary = (f"**Claims ledger:** {holding} of {total} claims hold in this build, across {len(order)} chapter{'s' * (len(order) != 1)}"
               + (f" ({len(missing)} chapter{'s' * (len(missing) != 1)} wrote no claims)" if missing else "") + ".")
    text = "\n".join(lines).replace("{summary}", summary)
    (out_dir / "claims_ledger.md").write_text(text)
    (out_dir / "claims_summary.md").write_text(summary + " See the {doc}`claims ledger <claims_ledger>`.\n")
    return holding, total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mcreg_lib.book.ledger CLAIMS_DIR OUT_DIR", file=sys.stderr)
        return 2
    holding, total = write_ledger(args[0], args[1])
    print(f"claims ledger: {holding} of {total} claims hold -> {Path(args[1]) / 'claims_ledger.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
