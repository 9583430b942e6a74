"""What every check kind shares: the context a check runs in, its outcome, and the kind contract.

A check never touches the database. It talks to the session through ``CheckContext``, which
wraps the session's runner: commands run as the environment's ``judge`` user where it has
one (labs/base images: uid 1001, can read /workspace but not write it), with a fixed PATH,
so a learner's shell settings cannot change what a check runs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from judge.checks.options import Option, Problem, validate
from judge.results import Failure
from runners.base import ExecResult, FileStat, Runner, RunnerError, clean_workspace_path

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JUDGE_USER = "judge"
LEARNER_USER = "learner"  # the session's own user: whatever the runner gives learners


class JudgeError(Exception):
    """The judge could not do its work (session gone, engine unreachable): not the learner's fault."""


class LogSink(Protocol):
    def write(self, text: str) -> None: ...


@dataclass
class CheckOutcome:
    failures: list[Failure] = field(default_factory=list)
    metrics: dict[str, float | int | str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: bool = False

    @property
    def passed(self) -> bool:
        return not self.failures

    def fail(self, code: str, message: str, hint: str = "", detail: str = "") -> None:
        self.failures.append(Failure(code=code, message=message, hint=hint, detail=detail))


class CheckContext:
    """One judge run's view of a session. Checks share ``shared`` (e.g. the image a build made)."""

    def __init__(self, runner: Runner, state: dict[str, Any], *, lab_dir: Path | None = None,
                 log: LogSink | None = None, label: str = "judge") -> None:
        self.runner = runner
        self.state = state
        self.lab_dir = lab_dir
        self.label = label
        self._log = log
        self.shared: dict[str, Any] = {}
        self.cleanups: list[Callable[[], None]] = []
        self._users: dict[str, str | None] = {}

    # logging --------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self._log is not None and text:
            self._log.write(text)

    # running commands -----------------------------------------------------------------
    def resolve_user(self, user: str | None) -> str | None:
        """The exec user for a check's ``user`` option: the judge user when the image has one."""
        if user is None or user == LEARNER_USER:
            return None
        if user != JUDGE_USER:
            return user
        if JUDGE_USER not in self._users:
            found = self._probe(["id", "-u", JUDGE_USER], user=None)
            self._users[JUDGE_USER] = JUDGE_USER if found is not None and found.strip().isdigit() else None
        return self._users[JUDGE_USER]

    def docker_user(self) -> str | None:
        """The judge user with the group of the session engine's socket, so it may use Docker.

        In labs/dind only learners are in the `docker` group; `user:gid` lends the judge that
        group for its own commands without adding it to the image.
        """
        if "docker" not in self._users:
            judge = self.resolve_user(JUDGE_USER)
            gid = self._probe(["stat", "-L", "-c", "%g", "/var/run/docker.sock"], user=None) if judge else None
            self._users["docker"] = f"{judge}:{gid.strip()}" if judge and gid and gid.strip().isdigit() else None
        return self._users["docker"]

    def _probe(self, command: list[str], *, user: str | None) -> str | None:
        try:
            result = self.runner.exec(self.state, command, timeout=10, user=user,
                                      environment={"PATH": SAFE_PATH})
        except RunnerError:
            return None
        return result.stdout.decode(errors="replace") if result.ok else None

    def exec(self, command: list[str], *, timeout: float = 15.0, user: str | None = JUDGE_USER,
             stdin: bytes | None = None, workdir: str | None = None,
             environment: dict[str, str] | None = None, resolved: bool = False) -> ExecResult:
        """Run a command in the session. ``resolved`` means ``user`` is already an exec user."""
        exec_user = user if resolved else self.resolve_user(user)
        env = {"PATH": SAFE_PATH, **(environment or {})}
        try:
            return self.runner.exec(self.state, command, timeout=timeout, stdin=stdin, user=exec_user,
                                    workdir=self.workdir(workdir), environment=env)
        except RunnerError as exc:
            raise JudgeError(f"cannot run a command in the session: {exc}") from exc

    def workdir(self, relative: str | None) -> str | None:
        if not relative:
            return None
        return posixpath.join(self.runner.workspace, clean_workspace_path(relative))

    # files ------------------------------------------------------------------------------
    # Read through the runner's judge calls (stat_file, read_file_untrusted): on the Docker runner
    # the engine reads the container's filesystem itself, so no program in the session, which a
    # learner with root there could replace, takes part.
    def stat(self, path: str) -> FileStat | None:
        """A workspace path (symlinks followed inside the workspace only), or None when absent."""
        try:
            return self.runner.stat_file(self.state, clean_workspace_path(path))
        except RunnerError as exc:
            raise JudgeError(f"cannot read the session's workspace: {exc}") from exc

    def file_exists(self, path: str) -> tuple[bool, bool]:
        """(exists, is_dir) for a workspace path."""
        found = self.stat(path)
        return found is not None, bool(found and found.is_dir)

    def read_file(self, path: str, max_bytes: int = 1_048_576) -> bytes | None:
        """A workspace file's bytes, read by the platform; None when there is no such file."""
        found = self.stat(path)
        if found is None or found.is_dir:
            return None
        try:
            return self.runner.read_file_untrusted(self.state, path, max_bytes=max_bytes)
        except RunnerError as exc:
            if "larger than" in str(exc):
                raise
            return None

    def file_mode(self, path: str) -> int | None:
        """A workspace path's permission bits (0o7777); None when they cannot be read.

        From the runner where it reads them itself (Docker: the engine); otherwise with ``stat``
        in the session, as before (the local sandbox's programs are the host's, read-only). Not
        ``stat -L``: there a symlink counts as a file of its own, and one leading out of the
        workspace must not report its target's mode.
        """
        found = self.stat(path)
        if found is None:
            return None
        if found.mode is not None:
            return found.mode
        target = posixpath.join(self.runner.workspace, clean_workspace_path(path))
        result = self.exec(["stat", "-c", "%a", "--", target], timeout=10)
        text = result.stdout.decode(errors="replace").strip()
        return int(text, 8) & 0o7777 if result.ok and re.fullmatch(r"[0-7]{1,4}", text) else None

    def run_cleanups(self) -> None:
        while self.cleanups:
            cleanup = self.cleanups.pop()
            try:
                cleanup()
            except (RunnerError, JudgeError):
                pass


COMMON_OPTIONS: dict[str, Option] = {
    "kind": Option("str", required=True),
    "title": Option("str", help="shown in the result instead of the kind"),
    "hint": Option("str", help="replaces the hint of every failure of this check"),
    "codes": Option("codes", help="renames failure codes: {default_code: lab_code}"),
}


class CheckKind:
    """Subclasses set ``kind``, ``options`` and ``hints`` and implement ``run``."""

    kind = ""
    #: Whether a learner working inside the session can influence the result other than by
    #: doing the task (documented in labs/LAB_FORMAT.md).
    tamper_resistant = False
    options: dict[str, Option] = {}
    #: Default hint for each failure code.
    hints: dict[str, str] = {}

    def schema(self) -> dict[str, Option]:
        return {**COMMON_OPTIONS, **self.options}

    def validate(self, spec: dict[str, Any], lab_dir: Path | None = None) -> list[Problem]:
        problems = validate(spec, self.schema())
        if not problems:
            problems.extend(self.check_spec(spec, lab_dir))
        return problems

    def check_spec(self, spec: dict[str, Any], lab_dir: Path | None) -> list[Problem]:
        """Rules between options (one of two keys, files that must exist); none by default."""
        return []

    def title(self, spec: dict[str, Any]) -> str:
        return str(spec.get("title") or self.default_title(spec))

    def default_title(self, spec: dict[str, Any]) -> str:
        return self.kind

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        raise NotImplementedError

    def finish(self, outcome: CheckOutcome, spec: dict[str, Any]) -> CheckOutcome:
        """Apply the lab's renamed codes and hints; fill in default hints."""
        renames = spec.get("codes") or {}
        for failure in outcome.failures:
            if not failure.hint:
                failure.hint = self.hints.get(failure.code, "")
            if spec.get("hint"):
                failure.hint = str(spec["hint"])
            failure.code = renames.get(failure.code, failure.code)
        return outcome


def text_of(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def shell_command(value: str | list[str]) -> list[str]:
    """A check's command option: a string runs through ``sh -c``, a list runs as it is."""
    return ["sh", "-c", value] if isinstance(value, str) else list(value)
