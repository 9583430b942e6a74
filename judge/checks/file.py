"""`file`: a workspace file exists (or not), holds (or lacks) some text, has a mode.

    - kind: file
      path: .dockerignore          # relative to the workspace
      exists: true                  # false: the path must not exist
      type: file                    # file (default) or directory
      contains: ['^\\*\\.env$']     # regular expressions that must all match (multi-line)
      not_contains: 'SECRET'        # ... that must not match
      mode: "0755"                  # permission bits, octal, as a quoted string

Existence, contents and (on the Docker runner) the mode are read by the platform through the
runner's judge calls, with no program in the session involved; symlinks are followed only while
they stay inside the workspace. Elsewhere the mode is read with ``stat`` as the judge user.
"""

from __future__ import annotations

import re
from typing import Any

from judge.checks.base import CheckContext, CheckKind, CheckOutcome, text_of
from judge.checks.options import Option
from runners.base import clean_workspace_path

MAX_BYTES = 1_048_576


def patterns(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class FileCheck(CheckKind):
    kind = "file"
    tamper_resistant = True
    options = {
        "path": Option("str", required=True),
        "exists": Option("bool"),
        "type": Option("str", choices=("file", "directory")),
        "contains": Option("regex_list"),
        "not_contains": Option("regex_list"),
        "mode": Option("octal"),
    }
    hints = {
        "file_missing": "Check the file name and that it is in the right folder (names are case-sensitive).",
        "file_unexpected": "Remove it, or move it out of the workspace.",
        "file_wrong_type": "A file and a directory of that name cannot both exist: rename one.",
        "file_content_mismatch": "Open the file and compare it with what the step asks for.",
        "file_forbidden_content": "Remove the line the step warns about.",
        "file_mode_mismatch": "Change it with chmod, e.g. `chmod 0755 FILE`.",
    }

    def check_spec(self, spec: dict[str, Any], lab_dir: Any) -> list[tuple[tuple[str | int, ...], str]]:
        try:
            clean_workspace_path(spec["path"])
        except Exception as exc:  # WorkspacePathError: the message says what is wrong
            return [(("path",), str(exc))]
        if spec.get("exists") is False and any(key in spec for key in ("contains", "not_contains", "mode")):
            return [(("exists",), "a file that must not exist cannot have contents or a mode to check")]
        if spec.get("type") == "directory" and any(key in spec for key in ("contains", "not_contains")):
            return [(("type",), "a directory has no contents to search")]
        return []

    def default_title(self, spec: dict[str, Any]) -> str:
        return f"file {spec.get('path')}" if spec.get("exists", True) else f"no file {spec.get('path')}"

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        path = clean_workspace_path(spec["path"])
        want_dir = spec.get("type") == "directory"
        exists, is_dir = ctx.file_exists(path)
        if spec.get("exists", True) is False:
            if exists:
                outcome.fail("file_unexpected", f"{path} should not be in the workspace.")
            return outcome
        noun = "directory" if want_dir else "file"
        if not exists:
            outcome.fail("file_missing", f"There is no {noun} {path} in the workspace.")
            return outcome
        if is_dir != want_dir:
            outcome.fail("file_wrong_type", f"{path} is a {'directory' if is_dir else 'file'}, not a {noun}.")
            return outcome
        if "contains" in spec or "not_contains" in spec:
            data = ctx.read_file(path, max_bytes=MAX_BYTES)
            text = text_of(data or b"")
            for pattern in patterns(spec.get("contains")):
                if not re.search(pattern, text, re.MULTILINE):
                    outcome.fail("file_content_mismatch", f"{path} has no line matching /{pattern}/.")
            for pattern in patterns(spec.get("not_contains")):
                found = re.search(pattern, text, re.MULTILINE)
                if found:
                    line = text.count("\n", 0, found.start()) + 1
                    outcome.fail("file_forbidden_content", f"{path}, line {line}, matches /{pattern}/, "
                                                           "which it should not.")
        if "mode" in spec:
            wanted = int(spec["mode"], 8)
            actual = ctx.file_mode(path)
            if actual is None:
                outcome.fail("file_mode_mismatch", f"The mode of {path} cannot be read.")
            elif actual != wanted:
                outcome.fail("file_mode_mismatch", f"{path} has mode {actual:04o}, not {wanted:04o}.")
        return outcome
