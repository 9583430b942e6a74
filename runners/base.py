"""The runner contract: what every session backend (Docker, local, QEMU, Kubernetes) provides.

Modelled on JupyterHub's Spawner. A runner never touches the database: it receives a
`SessionSpec` and the JSON `state` it returned from `start()`, so a restarted web or worker
process can find every environment again from the session row alone.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class RunnerError(Exception):
    """Anything a runner cannot do. `permanent` says whether retrying could help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SessionSpec:
    """Everything a runner needs to know about one session, taken from the session and its lab."""

    session_id: str
    user_id: int
    username: str
    lab_slug: str
    image: str
    image_kind: str = "container"
    cpu: float = 1.0
    memory_mb: int = 512
    pids_limit: int = 256
    disk_mb: int = 2048
    network_mode: str = "bridge"
    docker_access: bool = False
    exposed_ports: tuple[int, ...] = ()
    starter_dir: str | None = None
    dind_images: tuple[str, ...] = ()
    consoles: tuple[str, ...] = ()
    # A VM image's stored format ("qcow2", "raw" or "iso", as validated on upload); "" when unknown,
    # and runners then look at the file. Decides ISO boot, whatever the file is called.
    disk_format: str = ""
    # Who the learner is: "" for the image's own user, "root" for root (Killercoda scenarios).
    shell_user: str = ""
    # Several machines in one session, by host name, the learner's first; () for one machine.
    hosts: tuple[str, ...] = ()


@dataclass
class StartResult:
    """`state` is saved on the session row and handed back to every later call."""

    state: dict[str, Any]
    endpoints: dict[str, Any] = field(default_factory=dict)


class PollStatus(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"  # exists but is not running
    MISSING = "missing"  # gone entirely


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class FileEntry:
    path: str  # relative to the workspace root, "/"-separated
    is_dir: bool
    size: int
    mtime: float


@dataclass(frozen=True)
class FileStat:
    """A workspace path as the judge sees it (``Runner.stat_file``)."""

    path: str  # relative to the workspace, after following symlinks where the runner does
    is_dir: bool
    is_file: bool  # a regular file (not a directory, FIFO, device or socket)
    size: int
    #: Permission bits with setuid/setgid/sticky (0o7777), or None where the runner cannot read
    #: them without running a program in the session (the judge then asks ``stat`` there).
    mode: int | None = None


@dataclass(frozen=True)
class PlacedFile:
    """A file for ``Runner.place_files``: an absolute path in the environment, its bytes and mode."""

    path: str
    data: bytes
    mode: int = 0o644


# Image kinds that boot a virtual machine (a disk image, or an ISO on the CD-ROM).
VM_IMAGE_KINDS = ("vm", "iso")


@dataclass(frozen=True)
class Endpoint:
    """Where the platform reaches a session port: a TCP address or a unix socket."""

    host: str | None = None
    port: int | None = None
    unix_path: str | None = None


def vnc_endpoint_of(endpoints: Any) -> Endpoint | None:
    """Where a session's VNC server listens, from the endpoints its start recorded
    (StartResult.endpoints, kept on the session): a runner with a graphical console records
    {"vnc": {"unix": path}} or {"vnc": {"host": ..., "port": ...}}. Not supported (no graphical
    console, or a malformed record): None. Read from the record, so no runner is asked."""
    vnc = endpoints.get("vnc") if isinstance(endpoints, dict) else None
    if not isinstance(vnc, dict):
        return None
    unix = vnc.get("unix")
    if isinstance(unix, str) and unix.startswith("/"):
        return Endpoint(unix_path=unix)
    host, port = vnc.get("host"), vnc.get("port")
    if isinstance(host, str) and host and isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return Endpoint(host=host, port=port)
    return None


@dataclass(frozen=True)
class ManagedEnvironment:
    """Something a runner created and labelled, found again without the database."""

    session_id: str
    ref: str
    running: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DiskUsage:
    """How full a session's own disk is (``Runner.disk_usage``)."""

    used_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass
class RunnerStats:
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    pids: int = 0


class TerminalStream(Protocol):
    """A live, bidirectional terminal. Blocking calls; consumers run them in a thread."""

    def fileno(self) -> int: ...

    def read(self, max_bytes: int = 65536) -> bytes:
        """Return output bytes; b"" once the terminal has closed."""
        ...

    def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def close(self) -> None: ...


ProgressCallback = Callable[[str], None]


def no_progress(message: str) -> None:
    return None


class WorkspacePathError(RunnerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def clean_workspace_path(path: str) -> str:
    """Normalise a learner-supplied path to a relative path inside the workspace, or refuse it."""
    if "\x00" in path:
        raise WorkspacePathError("Paths cannot contain NUL bytes.")
    if path.startswith(("/", "\\")):
        raise WorkspacePathError("Use a path relative to the workspace, not an absolute path.")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise WorkspacePathError("Paths cannot go above the workspace ('..').")
    return "/".join(parts)


class Runner:
    """Base class for session backends. Subclasses override every method below.

    Every method raises RunnerError on failure; nothing else should escape.
    """

    #: The workspace directory inside the environment.
    workspace = "/workspace"

    #: The alias of the runner that takes this runner's VM labs (image kinds in VM_IMAGE_KINDS),
    #: when it does not boot them itself: the registry sends them there. None: this runner boots
    #: them, or refuses them in start().
    vm_runner: str | None = None

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.options = dict(options or {})

    # lifecycle -----------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        """Create and start the environment for `spec`; return its state and endpoints.

        `progress` receives short human-readable steps ("Creating container") as they happen;
        a start that is not ready within `timeout` seconds fails.

        Idempotent: when an environment for `spec.session_id` already exists it is adopted
        (started if needed), never duplicated. On failure, everything created is removed
        before RunnerError is raised.
        """
        raise NotImplementedError

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        """Stop gracefully (then forcibly after `timeout`) and remove everything. Idempotent."""
        raise NotImplementedError

    def poll(self, state: dict[str, Any]) -> PollStatus:
        """Report whether the environment is running, stopped, or gone."""
        raise NotImplementedError

    # commands and files --------------------------------------------------------------
    def exec(
        self,
        state: dict[str, Any],
        command: list[str],
        *,
        timeout: float = 15.0,
        stdin: bytes | None = None,
        user: str | None = None,
        workdir: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run `command` inside the environment; return its exit code and output.

        A command still running after `timeout` seconds is killed and reported with
        `timed_out=True` (exit code 124 or the signal's code).
        """
        raise NotImplementedError

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        """List one directory of the workspace (not recursive)."""
        raise NotImplementedError

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        """Return a workspace file's bytes; RunnerError if missing, a directory, or larger than max_bytes."""
        raise NotImplementedError

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        """Create or replace a workspace file (parent directories are created)."""
        raise NotImplementedError

    # files the judge reads -----------------------------------------------------------------
    # The judge's `file` and `dockerfile` checks read the workspace through these two. A runner
    # that can read its environment's files without running a program inside it (which a learner
    # with root there could replace) overrides them; the defaults use the calls above.

    def stat_file(self, state: dict[str, Any], path: str) -> FileStat | None:
        """What a workspace path is, or None when there is none. RunnerError when the
        environment cannot be reached (a missing path is not an error)."""
        parts = [p for p in clean_workspace_path(path).split("/") if p]
        if not parts:
            return FileStat(path="", is_dir=True, is_file=False, size=0)
        current = ""
        for index, part in enumerate(parts):
            try:
                entries = self.list_files(state, current)
            except RunnerError as exc:
                if exc.permanent and current:  # not a directory, outside the workspace, ...
                    return None
                raise  # the workspace itself cannot be read: not a missing file
            name = f"{current}/{part}" if current else part
            match = next((entry for entry in entries if entry.path == name), None)
            if match is None:
                return None
            if index == len(parts) - 1:
                return FileStat(path=name, is_dir=match.is_dir, is_file=not match.is_dir, size=match.size)
            if not match.is_dir:
                return None
            current = name
        return None

    def place_files(self, state: dict[str, Any], files: list[PlacedFile], host: str = "") -> None:
        """Put files at absolute paths of the environment (a lab's assets), owned by root, parent
        directories made as needed; `host` names one machine of a multi-host session ("" the
        learner's). Runners that cannot write outside the workspace refuse (permanent RunnerError)."""
        raise RunnerError("this runner can only put files into the workspace", permanent=True)

    def read_file_untrusted(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        """``read_file`` for the judge. Runners that can read the file without any program in the
        environment (whose programs a learner may have replaced) do so; the default is ``read_file``.
        Same errors as ``read_file``."""
        return self.read_file(state, path, max_bytes=max_bytes)

    # reaching the session ----------------------------------------------------------------
    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        """Where the platform's proxy can reach `port` of the session (never a host-published port)."""
        raise NotImplementedError

    def open_terminal(
        self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1"
    ) -> TerminalStream:
        """Attach an interactive shell. Where the backend can, `name` re-attaches the same shell."""
        raise NotImplementedError

    def terminal_exists(self, state: dict[str, Any], name: str) -> bool:
        """Whether a shell named `name` is still there to re-attach (asked before open_terminal, so
        the page can say "reconnected"). Not supported: False, the answer of runners that keep no
        shells between connections. Never raises: open_terminal reports what is really wrong."""
        return False

    # supervision ---------------------------------------------------------------------
    def list_managed(self) -> list[ManagedEnvironment]:
        """Every environment this runner created that still exists, found by its labels."""
        raise NotImplementedError

    def list_managed_for(self, session_id: str) -> list[ManagedEnvironment]:
        """What list_managed would report for one session. Teardown asks this once per session, so a
        runner whose engine can filter by label overrides it: a pass over N sessions then costs N
        small listings, not N listings of everything."""
        return [env for env in self.list_managed() if env.session_id == session_id]

    def remove_managed(self, env: ManagedEnvironment) -> None:
        """Remove an environment found by list_managed (used by reconciliation)."""
        raise NotImplementedError

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        """Current CPU and memory use."""
        raise NotImplementedError

    def disk_usage(self, state: dict[str, Any]) -> DiskUsage | None:
        """How full the session's disk is, where the runner limits it; None where it does not.
        Must be cheap (the session page asks on every refresh): no program in the session."""
        return None

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """What the environment printed, for staff to follow: a container's stdout and stderr, a
        VM's serial console.

        `since` is the cursor an earlier call returned; None asks for the newest output (at most
        `max_bytes` of it). Returns the bytes after the cursor, at most `max_bytes` unless a single
        line is longer (the rest comes with the next call), and the cursor for the next call (the
        same one when nothing is new; None while there is no output at all). Cursors mean
        something only to the runner that returned them. Not supported: a permanent RunnerError
        that says so. Never runs a program in the session (a learner could fake its output)."""
        raise RunnerError(f"output is not available for the {self.name} runner", permanent=True)

    # snapshots --------------------------------------------------------------------------
    # Whether snapshot() works. Not supported: False, and snapshot() raises a permanent RunnerError.
    can_snapshot = False

    def snapshot(self, state: dict[str, Any], dest_path: str, include_memory: bool) -> int:
        """Save the session's disk (and its memory, when asked and running) as `dest_path` and its
        companions (`.state`, `.json`), for a new session to boot from; the bytes written. Leaves
        nothing behind when it fails."""
        raise RunnerError("this runner cannot take snapshots", permanent=True)

    def snapshot_disk_bytes(self, state: dict[str, Any]) -> int:
        """The most disk bytes a snapshot of the session would copy now (its own disk layer), for
        the quota reservation. Not supported or nothing there: 0."""
        return 0

    def configured(self) -> bool:
        """Whether this backend has what it needs to be asked at all (a cluster's credentials, say);
        health reports one that is not as "not configured" rather than down."""
        return True

    def available(self) -> bool:
        """Whether this backend can run sessions on this machine right now."""
        return True

    def preload(self) -> None:
        """Import now what the first call would import. The worker calls it before it forks a process
        per job, so no job pays for a large client library again (nothing here may open connections:
        they must not be shared across the fork)."""
