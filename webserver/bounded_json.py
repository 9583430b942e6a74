"""JSON from outside (request bodies, lab files): parsed with a nesting limit and clear errors.

``json.loads`` lets anything through that fits in memory and answers a deeply nested
document (``[[[[…]]]]``) with a RecursionError, which callers rarely expect. :func:`loads`
turns every way a document can be unacceptable into one :class:`JSONInputError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_DEPTH = 32


class JSONInputError(ValueError):
    """The text is not acceptable JSON; ``line`` and ``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def _refuse_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON value")


def depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0); without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def loads(
    text: str | bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """The value of a JSON document; JSONInputError when it is not UTF-8, not JSON or nested too deeply."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    too_deep = f"nested more than {max_depth} levels deep"
    try:
        value = json.loads(text, object_pairs_hook=object_pairs_hook, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})", exc.lineno, exc.colno) from None
    except RecursionError:
        raise JSONInputError(too_deep) from None
    except JSONInputError:
        raise
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise JSONInputError(str(exc)) from None
    if depth(value) > max_depth:
        raise JSONInputError(too_deep)
    return value
