"""An in-memory runner for fast tests of the layers above the real backends.

OPTIONS: "start_delay" (seconds), "fail_on" ("start" | "stop" | "exec"), "permanent" (bool),
"fail_times" (with fail_on: fail only that many times in this process, then work).
Environments live in a process-wide dict so tests can inspect and break them; what an environment
"prints" (output()) is its list "output", which `emit` adds to.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from runners.base import (
    DiskUsage,
    Endpoint,
    ExecResult,
    FileEntry,
    ManagedEnvironment,
    PollStatus,
    ProgressCallback,
    Runner,
    RunnerError,
    RunnerStats,
    SessionSpec,
    StartResult,
    clean_workspace_path,
    no_progress,
)

ENVIRONMENTS: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


class FakeTerminal:
    """Echoes what is written, like a shell whose every command prints itself."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        self.size = (80, 24)
        self.closed = False

    def fileno(self) -> int:
        return self._read_fd

    def read(self, max_bytes: int = 65536) -> bytes:
        if self.closed:
            return b""
        return os.read(self._read_fd, max_bytes)

    def write(self, data: bytes) -> None:
        try:
            os.write(self._write_fd, data)
        except OSError as exc:  # only RunnerError leaves a runner
            raise RunnerError(f"the terminal is closed ({exc.strerror or exc})", permanent=True) from exc

    def resize(self, cols: int, rows: int) -> None:
        self.size = (cols, rows)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._write_fd)
            os.close(self._read_fd)


class FakeRunner(Runner):
    def _env(self, state: dict[str, Any]) -> dict[str, Any]:
        env = ENVIRONMENTS.get(state.get("env_id", ""))
        if env is None:
            raise RunnerError("environment is gone", permanent=True)
        return env

    def _maybe_fail(self, operation: str) -> None:
        if self.options.get("fail_on") == operation:
            if "fail_times" in self.options:
                with _lock:
                    failed = self.options.setdefault("_failed", 0)
                    if failed >= int(self.options["fail_times"]):
                        return
                    self.options["_failed"] = failed + 1
            raise RunnerError(f"fake runner told to fail on {operation}", permanent=self.options.get("permanent", True))

    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        progress("Creating environment")
        with _lock:
            for env_id, env in ENVIRONMENTS.items():
                if env["session_id"] == spec.session_id and env["runner"] == self.name:
                    env["running"] = True
                    return StartResult({"env_id": env_id}, {"host": "127.0.0.1"})
            env_id = uuid.uuid4().hex
            ENVIRONMENTS[env_id] = {
                "session_id": spec.session_id,
                "runner": self.name,
                "running": True,
                "files": {},
                "spec": spec,
                "exec_log": [],
                "output": [b"fake environment: started\n"],
            }
        delay = float(self.options.get("start_delay", 0))
        try:
            if delay:
                time.sleep(min(delay, timeout))
                if delay > timeout:
                    raise RunnerError(f"environment not ready after {timeout:g} s", permanent=False)
            self._maybe_fail("start")
        except RunnerError:
            with _lock:
                ENVIRONMENTS.pop(env_id, None)
            raise
        progress("Ready")
        return StartResult({"env_id": env_id}, {"host": "127.0.0.1"})

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        self._maybe_fail("stop")
        with _lock:
            ENVIRONMENTS.pop(state.get("env_id", ""), None)

    def poll(self, state: dict[str, Any]) -> PollStatus:
        env = ENVIRONMENTS.get(state.get("env_id", ""))
        if env is None:
            return PollStatus.MISSING
        return PollStatus.RUNNING if env["running"] else PollStatus.STOPPED

    def exec(self, state: dict[str, Any], command: list[str], *, timeout: float = 15.0, stdin: bytes | None = None,
             user: str | None = None, workdir: str | None = None,
             environment: dict[str, str] | None = None) -> ExecResult:
        self._maybe_fail("exec")
        env = self._env(state)
        env["exec_log"].append(command)
        if command[:1] == ["echo"]:
            return ExecResult(0, (" ".join(command[1:]) + "\n").encode(), b"")
        if command[:1] == ["true"]:
            return ExecResult(0, b"", b"")
        return ExecResult(127, b"", f"{command[0]}: command not found\n".encode())

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        env = self._env(state)
        prefix = clean_workspace_path(path)
        prefix = f"{prefix}/" if prefix else ""
        entries: dict[str, FileEntry] = {}
        for name, (data, mtime) in env["files"].items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            head, _, tail = rest.partition("/")
            full = prefix + head
            entries[full] = FileEntry(full, bool(tail), 0 if tail else len(data), mtime)
        return sorted(entries.values(), key=lambda e: (not e.is_dir, e.path))

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        env = self._env(state)
        name = clean_workspace_path(path)
        if name not in env["files"]:
            raise RunnerError(f"{name}: no such file", permanent=True)
        data = env["files"][name][0]
        if len(data) > max_bytes:
            raise RunnerError(f"{name} is larger than {max_bytes} bytes", permanent=True)
        return data

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        env = self._env(state)
        env["files"][clean_workspace_path(path)] = (bytes(data), time.time())

    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        self._env(state)
        return Endpoint(host="127.0.0.1", port=port)

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1") -> FakeTerminal:
        self._env(state)
        terminal = FakeTerminal()
        terminal.resize(cols, rows)
        return terminal

    def list_managed(self) -> list[ManagedEnvironment]:
        with _lock:
            return [
                ManagedEnvironment(env["session_id"], env_id, env["running"])
                for env_id, env in ENVIRONMENTS.items()
                if env["runner"] == self.name
            ]

    def remove_managed(self, env: ManagedEnvironment) -> None:
        with _lock:
            ENVIRONMENTS.pop(env.ref, None)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        env = self._env(state)
        return RunnerStats(cpu_percent=0.0, memory_bytes=1024 * 1024, memory_limit_bytes=env["spec"].memory_mb << 20)

    def emit(self, state: dict[str, Any], data: bytes) -> None:
        """Make the environment print `data` (for tests of output())."""
        with _lock:
            self._env(state)["output"].append(bytes(data))

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """What `emit` printed; the cursor counts the pieces already returned."""
        with _lock:
            pieces = list(self._env(state).get("output", []))
        if since is None:
            start, size = len(pieces), 0
            while start > 0 and (size + len(pieces[start - 1]) <= max_bytes or start == len(pieces)):
                start -= 1
                size += len(pieces[start])
        else:
            start = min(int(since), len(pieces))
        end, size = start, 0
        while end < len(pieces) and (end == start or size + len(pieces[end]) <= max_bytes):
            size += len(pieces[end])
            end += 1
        return b"".join(pieces[start:end]), float(end)

    def disk_usage(self, state: dict[str, Any]) -> DiskUsage | None:
        """What a test put in the environment's "disk_used" (bytes) against the lab's disk_mb."""
        env = self._env(state)
        if "disk_used" not in env:
            return None
        return DiskUsage(used_bytes=int(env["disk_used"]), total_bytes=env["spec"].disk_mb << 20)
