"""Reading a lab directory's files as untrusted input, for the importers (labformat, killercoda).

Lab files may come from anywhere (a catalog someone shared, a Killercoda scenario), so each
way a file can hurt the importer is refused with a clear reason instead of a traceback, a
hang or a huge row:

* a file is read only if it resolves inside the lab directory (no symbolic links out), is a
  regular file (never a FIFO or a device), and holds at most ``LAB_IMPORT_MAX_FILE_BYTES``;
* it must be UTF-8 text without NUL characters (PostgreSQL stores neither invalid UTF-8 nor NUL);
* YAML may nest at most :data:`MAX_DEPTH` levels, may not refer to itself through an alias,
  and, with every alias counted as a copy of what it names, holds at most :data:`MAX_VALUES`
  values, so a "billion laughs" document is refused before anything walks it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

MAX_DEPTH = 40  # lab.yaml needs about 6 levels (a check's options); index.json about 5
MAX_VALUES = 100_000


class SourceFileError(Exception):
    """A lab file that cannot be used: ``message`` follows its name ("is not UTF-8 text ..."); 1-based ``line``."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def inside(target: Path, directory: Path) -> bool:
    """Whether ``target`` (symbolic links followed) is ``directory`` or below it.

    A path that cannot be resolved (a NUL byte, a symbolic link loop) is not inside.
    """
    try:
        return target.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def max_file_bytes() -> int:
    return int(settings.LAB_IMPORT_MAX_FILE_BYTES)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_text(path: Path, directory: Path) -> str:
    """The text of a lab file, or SourceFileError (see the module docstring for what is refused)."""
    if not inside(path, directory):
        raise SourceFileError("leads outside the lab directory (through a symbolic link)")
    limit = max_file_bytes()
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceFileError("does not exist") from None
    except OSError as exc:
        raise SourceFileError(f"cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceFileError("is not a regular file")
        if info.st_size > limit:
            raise SourceFileError(
                f"is {info.st_size} bytes; lab files may be at most {limit} bytes (LAB_IMPORT_MAX_FILE_BYTES)"
            )
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while we looked
        raise SourceFileError(f"is larger than {limit} bytes (LAB_IMPORT_MAX_FILE_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_at(data, exc.start)
        raise SourceFileError(f"is not UTF-8 text ({exc.reason} at line {line})", line) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = _line_at(data, nul)
        raise SourceFileError(f"contains a NUL character (line {line}); lab files are text", line)
    return text


# -- YAML -----------------------------------------------------------------------------------


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML document over the nesting or size limits, or one that refers to itself."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


TOO_DEEP = f"the YAML nests more than {MAX_DEPTH} levels deep"


class BoundedYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_DEPTH while composing them.

    PyYAML composes recursively, so without this a deeply nested document ends in a
    RecursionError. Aliases are checked afterwards by :func:`check_aliases`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(TOO_DEEP, self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_aliases(root: yaml.Node) -> None:
    """Refuse a node tree whose aliases, expanded, nest too deeply, hold too many values or loop.

    Each node is measured once (aliases share nodes), so this is linear in the document's size
    whatever its aliases would expand to.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases expanded
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise YamlLimitError("this anchored node contains an alias to itself", node.start_mark)
        if key not in measured:
            if level > MAX_DEPTH:
                raise YamlLimitError(TOO_DEEP, node.start_mark)
            open_nodes.add(key)
            values, depth = 1, 1
            for child in _children(node):
                child_values, child_depth = measure(child, level + 1)
                values += child_values
                depth = max(depth, child_depth + 1)
                if values > MAX_VALUES:
                    raise YamlLimitError(
                        f"the YAML holds more than {MAX_VALUES} values once its aliases are expanded", node.start_mark
                    )
            open_nodes.discard(key)
            measured[key] = (values, depth)
        values, depth = measured[key]
        if level + depth - 1 > MAX_DEPTH:
            raise YamlLimitError(f"{TOO_DEEP} once its aliases are expanded", node.start_mark)
        return values, depth

    measure(root, 1)
