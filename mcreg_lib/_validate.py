"""Input checks shared by the library: each failure names the parameter, the value and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is not allowed: {name} must be {allowed}.")


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not a whole number in [minimum, maximum]."""
    bounds = _bounds(minimum, maximum)
    allowed = f"an integer{bounds}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            fail(name, value, f"{allowed} (got type {type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        fail(name, value, allowed)
    return value


def real(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Return ``value`` as a finite float, or raise if it is not a number in the allowed range."""
    if strict_minimum and minimum is not None:
        allowed = f"a finite number > {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
    else:
        allowed = f"a finite number{_bounds(minimum, maximum)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, value, f"{allowed} (got type {type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        fail(name, value, allowed)
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        fail(name, value, allowed)
    if maximum is not None and value > maximum:
        fail(name, value, allowed)
    return value


def positive(name: str, value: Any) -> float:
    return real(name, value, minimum=0.0, strict_minimum=True)


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def dtype(value: Any) -> torch.dtype:
    """Accept 'float32'/'float64' or the torch dtype itself."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    fail("dtype", value, "'float32' or 'float64'")
    raise AssertionError  # unreachable


def dtype_name(value: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[value]


def int_list(name: str, values: Any, minimum: int | None = None) -> list[int]:
    """A non-empty list of integers (papermill passes lists; a lone int is accepted too)."""
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        fail(name, values, "a non-empty list of integers")
    out = [integer(f"{name}[{i}]", v, minimum) for i, v in enumerate(values)]
    if not out:
        fail(name, values, "a non-empty list of integers")
    return out


def real_list(name: str, values: Any, minimum: float | None = None, strict_minimum: bool = False) -> list[float]:
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        fail(name, values, "a non-empty list of numbers")
    out = [real(f"{name}[{i}]", v, minimum, strict_minimum=strict_minimum) for i, v in enumerate(values)]
    if not out:
        fail(name, values, "a non-empty list of numbers")
    return out


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""
