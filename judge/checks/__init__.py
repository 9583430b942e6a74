"""The judge's check kinds, one module each, and the validation the lab importer calls.

A check is a mapping with a ``kind`` (see labs/LAB_FORMAT.md, "Checks"). ``validate_checks``
reports every problem of a list of checks as ``(key path, message)`` pairs, paths relative
to the list, so labs/labformat.py can turn them into ``file:line: field: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judge.checks.base import CheckContext, CheckKind, CheckOutcome, JudgeError
from judge.checks.command import CommandCheck
from judge.checks.docker_build import DockerBuildCheck
from judge.checks.dockerfile import DockerfileCheck
from judge.checks.file import FileCheck
from judge.checks.http import HttpCheck
from judge.checks.options import Problem
from judge.checks.script import ScriptCheck

__all__ = ["CHECK_KINDS", "CheckContext", "CheckKind", "CheckOutcome", "JudgeError", "get_kind", "validate_check",
           "validate_checks"]

CHECK_KINDS: dict[str, CheckKind] = {
    kind.kind: kind
    for kind in (CommandCheck(), FileCheck(), ScriptCheck(), DockerfileCheck(), DockerBuildCheck(), HttpCheck())
}


def get_kind(name: str) -> CheckKind | None:
    return CHECK_KINDS.get(name)


def validate_check(spec: Any, lab_dir: Path | None = None) -> list[Problem]:
    """Problems of one check mapping, paths relative to it."""
    if not isinstance(spec, dict):
        return [((), "must be a mapping with a `kind`")]
    kind_name = spec.get("kind")
    kind = CHECK_KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        return [(("kind",), f"unknown check kind {kind_name!r}; the kinds are {', '.join(sorted(CHECK_KINDS))}")]
    return kind.validate(spec, lab_dir)


def validate_checks(specs: Any, lab_dir: Path | None = None) -> list[Problem]:
    """Problems of a list of checks (a lab's judge or a step's verify), paths starting at the index."""
    if not isinstance(specs, list):
        return [((), "must be a list of checks")]
    problems: list[Problem] = []
    built = False
    for index, spec in enumerate(specs):
        problems.extend(((index, *path), message) for path, message in validate_check(spec, lab_dir))
        if isinstance(spec, dict) and spec.get("kind") == "docker_build":
            built = True
        if isinstance(spec, dict) and spec.get("kind") == "http" and spec.get("image") == "built" and not built:
            problems.append(((index, "image"), "`built` needs a docker_build check earlier in the same list"))
    return problems
