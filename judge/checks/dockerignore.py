"""Which paths a .dockerignore leaves out of the build context, by Docker's matching rules.

- one pattern a line; ``#`` starts a comment line; blank lines are ignored;
- a pattern is cleaned like a path (``./a//b/`` is ``a/b``; a leading ``/`` is dropped);
- ``*`` matches any characters but ``/``, ``?`` one such character, ``[...]`` a class,
  ``**`` any number of directories (also none), ``\\`` escapes the next character;
- a pattern also matches everything below a directory it matches (``.git`` excludes
  ``.git/config``);
- ``!pattern`` re-includes what earlier patterns excluded; the last matching pattern wins.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnorePattern:
    text: str
    regex: re.Pattern[str]
    exclusion: bool  # a `!` pattern
    line: int


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path.strip()) if path.strip() else ""
    cleaned = cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def _translate(pattern: str) -> str:
    out = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            if pattern[index + 1: index + 2] == "*":
                while pattern[index + 1: index + 2] == "*":
                    index += 1
                if index + 1 == len(pattern):
                    out.append(".*")
                elif pattern[index + 1] == "/":
                    out.append("(?:.*/)?")
                    index += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1: end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    out.append("$")
    return "".join(out)


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    patterns: list[IgnorePattern] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = _clean(line)
        if not cleaned:
            continue
        try:
            regex = re.compile(_translate(cleaned))
        except re.error:
            continue  # Docker refuses the build on a bad pattern; the build check reports that
        patterns.append(IgnorePattern(text=raw.strip(), regex=regex, exclusion=exclusion, line=number))
    return patterns


def is_excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether ``path`` (relative to the context) is left out of the build context."""
    path = _clean(path)
    parents = path.split("/")[:-1]
    matched = False
    for pattern in patterns:
        # An inclusion only matters once something matched; an exclusion only when not yet.
        if pattern.exclusion != matched:
            continue
        match = bool(pattern.regex.match(path))
        if not match:
            for depth in range(1, len(parents) + 1):
                if pattern.regex.match("/".join(parents[:depth])):
                    match = True
                    break
        if match:
            matched = not pattern.exclusion
    return matched
