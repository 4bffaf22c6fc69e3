"""The upstream's submit validation as the spec describes it (§10.2, §13 U9 to U12).

Table-driven from the model's parameter specs: required keys, string length ("Max N characters"
in the description; 2500 for prompts), enum options (an int is accepted where its string is an
option, U11), numeric ranges (numeric strings accepted, U12). Unknown keys are echoed (U9) unless
the simulator runs strict.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ("payload_problem",)

_MAX_CHARS = re.compile(r"max(?:imum)?\.?\s+(\d+)\s+char", re.IGNORECASE)
_PROMPT_MAX = 2500


def payload_problem(
    payload: dict[str, Any], specs: list[dict[str, Any]], *, require_prompt: bool, strict: bool
) -> str | None:
    """Why the upstream would reject ``payload`` (``None`` if it would accept it)."""
    known = {spec["name"] for spec in specs}
    if strict:
        unknown = sorted(set(payload) - known)
        if unknown:
            return f"unknown parameter {unknown[0]}"
    for spec in specs:
        name = spec["name"]
        value = payload.get(name)
        required = spec.get("required", False) and (name != "prompt" or require_prompt)
        if value is None or value == "":
            if required:
                return f"{name} is required"
            continue
        problem = _value_problem(spec, value)
        if problem:
            return f"{name} {problem}"
    return None


def _value_problem(spec: dict[str, Any], value: Any) -> str | None:
    kind = spec.get("type", "string")
    options = spec.get("options")
    if options:
        if any(value == o and type(value) is type(o) for o in options):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in options:
            return None
        return "must be one of [" + ", ".join(f'"{o}"' for o in options) + "]"
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        found = _MAX_CHARS.search(spec.get("description", ""))
        limit = (
            int(found.group(1)) if found else (_PROMPT_MAX if spec["name"] == "prompt" else None)
        )
        return f"must be at most {limit} characters" if limit and len(value) > limit else None
    if kind in ("float", "integer"):
        number = _number(value, integer=kind == "integer")
        if number is None:
            return f"must be a{'n integer' if kind == 'integer' else ' number'}"
        low, high = _bound(spec, "min_value"), _bound(spec, "max_value")
        if (low is not None and number < low) or (high is not None and number > high):
            return f"must be between {low} and {high}"
    return None


def _bound(spec: dict[str, Any], key: str) -> float | None:
    """A range bound; a catalog may type it as a numeric string, as it does values (U12)."""
    bound = spec.get(key)
    return None if bound is None else _number(bound, integer=False)


def _number(value: Any, *, integer: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1000 else None  # beyond any float: not a number
    if integer:
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
