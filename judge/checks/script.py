"""`script`: a script shipped with the lab, copied into the session and run; exit 0 passes.

    - kind: script
      script: |                     # inline text ...
        #!/bin/bash
        test -f /workspace/Dockerfile
      file: checks/step2.sh         # ... or a file relative to the lab directory (one of the two)
      args: [--strict]
      timeout: 30
      user: judge                   # judge (default), learner or root
      workdir: app                  # relative to the workspace
      env: {NAME: value}

Killercoda's `verify` scripts become this kind. The script goes to a fresh file under /tmp
through standard input (so it needs no write access to the workspace) and runs with the
interpreter of its ``#!`` line, or ``sh`` without one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from judge.checks.base import JUDGE_USER, CheckContext, CheckKind, CheckOutcome, JudgeError, text_of
from judge.checks.command import OUTPUT_NOTE_LIMIT
from judge.checks.options import Option, Problem
from judge.results import DETAIL_LIMIT, truncate_note

# Stores standard input in a temporary file, then runs: <interpreter words> FILE <args>.
# $1 is the number of interpreter words that follow it.
STAGE_AND_RUN = """
f=$(mktemp /tmp/labs-judge-check.XXXXXX) || exit 125
cat > "$f" || exit 125
n=$1; shift
i=0; added=0
for a do
  if [ "$i" -eq "$n" ]; then set -- "$@" "$f"; added=1; fi
  set -- "$@" "$a"; shift; i=$((i+1))
done
[ "$added" = 1 ] || set -- "$@" "$f"
"$@"
rc=$?
rm -f "$f"
exit $rc
"""


def interpreter(script: str) -> list[str]:
    first = script.split("\n", 1)[0]
    if first.startswith("#!"):
        words = shlex.split(first[2:].strip()) if first[2:].strip() else []
        if words:
            return words
    return ["sh"]


def lab_file(lab_dir: Path | None, relative: str) -> Path | None:
    """``relative`` inside the lab directory, or None when it would leave it."""
    if lab_dir is None or Path(relative).is_absolute():
        return None
    target = (lab_dir / relative).resolve()
    try:
        target.relative_to(lab_dir.resolve())
    except ValueError:
        return None
    return target


class ScriptCheck(CheckKind):
    kind = "script"
    options = {
        "script": Option("str"),
        "file": Option("str"),
        "args": Option("str_list"),
        "timeout": Option("number", min=1, max=900),
        "user": Option("str"),
        "workdir": Option("str"),
        "env": Option("str_map"),
    }
    hints = {
        "script_failed": "Read the step again: the check script looks for exactly what it describes.",
        "script_timed_out": "The check did not finish in time; try again, and ask staff if it keeps happening.",
    }

    def check_spec(self, spec: dict[str, Any], lab_dir: Path | None) -> list[Problem]:
        if ("script" in spec) == ("file" in spec):
            return [(("script",), "give either script (the text) or file (a path in the lab directory)")]
        if "file" in spec and lab_dir is not None:
            target = lab_file(lab_dir, spec["file"])
            if target is None:
                return [(("file",), f"must be a path inside the lab directory (got {spec['file']!r})")]
            if not target.is_file():
                return [(("file",), f"file not found: {target}")]
        return []

    def default_title(self, spec: dict[str, Any]) -> str:
        return f"script {spec['file']}" if "file" in spec else "check script"

    def source(self, ctx: CheckContext, spec: dict[str, Any]) -> str:
        if "script" in spec:
            return str(spec["script"])
        target = lab_file(ctx.lab_dir, spec["file"])
        if target is None or not target.is_file():
            raise JudgeError(f"the lab's check script {spec['file']} is missing from its directory")
        return target.read_text(encoding="utf-8", errors="replace")

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        script = self.source(ctx, spec).replace("\r\n", "\n")
        words = interpreter(script)
        timeout = float(spec.get("timeout", 30))
        command = ["sh", "-c", STAGE_AND_RUN, "sh", str(len(words)), *words, *spec.get("args", [])]
        result = ctx.exec(command, timeout=timeout, user=spec.get("user", JUDGE_USER), stdin=script.encode(),
                          workdir=spec.get("workdir"), environment=spec.get("env"))
        stdout, stderr = text_of(result.stdout), text_of(result.stderr)
        output = "\n".join(part for part in (stdout.strip(), stderr.strip()) if part)
        if output:
            outcome.notes["script output"] = output[-OUTPUT_NOTE_LIMIT:]
        outcome.metrics["script.exit_code"] = result.exit_code
        if result.timed_out:
            outcome.fail("script_timed_out", f"The check script was still running after {timeout:g} s.")
        elif result.exit_code == 125:
            raise JudgeError("cannot copy the check script into the session (is /tmp writable?)")
        elif result.exit_code != 0:
            # As on Killercoda, a verify script speaks to the learner through what it prints.
            outcome.fail("script_failed", f"The check script exited with status {result.exit_code}"
                                          f"{':' if output.strip() else '.'}",
                         detail=truncate_note(output.strip(), DETAIL_LIMIT))
        return outcome
