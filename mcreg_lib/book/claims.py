"""Claims as computed checks.

A chapter states each claim once, with the paper's statement or number (and where that comes from), the number we
measured and whether the claim holds on our run. The chapter writes its claims to JSON (``claims_path``); the book's
claims ledger is built from those files. A claim that does not hold is recorded as not holding, never dropped.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Source labels of PAPERS.md, plus "ours" for a claim we make ourselves.
SOURCES = {
    "code": "the authors' released code",
    "abs": "the paper's abstract",
    "plot": "read off the paper's figure",
    "3p": "a third-party reproduction",
    "mem": "recalled, not verified against the paper",
    "derived": "follows from the definitions",
    "paper": "the paper's theorem or text",
    "ours": "our own claim",
}


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


@dataclass
class Claims:
    """The claims of one chapter, with the parameters they were measured at."""

    chapter: str
    title: str
    parameters: dict[str, Any] = field(default_factory=dict)
    items: list[Claim] = field(default_factory=list)

    def check(self, claim: str, *, paper: str, source: str, ours: Any, holds: bool | np.bool_,
              detail: str = "") -> bool:
        """Record one claim; returns whether it holds (so a chapter can branch on it in prose)."""
        if source not in SOURCES:
            raise ValueError(f"source={source!r} is not allowed: source must be one of {sorted(SOURCES)}")
        ok = bool(holds)
        self.items.append(Claim(claim, paper, source, _plain(ours), ok, detail))
        return ok

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

    def table(self) -> pd.DataFrame:
        """One row per claim, for display at the end of a chapter."""
        return pd.DataFrame([
            {"claim": c.claim, "paper": f"{c.paper} [{c.source}]", "ours": _fmt(c.ours),
             "holds": "yes" if c.holds else "NO"} for c in self.items
        ])


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return ", ".join(_fmt(i) for i in x)
    return str(x)


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
