"""`command`: run a command in the session; pass on its exit code and, optionally, its output.

    - kind: command
      run: python3 -c "import app"       # a string runs through sh -c; a list runs as it is
      exit_code: 0                        # default 0
      stdout: "^ok$"                      # optional regular expressions (searched, multi-line)
      stderr: "^$"
      input: "text on standard input"
      timeout: 15                         # seconds
      user: judge                         # judge (default), learner or root
      workdir: app                        # relative to the workspace
      env: {NAME: value}
"""

from __future__ import annotations

import re
from typing import Any

from judge.checks.base import JUDGE_USER, CheckContext, CheckKind, CheckOutcome, shell_command, text_of
from judge.checks.options import Option

OUTPUT_NOTE_LIMIT = 4000


def short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CommandCheck(CheckKind):
    kind = "command"
    options = {
        "run": Option("argv", required=True),
        "exit_code": Option("int", min=0, max=255),
        "stdout": Option("regex"),
        "stderr": Option("regex"),
        "input": Option("text"),
        "timeout": Option("number", min=1, max=600),
        "user": Option("str"),
        "workdir": Option("str"),
        "env": Option("str_map"),
    }
    hints = {
        "command_failed": "Run the same command in your terminal and read its error message.",
        "command_timed_out": "The command did not finish in time: is it waiting for input or stuck in a loop?",
        "stdout_mismatch": "Compare what the command prints with what the step asks for.",
        "stderr_mismatch": "Look at the command's error output in your terminal.",
    }

    def default_title(self, spec: dict[str, Any]) -> str:
        run = spec.get("run")
        shown = run if isinstance(run, str) else " ".join(run or [])
        return f"command: {short(shown, 80)}"

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        timeout = float(spec.get("timeout", 15))
        stdin = spec["input"].encode() if "input" in spec else None
        result = ctx.exec(shell_command(spec["run"]), timeout=timeout, user=spec.get("user", JUDGE_USER),
                          stdin=stdin, workdir=spec.get("workdir"), environment=spec.get("env"))
        stdout, stderr = text_of(result.stdout), text_of(result.stderr)
        outcome.metrics["command.exit_code"] = result.exit_code
        output = "\n".join(part for part in (stdout.strip(), stderr.strip()) if part)
        if output:
            outcome.notes["command output"] = output[-OUTPUT_NOTE_LIMIT:]
        if result.timed_out:
            outcome.fail("command_timed_out", f"The command was still running after {timeout:g} s.")
            return outcome
        expected = int(spec.get("exit_code", 0))
        if result.exit_code != expected:
            detail = f": {short(stderr or stdout)}" if (stderr or stdout).strip() else "."
            outcome.fail("command_failed", f"The command exited with status {result.exit_code}, "
                                           f"not {expected}{detail}")
            return outcome
        if "stdout" in spec and not re.search(spec["stdout"], stdout, re.MULTILINE):
            outcome.fail("stdout_mismatch", f"The command's output does not match /{spec['stdout']}/"
                                            f"{': ' + short(stdout) if stdout.strip() else ' (it printed nothing)'}.")
        if "stderr" in spec and not re.search(spec["stderr"], stderr, re.MULTILINE):
            outcome.fail("stderr_mismatch", f"The command's error output does not match /{spec['stderr']}/.")
        return outcome
