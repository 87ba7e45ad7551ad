"""The figure map: each central figure and table of the four papers, its published numbers, and where the book
reproduces it.

A chapter ties a claim to a figure with ``claims.paper(..., figure="P3-table-1")``; :func:`write_figure_map` builds the
book's "Figure map" page from this registry and the claims of the build, so each entry lists the claims that
reproduce it with their verdicts, or says "not reproduced in this build" with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .claims import markdown_text

PAPERS = {
    "P1": "Zhao (2022), *Combining explicit and implicit regularization for efficient learning in deep networks*",
    "P2": "Du, Hu & Lee (2018), *Algorithmic regularization in learning deep homogeneous models: layers are "
          "automatically balanced*",
    "P3": "Arora, Cohen, Hu & Luo (2019), *Implicit regularization in deep matrix factorization*",
    "P4": "Razin & Cohen (2020), *Implicit regularization in deep learning may not be explainable by norms*",
}


@dataclass(frozen=True)
class Figure:
    paper: str          # P1..P4
    title: str          # what the figure or table shows
    published: str      # the published numbers we compare with, with their source ("" if none are known)
    chapter: str        # the chapter that reproduces it
    unreproduced: str = ""  # why this build may not reproduce it (shown when no claim refers to it)
    section: str = ""       # the MyST label of the section that reproduces it, if the chapter has one


FIGURES: dict[str, Figure] = {
    "P2-conservation": Figure(
        "P2", "Theorems 2.1 and 2.2: gradient flow conserves the differences of squared layer norms (per unit for "
        "ReLU nets, C_j for linear nets)", "a theorem: no numbers", "balancedness"),
    "P2-relu": Figure(
        "P2", "The ReLU experiment: a 3-layer net (1000 inputs, widths 100 and 100, 10 outputs), 1000 points, 10,000 "
        "gradient-descent steps from balanced and unbalanced initialization (P2's data are not known to us; the book "
        "uses a random teacher of the same architecture with unit-scale inputs and targets)",
        "squared layer norms near 43 (balanced) and 55 / 46 / 46 (unbalanced) at the end, as we recall them; not "
        "verified against the paper, so never the bar of a claim", "balancedness"),
    "P2-factorization": Figure(
        "P2", "Theorems 3.1 and 3.2: asymmetric factorization with decaying steps stays balanced and converges; "
        "rank 1 with a constant step converges at a linear rate", "theorems: no numbers", "balancedness"),
    "P3-table-1": Figure(
        "P3", "Table 1 (the authors' blog post): reconstruction error at m = 2000 on their 100 x 100 rank-5 instance",
        "nuclear-norm minimization 1.06e-1, depth 2 5.92e-2, depth 3 2.58e-5 [blog]", "getting_started"),
    "P3-dynamics": Figure(
        "P3", "Figure 3: singular values learned one at a time: plain gradient descent from 1e-3 I, the ten largest "
        "singular values against iterations (linear axes) at depths 1, 2, 3, m = 2000",
        "panel errors 0.819 / 0.0592 / 2.58e-5, x ranges 3e4 / 1.5e4 / 2e4 iterations [blog]; sigma_5 reaches half "
        "its final value about 1.4x (depth 2) and 1.7x (depth 3) later than sigma_1 [plot]", "depth"),
    "P3-error-vs-init": Figure(
        "P3", "Reconstruction error against the scale of initialization (1e-3 to 1e-6), depths 2, 3, 4, m = 2000 and "
        "5000, GroupRMSprop at steps 1e-3 and 3e-4, stop at training loss 1e-6",
        "error falls as the initialization shrinks; deeper is better at m = 2000 [paper]; every setting run at both "
        "steps [code]", "depth"),
    "P3-nuclear-norm": Figure(
        "P3", "Reconstruction error, nuclear norm and effective rank of gradient descent's solutions (GroupRMSprop, "
        "step 1e-3) against the scale of initialization, depths 2, 3, 4, m = 2000 and 5000, with the "
        "minimum-nuclear-norm solution and the ground truth",
        "minimum nuclear norm 210.15 at m = 2000 (below the truth's ~221) and 221.03 at m = 5000 on their instance "
        "[code]; as the initialization shrinks, gradient descent's nuclear norm rises toward the truth's while error "
        "and effective rank fall [paper]", "norms"),
    "P3-error-vs-m": Figure(
        "P3", "Reconstruction error against the number of observed entries, ranks 5 and 10, depths 2-4 and "
        "nuclear-norm minimization", "deeper factorizations recover from fewer entries, and from fewer than "
        "nuclear-norm minimization [mem]", "depth"),
    "P3-sensing": Figure(
        "P3", "Matrix sensing (appendix): n = 100, rank 5, Gaussian measurements (m = 2000 and 5000), error against "
        "the initialization (1e-3 to 1e-7), depths 2-4, with nuclear-norm minimization",
        "deeper is better, as in completion [paper]; the minimum-nuclear-norm solution has nuclear norm 220.10 at "
        "m = 2000 and 221.03 at m = 5000 on their instance [code]", "depth"),
    "P3-movielens": Figure(
        "P3", "MovieLens-100K (Figure 3, bottom row): 10,000 random training entries, depths 1-3, plain gradient "
        "descent from 1e-3 I", "smallest test MSE along the run 13.73 / 1.450 / 1.398 at depths 1 / 2 / 3 [code]",
        "depth",
        unreproduced="needs MovieLens-100K's u.data, which the book cannot ship or download: pass movielens_path"),
    "P4-2x2": Figure(
        "P4", "The 2x2 completion problem: |w11| against the loss at depths 2, 3 and 4 (random init, per-layer std "
        "8e-3, det W(0) > 0, gradient descent with step 3e-3, stopped at loss 1e-4)",
        "|w11| about 7 at loss 1e-2, 25 at 1e-3 and 70 at 1e-4 [blog]; depth 2 levels off near 1 (random) and 7 "
        "(balanced) [code]", "norms"),
    "P4-tensor": Figure(
        "P4", "Tensor completion: rank-1 tensors of order 4 (8x8x8x8) and 3 (8x8x8), CP factorization (init 1e-3) "
        "against the linear fit, reconstruction error and tensor rank against the number of observations",
        "order 4: error about 10 at 100 observations, 2.5e-4 at 500, about 1e-6 from 1000 on, tensor rank 1; the "
        "linear fit's rank rises to about 52 [blog]; order 3: error about 3e-6 from 200 on, linear rank up to about "
        "17 [code]", "norms"),
    "P1-depth-1": Figure(
        "P1", "Depth 1: gradient descent and Adam, each with and without the ratio penalty (n = 100, rank 5, "
        "m = 2000, initialization 1e-3)",
        "error on unobserved entries 1.3e-6 (Adam + penalty, lambda 1e-3, lr 1e-3), 9.8e-5 (lambda 1e-2), 0.96 (GD + "
        "penalty), 1.01 (Adam alone) [3p]; the released code's Adam step is 1e-2 [code]", "penalty",
        section="pen-depth-1"),
    "P1-deep": Figure(
        "P1", "Depths 1-5: gradient descent and Adam with and without the penalty: error, effective rank and "
        "singular values against iterations (GD to about 8e5 iterations, Adam to about 3e4 [3p])",
        "no numbers known to us; depth >= 2, Adam, lambda 0.1 diverges [3p]; P3's depth 1 / 3 errors 0.819 / "
        "2.58e-5 under GD [blog]", "penalty", section="pen-deep"),
    "P1-optimizers": Figure(
        "P1", "Appendix: which optimizers activate the penalty (Adam, AdamW, RMSprop, Adagrad, SGD with momentum, "
        "GD; and P3's normalized GD)",
        "the penalty works with certain adaptive optimizers, e.g. Adam [paper]", "penalty",
        section="pen-optimizers"),
    "P1-sample-complexity": Figure(
        "P1", "Error against the number of observed entries (1000 to 4000): depth-1 Adam + penalty, deep networks, "
        "nuclear-norm minimization, SoftImpute and OptSpace",
        "depth-1 Adam + penalty is comparable to deep networks and better than the classic methods [paper]",
        "penalty", section="pen-sample-complexity"),
    "P1-movielens": Figure(
        "P1", "MovieLens-100K, 80/20 split, depth 1 with and without the penalty, Adam at 5e-4",
        "no numbers known to us", "penalty",
        unreproduced="needs MovieLens-100K's u.data, which the book cannot ship or download: pass movielens_path",
        section="pen-movielens"),
}


def write_figure_map(claims_dir: str | Path, out: str | Path, preview: bool = False) -> Path:
    """Write the figure map page (markdown) from the registry and the build's claims."""
    claims = []
    for path in sorted(Path(claims_dir).glob("*.json")):
        data = json.loads(path.read_text())
        claims += [{**c, "chapter": data["chapter"]} for c in data["claims"]]
    lines = ["# Figure map", "",
             "Each central figure and table of the four papers, the numbers the papers (or their authors' code and "
             "posts) publish, and the claims of this book that reproduce it, with their verdicts in this build."
             + (" **This is a preview build: every verdict below was computed at the preview sizes, not at the "
                "papers' protocol.**" if preview else ""), ""]
    for paper, cite in PAPERS.items():
        lines += [f"## {paper}: {cite}", ""]
        for key, fig in FIGURES.items():
            if fig.paper != paper:
                continue
            mine = [c for c in claims if c.get("figure") == key]
            lines += [f"### {fig.title}", "", f"*Published:* {fig.published}.", "",
                      f"*Reproduced in:* {{doc}}`../notebooks/{fig.chapter}`"
                      + (f", section {{ref}}`{fig.section}`." if fig.section else "."), ""]
            if mine:
                for c in mine:
                    verdict = "holds" if c["holds"] else "**does not hold**"
                    kind = "paper claim" if c.get("kind", "paper") == "paper" else "check"
                    lines.append(f"- {kind}: {markdown_text(c['claim'])}: {verdict}.")
                lines.append("")
            else:
                reason = fig.unreproduced or "no claim of this build refers to it"
                lines += [f"*Not reproduced in this build:* {reason}.", ""]
    out = Path(out)
    out.write_text("\n".join(lines))
    return out
