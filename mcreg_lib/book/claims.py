"""Claims as computed verdicts, of two kinds.

* A **paper claim** (:meth:`Claims.paper`) states what a paper states, in its words and with its number and source,
  and a threshold fixed from the paper *before* running; our number decides it, and it may fail. Only paper claims
  count toward "the paper's result holds".
* An **implementation check** (:meth:`Claims.check`) is an identity, a sanity bound or anything that cannot fail
  without a bug in our code: valuable, but not evidence about the paper.

A claim whose verdict depends on a budget (steps, seeds, sizes) records how many of its runs hit the budget
(``budget=(hit, runs)``). Each may name the figure or table of the paper it reproduces (``figure=``, an id of
:mod:`mcreg_lib.book.figures`). The chapter writes its claims to JSON (``claims_path``); the book's ledger, the
figure map and the first page are built from those files. A claim that does not hold is recorded as not holding,
never dropped.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Where a paper's statement or number comes from, plus "ours" for a claim we make ourselves.
SOURCES = {
    "paper": "the paper's theorem or text",
    "abs": "the paper's abstract",
    "blog": "the authors' blog post on the paper (its tables and figures)",
    "plot": "read off the paper's figure",
    "code": "the authors' released code",
    "3p": "a third-party reproduction",
    "mem": "recalled, not verified against the paper",
    "derived": "follows from the definitions",
    "ours": "our own claim",
}
KINDS = {"paper": "paper claim", "check": "implementation check"}


def _plain(x: Any) -> Any:
    """JSON-safe copies of numpy / torch scalars and containers (NaN and inf become strings)."""
    if isinstance(x, dict):
        return {str(k): _plain(val) for k, val in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(val) for val in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if x is None or isinstance(x, str):
        return x
    return str(x)


@dataclass
class Claim:
    claim: str
    paper: str
    source: str
    ours: Any
    holds: bool
    detail: str = ""
    kind: str = "paper"
    threshold: str = ""
    budget: dict[str, int] | None = None
    figure: str | None = None


@dataclass
class Claims:
    """The claims of one chapter, with the parameters they were measured at."""

    chapter: str
    title: str
    parameters: dict[str, Any] = field(default_factory=dict)
    items: list[Claim] = field(default_factory=list)

    def paper(self, claim: str, *, paper: str, source: str, threshold: str, ours: Any, holds: bool | np.bool_,
              detail: str = "", budget: tuple[int, int] | None = None, figure: str | None = None) -> bool:
        """A paper claim: ``claim`` in the paper's words, ``paper`` its statement or number, ``source`` where that
        comes from (:data:`SOURCES`), ``threshold`` what decides it, fixed from the paper before running; ``budget``
        (runs that hit their step budget, runs) when the verdict depends on a budget. Returns whether it holds."""
        if not threshold:
            raise ValueError("threshold='' is not allowed: a paper claim states the threshold that decides it")
        return self._add(Claim(claim, paper, source, _plain(ours), bool(holds), detail, "paper", threshold,
                               _budget(budget), figure))

    def check(self, claim: str, *, ours: Any, holds: bool | np.bool_, paper: str = "", source: str = "derived",
              detail: str = "", threshold: str = "", budget: tuple[int, int] | None = None,
              figure: str | None = None) -> bool:
        """An implementation check (an identity, a sanity bound): recorded apart from the paper claims."""
        return self._add(Claim(claim, paper, source, _plain(ours), bool(holds), detail, "check", threshold,
                               _budget(budget), figure))

    def _add(self, c: Claim) -> bool:
        if c.source not in SOURCES:
            raise ValueError(f"source={c.source!r} is not allowed: source must be one of {sorted(SOURCES)}")
        if c.figure is not None:
            from .figures import FIGURES

            if c.figure not in FIGURES:
                raise ValueError(f"figure={c.figure!r} is not allowed: figure must be one of {sorted(FIGURES)}")
        self.items.append(c)
        return c.holds

    @property
    def n_holding(self) -> int:
        return sum(c.holds for c in self.items)

    def to_dict(self) -> dict[str, Any]:
        params = {k: val for k, val in self.parameters.items() if k != "claims_path"}  # where, not what, it measured
        return {"chapter": self.chapter, "title": self.title, "parameters": _plain(params),
                "claims": [asdict(c) for c in self.items]}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the claims as JSON, atomically (a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        os.replace(tmp, path)
        return path

    def seed_note(self) -> str:
        """A sentence for the chapter's page on its recorded second seed set: how many paper claims keep their
        verdict there and which change (:func:`mcreg_lib.book.seeds.chapter_note`, the ledger's words)."""
        from .seeds import chapter_note, recorded

        data = self.to_dict()
        return chapter_note(self.chapter, recorded(self.chapter, data), data["claims"])

    def table(self) -> pd.DataFrame:
        """One row per claim, for display at the end of a chapter: paper claims first, then checks. Where the
        chapter has a recorded comparison at a second seed set that applies to these claims
        (:mod:`mcreg_lib.book.seeds`), a last column gives each claim's verdict there ("" where the record does not
        speak for the claim)."""
        rows = [{"kind": KINDS[c.kind], "claim": c.claim,
                 "paper": f"{c.paper} [{c.source}]" if c.paper else "",
                 "decided by": c.threshold, "ours": fmt(c.ours) + _budget_text(c.budget),
                 "holds": "yes" if c.holds else "NO"} for c in self.items]
        from .seeds import recorded

        rec = recorded(self.chapter, self.to_dict())
        if rec is not None:
            column = f"at the second seed set (commit {rec['commit']})"
            for row, verdict in zip(rows, rec["verdicts"]):
                row[column] = "" if verdict is None else "yes" if verdict else "NO"
        order = {"paper claim": 0, "implementation check": 1}
        return pd.DataFrame(rows).sort_values("kind", key=lambda k: k.map(order), kind="stable") if rows else \
            pd.DataFrame(rows)


def _budget(budget: tuple[int, int] | None) -> dict[str, int] | None:
    if budget is None:
        return None
    hit, runs = (int(x) for x in budget)
    if not 0 <= hit <= runs:
        raise ValueError(f"budget={budget!r} is not allowed: give (runs that hit the budget, runs), 0 <= hit <= runs")
    return {"hit": hit, "runs": runs}


def _budget_text(budget: dict[str, int] | None) -> str:
    return "" if not budget else f" ({budget['hit']} of {budget['runs']} runs hit the step budget)"


def fmt(x: Any) -> str:
    """A claim's number for a table: 4 significant digits, lists joined."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return ", ".join(fmt(i) for i in x)
    return str(x)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>$~|])")


def markdown_text(x: Any) -> str:
    """``fmt(x)`` as literal text inside a markdown page (a table cell or a list item): the characters markdown (and
    MyST's dollar math) would read as markup escaped, newlines joined, so ``||W||_F ... f_(t+1)`` stays as written
    instead of turning into emphasis."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", fmt(x)).replace("\n", " ")


def read_claims(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """All claims of the given JSON files as one table (chapter, claim, paper, source, ours, holds, parameters)."""
    rows = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        for c in data["claims"]:
            rows.append({"chapter": data["chapter"], "title": data["title"], **c,
                         "parameters": json.dumps(data["parameters"], sort_keys=True)})
    return pd.DataFrame(rows)


def _numbers(x: Any) -> list[float] | None:
    """The numbers in a claim's ``ours`` (a number or a list of numbers), else None."""
    items = x if isinstance(x, list) else [x]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return None
        out.append(float(item))
    return out


def compare(before: str | os.PathLike[str], after: str | os.PathLike[str], rtol: float = 1e-6,
            atol: float = 1e-12) -> pd.DataFrame:
    """Compare two builds' claims (folders of ``NAME.json``): one row per claim of either build with ``status``
    "same" (same statement, same verdict, numbers within ``rtol``/``atol``), "numbers differ", "verdict differs",
    "text differs" or "missing", and the largest relative difference of its numbers."""
    rows = []
    a_files = {p.stem: p for p in Path(before).glob("*.json")}
    b_files = {p.stem: p for p in Path(after).glob("*.json")}
    for chapter in sorted(set(a_files) | set(b_files)):
        a = json.loads(a_files[chapter].read_text())["claims"] if chapter in a_files else []
        b = json.loads(b_files[chapter].read_text())["claims"] if chapter in b_files else []
        for i in range(max(len(a), len(b))):
            ca, cb = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            row = {"chapter": chapter, "index": i, "claim": (ca or cb)["claim"], "max_rel_diff": math.nan}
            if ca is None or cb is None:
                row["status"] = "missing"
            elif ca["claim"] != cb["claim"]:
                row["status"] = "text differs"
            elif ca["holds"] != cb["holds"]:
                row["status"] = "verdict differs"
            else:
                na, nb = _numbers(ca["ours"]), _numbers(cb["ours"])
                if na is None or nb is None or len(na) != len(nb):
                    same = ca["ours"] == cb["ours"]
                    row["max_rel_diff"] = 0.0 if same else math.inf
                else:
                    diffs = [abs(x - y) / max(abs(x), abs(y), 1e-300) if abs(x - y) > atol else 0.0
                             for x, y in zip(na, nb)]
                    same = all(d <= rtol for d in diffs)
                    row["max_rel_diff"] = max(diffs, default=0.0)
                row["status"] = "same" if same else "numbers differ"
                row["paper_text_changed"] = ca.get("paper") != cb.get("paper")
            rows.append(row)
    return pd.DataFrame(rows)
