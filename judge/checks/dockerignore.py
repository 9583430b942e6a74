"""Which paths a .dockerignore leaves out of the build context, by Docker's matching rules.

Patterns are parsed and matched with the docker SDK (``docker.utils.build.Pattern``, which
cleans a pattern like a path, and ``docker.utils.fnmatch``, which does ``*``, ``?``, ``[...]``
and ``**``). This module only adds what the SDK leaves to its callers or gets wrong against
the real ``docker build`` (measured with docker CLI 28):

- reading the file: one pattern a line, ``#`` comment lines and blank lines skipped, as the
  SDK's own ``APIClient.build`` does before it calls the matcher;
- ``\\`` escapes the next character (``star\\*.txt``): the SDK's fnmatch has no escapes, so an
  escaped ``*``, ``?``, ``[`` or ``\\`` is handed to it as a one-character class;
- matching is case-sensitive, so we call the SDK's ``fnmatchcase`` (``PatternMatcher`` uses
  ``fnmatch``, which lower-cases: ``*.md`` would leave out ``README.MD``, Docker does not);
- the last matching pattern wins, and a pattern also matches everything below a directory it
  matches at ANY depth: ``PatternMatcher.matches`` only tries the parent with as many
  components as the pattern, so ``**/__pycache__`` misses ``__pycache__/x.pyc`` and
  ``pkg/sub/__pycache__/x.pyc``, which Docker leaves out;
- ``[^a]`` negates a class, as in Go's filepath.Match (the SDK reads ``^`` literally);
- ``.dockerignore`` itself can be left out (``PatternMatcher`` always re-includes it; Docker
  keeps it out of ``COPY .``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from docker.utils.build import Pattern
from docker.utils.fnmatch import fnmatchcase

_ESCAPED = re.compile(r"\\(.)")


@dataclass(frozen=True)
class IgnorePattern:
    text: str
    pattern: Pattern  # the SDK's parsed pattern
    exclusion: bool  # a `!` pattern
    line: int

    def matches(self, path: str) -> bool:
        return fnmatchcase(path, self.pattern.cleaned_pattern)


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path.strip()) if path.strip() else ""
    cleaned = cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return f"[{char}]" if char in "*?[\\" else char


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    patterns: list[IgnorePattern] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        # Go's `[^a]` negates a class, as `[!a]` does in the SDK's fnmatch.
        body = _ESCAPED.sub(_unescape, line[1:] if exclusion else line).replace("[^", "[!")
        # Pattern() drops one leading "!" (its exception mark); we decide that from the raw line,
        # so an escaped `\!name` stays a literal "!" rather than turning into an exception.
        pattern = Pattern("!" + body)
        if not pattern.dirs:
            continue  # e.g. `.` or `/`: Docker ignores it
        try:
            fnmatchcase("", pattern.cleaned_pattern)  # compiles (and caches) the regex
        except re.error:
            continue  # Docker refuses the build on a bad pattern; the build check reports that
        patterns.append(IgnorePattern(text=line, pattern=pattern, exclusion=exclusion, line=number))
    return patterns


def is_excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether ``path`` (relative to the context) is left out of the build context."""
    path = _clean(path)
    parts = path.split("/")
    candidates = ["/".join(parts[:depth]) for depth in range(len(parts), 0, -1)]
    matched = False
    for pattern in patterns:
        # An inclusion only matters once something matched; an exclusion only when not yet.
        if pattern.exclusion != matched:
            continue
        if any(pattern.matches(candidate) for candidate in candidates):
            matched = not pattern.exclusion
    return matched
