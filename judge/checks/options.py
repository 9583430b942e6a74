"""A small declarative schema for check options, used at import time and again before a run.

Each check kind lists its options as ``{name: Option(...)}``. ``validate`` returns every
problem as ``(key path, message)``, with paths relative to the check mapping, so the lab
importer can point at ``judge[2].max_size_mb`` with a line number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from labs.labformat import describe_value

KeyPath = tuple[str | int, ...]
Problem = tuple[KeyPath, str]

CODE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}\Z")


# One wording for values in error messages, shared with the lab importer.
describe = describe_value


@dataclass(frozen=True)
class Option:
    """One option. ``type`` is one of the names handled in ``_check_value``."""

    type: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    fields: dict[str, Option] = field(default_factory=dict)
    help: str = ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not (isinstance(value, float) and not math.isfinite(value))


def _range_text(option: Option) -> str:
    if option.min is not None and option.max is not None:
        return f" from {option.min:g} to {option.max:g}"
    if option.min is not None:
        return f" ≥ {option.min:g}"
    if option.max is not None:
        return f" ≤ {option.max:g}"
    return ""


def _in_range(value: float, option: Option) -> bool:
    return (option.min is None or value >= option.min) and (option.max is None or value <= option.max)


def _check_regex(value: Any, path: KeyPath) -> list[Problem]:
    if not isinstance(value, str) or not value:
        return [(path, f"must be a non-empty regular expression string (got {describe(value)})")]
    try:
        re.compile(value)
    except re.error as exc:
        return [(path, f"is not a valid regular expression: {exc}")]
    return []


def _check_value(value: Any, option: Option, path: KeyPath) -> list[Problem]:
    kind = option.type
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            return [(path, f"must be a non-empty string (got {describe(value)})")]
        if option.choices and value not in option.choices:
            return [(path, f"must be one of {', '.join(option.choices)} (got {describe(value)})")]
        return []
    if kind == "text":  # any string, even empty (stdin input)
        return [] if isinstance(value, str) else [(path, f"must be a string (got {describe(value)})")]
    if kind == "bool":
        return [] if isinstance(value, bool) else [(path, f"must be true or false (got {describe(value)})")]
    if kind == "int":
        if not _is_int(value) or not _in_range(value, option):
            return [(path, f"must be an integer{_range_text(option)} (got {describe(value)})")]
        return []
    if kind == "number":
        if not _is_number(value) or not _in_range(float(value), option):
            return [(path, f"must be a number{_range_text(option)} (got {describe(value)})")]
        return []
    if kind == "regex":
        return _check_regex(value, path)
    if kind == "regex_list":
        if isinstance(value, str):
            return _check_regex(value, path)
        if not isinstance(value, list) or not value:
            return [(path, f"must be a regular expression or a non-empty list of them (got {describe(value)})")]
        return [p for index, item in enumerate(value) for p in _check_regex(item, (*path, index))]
    if kind == "str_list":
        if not isinstance(value, list) or not value:
            return [(path, f"must be a non-empty list of strings (got {describe(value)})")]
        return [
            ((*path, index), f"must be a non-empty string (got {describe(item)})")
            for index, item in enumerate(value)
            if not isinstance(item, str) or not item.strip()
        ]
    if kind == "argv":  # a shell command line, or an argument vector
        if isinstance(value, str):
            return [] if value.strip() else [(path, "must not be empty")]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value) and value[0]:
            return []
        return [(path, f"must be a command string or a non-empty list of strings (got {describe(value)})")]
    if kind == "octal":
        # YAML reads 0644 as the integer 420 and 644 as 644: a string says what is meant.
        if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
            return [(path, f'must be an octal mode as a quoted string, e.g. "0644" (got {describe(value)})')]
        return []
    if kind == "str_map":
        if not isinstance(value, dict):
            return [(path, f"must be a mapping of names to strings (got {describe(value)})")]
        return [
            ((*path, str(key)), f"must be a string (got {describe(item)})")
            for key, item in value.items()
            if not isinstance(item, str) or not isinstance(key, str)
        ]
    if kind == "codes":
        if not isinstance(value, dict):
            return [(path, f"must be a mapping from failure codes to codes (got {describe(value)})")]
        problems: list[Problem] = []
        for key, item in value.items():
            for candidate, where in ((key, (*path, str(key))), (item, (*path, str(key)))):
                if not isinstance(candidate, str) or not CODE_RE.match(candidate):
                    problems.append((where, f"must be a failure code: lower-case letters, digits, _ and - "
                                            f"(got {describe(candidate)})"))
                    break
        return problems
    if kind == "mapping":
        if not isinstance(value, dict):
            return [(path, f"must be a mapping (got {describe(value)})")]
        return validate(value, option.fields, path)
    if kind == "bool_or_mapping":
        if isinstance(value, bool):
            return []
        if not isinstance(value, dict):
            return [(path, f"must be true, false or a mapping (got {describe(value)})")]
        return validate(value, option.fields, path)
    raise ValueError(f"unknown option type {kind}")


def validate(data: dict[str, Any], schema: dict[str, Option], path: KeyPath = ()) -> list[Problem]:
    """Every problem of ``data`` against ``schema``: unknown keys, missing keys, wrong values."""
    problems: list[Problem] = []
    for key in data:
        if not isinstance(key, str) or key not in schema:
            allowed = ", ".join(sorted(schema))
            problems.append(((*path, str(key)), f"unknown key; allowed keys are {allowed}"))
    for name, option in schema.items():
        if name not in data:
            if option.required:
                problems.append(((*path, name), "is required"))
            continue
        problems.extend(_check_value(data[name], option, (*path, name)))
    return problems
