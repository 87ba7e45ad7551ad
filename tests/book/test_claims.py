import json
import math

import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib.book.claims import read_claims


def test_claims_roundtrip_and_failures_kept(tmp_path):
    c = mc.Claims("demo", "Demo", parameters={"n": np.int64(5), "scales": [1e-3]})
    assert c.check("holds", paper="p", source="code", ours=np.float32(0.5), holds=np.bool_(True)) is True
    assert c.check("fails", paper="p", source="mem", ours=torch.tensor(2.0), holds=False) is False
    c.check("nan", paper="p", source="ours", ours=math.nan, holds=False)
    path = c.write(tmp_path / "sub" / "demo.json")
    data = json.loads(path.read_text())
    assert [x["holds"] for x in data["claims"]] == [True, False, False]
    assert data["claims"][2]["ours"] == "nan"
    assert data["parameters"] == {"n": 5, "scales": [0.001]}
    table = c.table()
    assert list(table["holds"]) == ["yes", "NO", "NO"]
    ledger = read_claims([path])
    assert len(ledger) == 3 and set(ledger["chapter"]) == {"demo"}
    assert c.n_holding == 1


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="source='rumour'"):
        mc.Claims("x", "X").check("c", paper="p", source="rumour", ours=1, holds=True)


def test_compare_two_builds(tmp_path):
    from mcreg_lib.book.claims import Claims, compare

    def build(folder, value, holds, text="A claim"):
        c = Claims("ch", "Chapter")
        c.check(text, paper="p", source="ours", ours=value, holds=holds)
        c.check("Second", paper="p", source="ours", ours=[1.0, 2.0], holds=True)
        c.write(tmp_path / folder / "ch.json")
        return tmp_path / folder

    a = build("a", 1.0, True)
    assert (compare(a, build("b", 1.0 + 1e-9, True))["status"] == "same").all()
    t = compare(a, build("c", 1.1, True))
    assert list(t["status"]) == ["numbers differ", "same"] and t.loc[0, "max_rel_diff"] > 0.09
    assert compare(a, build("d", 1.0, False)).loc[0, "status"] == "verdict differs"
    assert compare(a, build("e", 1.0, True, text="Other")).loc[0, "status"] == "text differs"


def test_claim_text_stays_literal_on_the_markdown_pages(tmp_path):
    """Claim statements carry ``||W||_F``, ``f_(t+1)`` and ``||M*||_*``: on the ledger and the figure map (markdown
    pages) they must render as written, not as emphasis or math."""
    from markdown_it import MarkdownIt

    from mcreg_lib.book import ledger
    from mcreg_lib.book.claims import Claims, markdown_text
    from mcreg_lib.book.figures import write_figure_map

    text = "||C(T) - C(0)||_F <= 2 sum_t eta_t (f_t - f_(t+1)); ||U||_F^2 = ||M*||_* costs $1 [x] <b>"
    md = MarkdownIt("commonmark").enable("table")
    rendered = md.render(markdown_text(text))
    assert "<em>" not in rendered and "<b>" not in rendered
    assert "(f_t - f_(t+1)); ||U||_F^2 = ||M*||_* costs $1 [x] &lt;b&gt;" in rendered

    c = Claims("balancedness", "T", parameters={"n": 3})
    c.paper(text, paper=text, source="paper", threshold=text, ours=1.0, holds=True, figure="P2-conservation")
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    (claims_dir / "balancedness.json").write_text(json.dumps(c.to_dict()))
    ledger.write_ledger(claims_dir, tmp_path / "out", chapters=["balancedness"])
    page = md.render((tmp_path / "out" / "claims_ledger.md").read_text())
    assert "<em>" not in page.split("Paper claims", 1)[1] and page.count("f_(t+1)") == 3
    figure_map = md.render(write_figure_map(claims_dir, tmp_path / "figure_map.md").read_text())
    assert "f_(t+1)); ||U||_F^2 = ||M*||_* costs" in figure_map
