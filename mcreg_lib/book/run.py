"""Execute the book's chapters with papermill.

    python -m mcreg_lib.book run-all                  # every chapter of _toc.yml, in place (what `make book` does)
    python -m mcreg_lib.book run NAME -p n=50 ...     # one chapter with your parameters, into _build/reruns/
    python -m mcreg_lib.book sync-parameters          # rewrite each chapter's parameters cell from its declaration

The chapters' MyST-markdown files (notebooks/NAME.md) are the source; papermill executes them into NAME.ipynb next to
them, so the book's cross-references keep working. Parameters given with ``-p key=value`` are parsed as Python
literals (``-p depths=[2,3]``, ``-p dtype='float64'``); the chapter's first cell validates them against the
declaration in ``mcreg_lib/chapters/NAME.py`` (``mcreg_lib.book.parameters``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = ROOT / "notebooks"


def chapter_names(root: Path = ROOT) -> list[str]:
    """Chapter notebooks in book order (the ``notebooks/...`` entries of _toc.yml)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names: list[str] = []

    def walk(entries: list[dict[str, Any]]) -> None:
        for e in entries:
            f = e.get("file", "")
            if f.startswith("notebooks/"):
                names.append(f.removeprefix("notebooks/"))
            for key in ("chapters", "sections"):
                walk(e.get(key, []))
            for part in e.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return names


def execute(name: str, parameters: dict[str, Any] | None = None, output: str | os.PathLike[str] | None = None,
            *, notebooks: Path = NOTEBOOKS, progress: bool = False) -> float:
    """Execute ``notebooks/NAME.md`` with papermill into ``output`` (default: ``notebooks/NAME.ipynb``).

    Runs in the notebooks folder, so relative paths in a chapter resolve the same way in every run. Returns seconds.
    """
    import jupytext
    import papermill

    source = notebooks / f"{name}.md"
    if not source.exists():
        available = ", ".join(sorted(p.stem for p in notebooks.glob("*.md")))
        raise ValueError(f"chapter={name!r} is not allowed: no {source}; chapters are: {available}")
    output = Path(output) if output is not None else notebooks / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # The kernel listens on localhost only; ipykernel >= 7 logs a warning about unencrypted TCP at every start,
    # which would bury the build's own output. Errors still show.
    papermill.execute_notebook(jupytext.read(source), str(output), parameters=parameters or {},
                               kernel_name="python3", cwd=str(notebooks), progress_bar=progress,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])
    return time.perf_counter() - start


def declared(name: str):
    """The chapter's declared parameters (``mcreg_lib.chapters.NAME.PARAMETERS``)."""
    from .. import chapters

    return chapters.module(name).PARAMETERS


PARAMETERS_CELL = re.compile(r"(```\{code-cell\} ipython3\n:tags: \[parameters[^\]]*\]\n\n)(.*?)(\n```)", re.S)


def parameters_cell(name: str, *, notebooks: Path = NOTEBOOKS) -> str:
    """The body of the chapter's ``parameters`` cell as it stands in ``notebooks/NAME.md``."""
    m = PARAMETERS_CELL.search((notebooks / f"{name}.md").read_text())
    if not m:
        raise ValueError(f"chapter={name!r} has no cell tagged 'parameters' in notebooks/{name}.md")
    return m.group(2)


def sync_parameters(name: str, *, notebooks: Path = NOTEBOOKS) -> bool:
    """Rewrite the chapter's parameters cell from its declaration; returns whether the file changed."""
    path = notebooks / f"{name}.md"
    text = path.read_text()
    cell = declared(name).cell()
    new, count = PARAMETERS_CELL.subn(lambda m: m.group(1) + cell + m.group(3), text, count=1)
    if not count:
        raise ValueError(f"chapter={name!r} has no cell tagged 'parameters' in {path}")
    if new != text:
        path.write_text(new)
    return new != text


def duration(seconds: float) -> str:
    """A wall time as people say it: 40 s, 7 min, 2 h 5 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def rerun_box(name: str, example: str = "") -> str:
    """Markdown for a chapter's "Rerun this chapter" box: its declared parameters, how long a run takes and the exact
    commands."""
    from .. import chapters as chapter_modules

    cold = chapter_modules.module(name).COLD_SECONDS
    rows = declared(name).table()
    lines = ["| parameter | default | preview | meaning | allowed values |",
             "|---|---|---|---|---|"]

    def code(text: str) -> str:
        return f"`{text}`" if len(text) <= 24 else text.replace("/", "/\u200b")

    for r in rows:
        lines.append(f"| `{r['name']}` | {code(r['default'])} | {code(r['preview'])} | {r['meaning']} | "
                     f"{r['allowed']} |")
    example = example or f"-p {rows[1]['name']}={rows[1]['default']}"
    pairs = [part.removeprefix("-p ").split("=", 1) for part in re.findall(r"-p \S+", example)]
    pm = "-y '{" + ", ".join(f"{k}: {val}" for k, val in pairs) + "}'"
    return "\n".join([
        "```{admonition} Rerun this chapter",
        ":class: tip, dropdown",
        "",
        "Every parameter of this chapter, as declared in `mcreg_lib/chapters/" + name + ".py`. The defaults are the",
        "protocol of the book's build; `preview=True` runs every parameter still at its default at its preview value.",
        "",
        *lines,
        "",
        "From a clone of the repository, with your values (a fresh notebook and HTML under `_build/reruns/`;",
        "the book's defaults are untouched):",
        "",
        "    make rerun CHAPTER=" + name + ' ARGS="' + example + '"',
        "",
        f"At the defaults, with nothing in the run cache, this chapter took about {duration(cold['protocol'])} on a",
        f"2-core machine; at the preview values about {duration(cold['preview'])} (`mcreg_lib/chapters/{name}.py`,",
        "`COLD_SECONDS`). Runs already in the cache (`.mcreg_cache/`, shared with `make book`) are read, not trained.",
        "",
        "The same with papermill directly (it reads `.ipynb`, so convert the MyST source first):",
        "",
        f"    jupytext --to ipynb notebooks/{name}.md -o /tmp/{name}.ipynb",
        f"    papermill /tmp/{name}.ipynb /tmp/{name}-out.ipynb -k python3 --cwd notebooks {pm}",
        "",
        "A bad value stops `make rerun` before the chapter starts (papermill: at the chapter's first cell), with an",
        "error naming the parameter, the value and what is allowed.",
        "",
        "At a second seed set (the chapter's `SECOND_SEEDS`: every seed moved off its default), with each claim's",
        "two verdicts listed, the changed ones first:",
        "",
        f"    python -m mcreg_lib.book seed-sets {name}",
        "```",
    ])


def parse_parameters(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"-p {item!r}: write parameters as name=value, e.g. -p n=50 or -p depths=[2,3]")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw  # a bare word is a string: -p dtype=float64
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcreg_lib.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run-all", help="execute every chapter in place, in book order (no provenance; see build)")
    b = sub.add_parser("build", help="the whole book: chapters through the cache, ledger, figure map, provenance, "
                                     "HTML (what `make book` and `make preview` do)")
    b.add_argument("--preview", action="store_true", help="every parameter at its preview value")
    b.add_argument("--fresh", action="store_true", help="delete the run cache first: a build from scratch")
    b.add_argument("--no-html", action="store_true", help="stop before jupyter-book")
    b.add_argument("chapters", nargs="*", help="only these chapters (default: all)")
    sub.add_parser("list", help="list the chapters")
    sub.add_parser("sync-parameters", help="rewrite each chapter's parameters cell from its declaration")
    cmp = sub.add_parser("compare-claims", help="compare two builds' claims folders (exit 1 if any claim differs)")
    cmp.add_argument("before")
    cmp.add_argument("after")
    cmp.add_argument("--rtol", type=float, default=1e-6)
    seeds = sub.add_parser("seed-sets", help="execute a chapter at its seeds and at its second seed set "
                                             "(SECOND_SEEDS) and list each claim's two verdicts")
    seeds.add_argument("name")
    seeds.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="parameters of both runs")
    seeds.add_argument("--second", action="append", default=[], metavar="NAME=VALUE",
                       help="the second seed set (default: the chapter's SECOND_SEEDS)")
    seeds.add_argument("--out", default=None, help="folder for both runs (default: _build/seed_sets/NAME)")
    seeds.add_argument("--record", action="store_true",
                       help="keep the comparison in book/seed_sets/NAME.json, shown by the chapter's claims table "
                            "and the ledger (only at the defaults and the chapter's SECOND_SEEDS)")
    run = sub.add_parser("run", help="execute one chapter with your parameters into a fresh notebook")
    run.add_argument("name")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--out", default=str(ROOT / "_build" / "reruns"), help="folder for the executed notebook")
    run.add_argument("--html", action="store_true", help="also convert the executed notebook to HTML")
    args = parser.parse_args(argv)
    from .. import settings

    shown = settings.progress_default()  # the person's choice (MCREG_PROGRESS=0 turns the build's progress off)
    os.environ.setdefault("MCREG_PROGRESS", "0")  # the kernels draw no bars of their own
    if args.command == "list":
        print("\n".join(chapter_names()))
        return 0
    if args.command == "build":
        from .build import main_build

        return main_build(preview=args.preview, fresh=args.fresh, names=args.chapters or None,
                          html=not args.no_html, progress=shown)
    if args.command == "compare-claims":
        from .claims import compare

        table = compare(args.before, args.after, rtol=args.rtol)
        print(table.to_string(index=False))
        print("\n" + table["status"].value_counts().to_string())
        return 0 if (table["status"] == "same").all() else 1
    if args.command == "seed-sets":
        from .seeds import record, report, seed_sets

        if args.record and (args.parameter or args.second):
            parser.error(f"--record is not allowed with -p/--second ({args.parameter + args.second}): a record is "
                         "the comparison at the defaults and the chapter's SECOND_SEEDS")
        out = args.out or ROOT / "_build" / "seed_sets" / args.name
        table = seed_sets(args.name, out, parse_parameters(args.parameter),
                          parse_parameters(args.second) if args.second else None, progress=shown)
        print(report(table) + f"; runs and seed_sets.csv in {out}")
        if args.record:
            print(f"recorded in {record(args.name, out)}")
        return 0
    if args.command == "sync-parameters":
        for name in chapter_names():
            print(f"{name}: {'rewritten' if sync_parameters(name) else 'up to date'}")
        return 0
    if args.command == "run-all":
        timings = []
        for name in chapter_names():
            print(f"executing notebooks/{name}.md ...", flush=True)
            seconds = execute(name)
            timings.append((name, seconds))
            print(f"  {name}: {seconds:.1f} s", flush=True)
        print("\nchapter timings:")
        for name, seconds in timings:
            print(f"  {name:<32} {seconds:8.1f} s")
        print(f"  {'total':<32} {sum(s for _, s in timings):8.1f} s")
        return 0
    params = parse_parameters(args.parameter)
    try:  # a bad parameter is one line naming it, before a kernel starts (the chapter's first cell checks it again)
        declared(args.name).resolve(**params)
    except ValueError as exc:
        raise SystemExit(f"rerun {args.name}: {exc}") from None
    where = settings.check()  # a bad MCREG_RUN_ON, a missing device or an unwritable cache fails before the chapter
    print(f"rerunning {args.name}: runs go to {where['run_on']} on {where['device']}; cache {where['cache']}")
    out_dir = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = out_dir / f"{args.name}-{stamp}.ipynb"
    params.setdefault("claims_path", str((out_dir / f"{args.name}-{stamp}-claims.json").resolve()))
    from .build import watched

    with watched(args.name, out_dir / f"{args.name}-{stamp}.progress.json", shown):
        seconds = execute(args.name, params, output, progress=not shown)  # the cells' bar when sweeps show none
    print(f"executed {args.name} in {seconds:.1f} s -> {output}")
    if args.html:
        import subprocess

        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(output)], check=True)
        print(f"html -> {output.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
