"""A chapter's parameters, declared once.

Each chapter module (``mcreg_lib/chapters/NAME.py``) declares its parameters in one place::

    PARAMETERS = Parameters("getting_started",
        integer("n", 100, "the hidden matrix is n x n", minimum=2, preview=20),
        integer("n_observed", 2000, "number of observed entries", minimum=1, maximum="n * n", preview=200),
        integers("depths", [1, 2, 3], "depths of the factorizations to compare", minimum=1, preview=[1, 2]),
        ...)

A declaration holds the parameter's default (the paper's protocol), its type and bounds (a bound may be an expression
of parameters declared before it, such as ``"n * n"``), its meaning and a small ``preview`` value. Everything else
is derived from it:

* the notebook's ``parameters`` cell, ``name = default  # meaning`` per line (:meth:`Parameters.cell`), which
  papermill overrides; a test holds the cell equal to the declaration (``python -m mcreg_lib.book
  sync-parameters`` rewrites it);
* :meth:`Parameters.resolve`, the chapter's first call: it validates every value in order (each failure names the
  parameter, the bad value and what is allowed), replaces the values still at their default by their preview
  values when ``preview`` is true, writes the validated values back into the notebook's namespace and returns the
  snapshot the claims record;
* the "Rerun this chapter" box (:meth:`Parameters.table`), the preview build and the tests.
"""

from __future__ import annotations

import json
import math
import numbers as _numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as v

_SAME = object()  # preview value "same as the default"
KINDS = ("integer", "number", "integers", "numbers", "choice", "flag", "path", "mapping")


def _bound(value: Any, env: dict[str, Any]) -> float | None:
    if value is None or isinstance(value, _numbers.Real):
        return value
    return eval(value, {"__builtins__": {"min": min, "max": max}}, dict(env))  # noqa: S307 - declared expressions


def _fmt_number(x: Any) -> str:
    if isinstance(x, str):
        return json.dumps(x)
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, _numbers.Integral):
        return f"{x:_}" if abs(x) >= 10_000 else str(x)
    x = float(x)
    if x != 0 and math.isfinite(x) and (abs(x) < 1e-2 or abs(x) >= 1e6):
        mantissa, exponent = f"{x:e}".split("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        if float(text) == x:
            return text
    return repr(x)


def _words(x: Any) -> str:
    """A bound in the allowed-values text: an expression as written, a whole number without its '.0'."""
    if isinstance(x, str):
        return x
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return _fmt_number(x)


def literal(x: Any) -> str:
    """Python source for a default value, written as a person would (``1e-3``, ``30_000``, ``[2, 3]``)."""
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(literal(i) for i in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(val)}" for k, val in x.items()) + "}"
    return _fmt_number(x)


@dataclass(frozen=True)
class Parameter:
    """One declared parameter (build it with :func:`integer`, :func:`number`, ... below)."""

    name: str
    default: Any
    meaning: str
    kind: str
    minimum: Any = None          # a number or an expression of earlier parameters
    maximum: Any = None
    strict: bool = False         # minimum excluded
    choices: tuple = ()
    keys: tuple = ()             # mapping: allowed keys
    optional: bool = False       # None allowed
    empty: bool = False          # lists: the empty list allowed (to skip a section)
    sort: str | None = None      # lists: "ascending" or "descending" (and duplicates dropped)
    rule: tuple[Callable[[Any, dict[str, Any]], bool], str] | None = None  # extra check and its allowed text
    preview: Any = _SAME
    group: str = ""              # a heading for the parameters cell

    def __post_init__(self) -> None:
        if "=" in self.meaning:  # papermill cannot parse a parameter line whose comment holds "="
            raise ValueError(f"parameter {self.name!r}: its meaning must not contain '=' ({self.meaning!r})")
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: kind={self.kind!r} is not one of {KINDS}")

    @property
    def preview_value(self) -> Any:
        return self.default if self.preview is _SAME else self.preview

    def allowed(self) -> str:
        """What values are allowed, in words (for the rerun box and the error messages)."""
        lo, hi = self.minimum, self.maximum
        if self.kind in ("integer", "integers"):
            base = "integer" if self.kind == "integer" else "list of integers"
        elif self.kind in ("number", "numbers"):
            base = "number" if self.kind == "number" else "list of numbers"
        elif self.kind == "choice":
            base = " or ".join(repr(c) for c in self.choices)
        elif self.kind == "flag":
            base = "True or False"
        elif self.kind == "path":
            base = "a file path"
        else:
            base = "a dict from " + ", ".join(self.keys) + " to numbers > 0"
        if self.kind in ("integer", "integers", "number", "numbers"):
            if self.strict and lo is not None and hi is None:
                base += f" > {_words(lo)}"
            elif lo is not None and hi is not None:
                base += f" from {_words(lo)} to {_words(hi)}" + (f" (excluding {_words(lo)})" if self.strict else "")
            elif lo is not None:
                base += f", at least {_words(lo)}"
            elif hi is not None:
                base += f", at most {_words(hi)}"
        if self.rule is not None:
            base += f"; {self.rule[1]}"
        if self.optional:
            base += ", or None"
        if self.empty:
            base += "; empty to skip"
        return base

    def validate(self, value: Any, env: dict[str, Any]) -> Any:
        """The validated value (a ValueError naming the parameter if it is not allowed); env: earlier parameters."""
        if value is None and self.optional:
            return None
        if self.empty and isinstance(value, (list, tuple)) and not value:
            return []
        name, lo, hi = self.name, _bound(self.minimum, env), _bound(self.maximum, env)
        if self.kind == "integer":
            out: Any = v.integer(name, value, lo, hi)
        elif self.kind == "number":
            out = v.real(name, value, lo, hi, strict_minimum=self.strict)
        elif self.kind == "integers":
            out = v.int_list(name, value)
            out = [v.integer(f"{name}[{i}]", x, lo, hi) for i, x in enumerate(out)]
        elif self.kind == "numbers":
            out = v.real_list(name, value)
            out = [v.real(f"{name}[{i}]", x, lo, hi, strict_minimum=self.strict) for i, x in enumerate(out)]
        elif self.kind == "choice":
            out = v.choice(name, value, self.choices)
        elif self.kind == "flag":
            if not isinstance(value, bool):
                v.fail(name, value, "True or False")
            out = value
        elif self.kind == "path":
            if not isinstance(value, str) or not value:
                v.fail(name, value, self.allowed())
            out = value
        else:
            if not isinstance(value, dict) or not value:
                v.fail(name, value, self.allowed())
            out = {v.choice(f"{name} key", k, self.keys): v.positive(f"{name}[{k!r}]", x) for k, x in value.items()}
        if self.sort is not None:
            out = sorted(set(out), reverse=self.sort == "descending")
        if self.rule is not None and not self.rule[0](out, env):
            v.fail(name, value, self.allowed())
        return out


def _make(kind: str) -> Callable[..., Parameter]:
    def make(name: str, default: Any, meaning: str, **options: Any) -> Parameter:
        return Parameter(name, default, meaning, kind, **options)

    make.__name__ = kind
    make.__doc__ = f"A parameter of kind {kind!r} (see Parameter for the options)."
    return make


integer, number, integers, numbers, choice, flag, path, mapping = (_make(k) for k in KINDS)


def positive(name: str, default: Any, meaning: str, **options: Any) -> Parameter:
    """A number > 0."""
    return Parameter(name, default, meaning, "number", minimum=0.0, strict=True, **options)


def dtype(default: str = "float32", meaning: str = "floating-point type of training", **options: Any) -> Parameter:
    return Parameter("dtype", default, meaning, "choice", choices=("float32", "float64"), **options)


@dataclass(frozen=True)
class Parameters:
    """A chapter's declared parameters, in order (a bound may refer to a parameter declared before it)."""

    chapter: str
    items: tuple[Parameter, ...] = field(default_factory=tuple)

    def __init__(self, chapter: str, *items: Parameter) -> None:
        object.__setattr__(self, "chapter", chapter)
        standard = (flag("preview", False, "run at the small preview values of every parameter still at its default",
                         preview=True),)
        claims = path("claims_path", f"../_build/claims/{chapter}.json",
                      "where the chapter writes its claims as JSON")
        object.__setattr__(self, "items", standard + tuple(items) + (claims,))
        names = [p.name for p in self.items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"chapter {chapter!r} declares {dup} twice")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.items]

    def __getitem__(self, name: str) -> Parameter:
        for p in self.items:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.items}

    def previews(self) -> dict[str, Any]:
        """The preview value of every parameter (and ``preview=True``)."""
        out = {p.name: p.preview_value for p in self.items}
        out["preview"] = True
        return out

    def resolve(self, namespace: dict[str, Any] | None = None, **given: Any) -> dict[str, Any]:
        """Validate the chapter's parameters and return their snapshot (name -> value, in declared order).

        namespace: the notebook's globals; the values are read from it and the validated ones written back.
        given: values for a call from code (override the namespace). With ``preview`` true, every parameter still at
        its default takes its preview value. Unknown names in ``given`` are an error.
        """
        unknown = sorted(set(given) - set(self.names))
        if unknown:
            raise ValueError(f"{unknown} are not parameters of chapter {self.chapter!r}: its parameters are "
                             f"{', '.join(self.names)}")
        source = dict(namespace or {})
        source.update(given)
        preview = self["preview"].validate(source.get("preview", False), {})
        out: dict[str, Any] = {}
        for p in self.items:
            value = source.get(p.name, p.default)
            if preview and p.name != "preview" and _equal(value, p.default):
                value = p.preview_value
            out[p.name] = p.validate(value, out)
        if namespace is not None:
            namespace.update(out)
        return out

    def changed(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values that differ from the declared defaults (the provenance page lists them)."""
        return {k: val for k, val in values.items() if k in self.names and k != "claims_path"
                and not _equal(val, self[k].default)}

    def cell(self) -> str:
        """The notebook's parameters cell: ``name = default  # meaning`` per line, with group headings."""
        lines, group = [], ""
        width = max(len(f"{p.name} = {literal(p.default)}") for p in self.items) + 2
        width = min(width, 40)
        for p in self.items:
            if p.group != group and p.group:
                lines.append(f"# {p.group}")
            group = p.group or group
            code = f"{p.name} = {literal(p.default)}"
            lines.append(f"{code:<{max(width, len(code) + 2)}}# {p.meaning}")
        return "\n".join(lines)

    def table(self) -> list[dict[str, str]]:
        """One row per parameter: name, default, preview, meaning, allowed values."""
        return [{"name": p.name, "default": literal(p.default), "preview": literal(p.preview_value),
                 "meaning": p.meaning, "allowed": p.allowed()} for p in self.items]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, _numbers.Real) and isinstance(b, _numbers.Real) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    return a == b
