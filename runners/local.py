"""Local runner: the embedded default when there is no Docker engine.

Every session is a directory on the host; shells and commands run on demand in a fresh
bubblewrap (bwrap) sandbox that sees a read-only /usr, a synthesized minimal /etc, private
/tmp and /dev/shm tmpfs, and the session's workspace as the only host directory it can write.

    <root>/<session_id>/
        session.json     the spec, written first (marks the directory as ours)
        workspace/       bind-mounted read-write at /workspace inside the sandbox
        etc/             passwd, group, hosts, nsswitch.conf shown to the sandbox (read-only)
        pids/<pid>.json  one file per live sandbox process (pid + kernel start time)

OPTIONS (all optional):
    root              where session directories live (default DATA_DIR/local-sessions)
    bwrap             path of the bwrap binary (default: found on PATH, else /usr/bin/bwrap)
    max_output_bytes  cap on each of stdout/stderr kept by exec (default 4 MiB)
    disk_limit        "auto" (default): the workspace is a size-limited filesystem of the lab's disk_mb
                      (disks.py) when the platform runs as root, else a plain directory with a note in
                      the session log; "required": refuse to start without one; "off": never
    disk_root         where those disks' images live (default DATA_DIR/local-disks)

Sandbox flags (see `_sandbox_args`):
    bwrap --unshare-all [--share-net] --unshare-user [--disable-userns] --cap-drop ALL
          --die-with-parent [--new-session] --hostname lab --uid 1000 --gid 1000
          --ro-bind /usr /usr --symlink usr/bin /bin ... (or --ro-bind for real directories)
          --ro-bind-try /etc/<a few harmless files> ... --ro-bind <session>/etc/passwd /etc/passwd ...
          --proc /proc --dev /dev [--size N] --tmpfs /dev/shm [--size N] --tmpfs /tmp
          --bind <workspace> /workspace --remount-ro / --remount-ro /dev --chdir /workspace
          --setenv HOME /workspace --setenv TERM xterm-256color ... -- COMMAND
    bwrap itself runs with an environment of only PATH and LANG, so nothing of the platform's
    environment (DJANGO_SECRET_KEY, DATABASE_URL, ...) can reach the sandbox, and with
    close_fds so none of its sockets or files do either.

What is enforced and what is best-effort:
    Enforced by the kernel: the filesystem view (only /workspace, /tmp and /dev/shm are writable;
    / and /dev are remounted read-only), no network unless the lab's mode is "bridge" or
    "unrestricted", private PID/IPC/UTS/cgroup/user namespaces, no capabilities (bounding set
    empty), no nested user namespaces where bwrap supports --disable-userns, the size of /tmp
    and /dev/shm where bwrap supports --size, and killing: --die-with-parent plus the PID
    namespace mean that killing the outer bwrap process kills everything inside.
    Best-effort (setrlimit, inherited by every process of the sandbox but per process, not per
    session): RLIMIT_AS = 2 x memory_mb (address space, not resident memory, so a session can
    use more RAM in total across processes), RLIMIT_FSIZE = disk_mb (largest single file, not
    total disk use; write_file applies the same cap), RLIMIT_CORE = 0, RLIMIT_NPROC = the
    current task count of this uid + pids_limit (counted per user on the host and bypassed by
    processes keeping CAP_SYS_RESOURCE, so it may not bind at all), and nice +5 instead of a
    CPU quota (spec.cpu is not enforced). Real caps on memory, pids and CPU need cgroups.
    No seccomp filter is installed: the sandbox can use every system call of the host kernel.

Caveats:
    There is no per-session network here, only the host's: sharing it would let a session reach
    every service on the host's loopback (PostgreSQL, Redis...). So only "unrestricted" (staff
    only) shares it; "bridge" gets no network unless OPTIONS["share_host_network"] is true.
    --die-with-parent uses PR_SET_PDEATHSIG, which fires when the spawning *thread* exits: every
    sandbox is therefore spawned from one long-lived thread of this module (`_spawn`), so a
    terminal opened from a short-lived request thread survives it, and all die with the process.
    Running as root, the sandbox's uid 1000 maps to host uid 0 (bwrap maps only its own uid);
    files it creates in the workspace are owned by the service user on the host.
    Without a usable bwrap the runner refuses to run unless LAB_ALLOW_UNSANDBOXED_LOCAL is
    true; then commands run directly as the service user in the workspace with a clean
    environment and the same rlimits: NO isolation at all, for trusted single-user setups only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import logging
import os
import re
import resource
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import termios
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings

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
    WorkspacePathError,
    clean_workspace_path,
    no_progress,
)
from runners.disks import SessionDisks

log = logging.getLogger(__name__)

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SHARED_NET_MODES = ("bridge", "unrestricted")  # modes that may share the host network (see _shares_net)
DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024
SESSION_FILE = "session.json"
UNSANDBOXED_WARNING = "WARNING: running without a sandbox (LAB_ALLOW_UNSANDBOXED_LOCAL is set)"

# Host entries shown read-only inside the sandbox when they exist: what a shell, the dynamic
# linker and Debian's alternatives need, and nothing that identifies or configures the host.
ETC_ALWAYS = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/bash.bashrc",
    "/etc/inputrc",
    "/etc/terminfo",
    "/etc/vim",
    "/etc/mime.types",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
)
ETC_NETWORK = ("/etc/resolv.conf", "/etc/gai.conf", "/etc/host.conf")
# Merged-/usr hosts have these as symlinks; older layouts as real directories.
TOP_LEVEL_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# /proc helpers ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _ProcInfo:
    pid: int
    state: str
    ppid: int
    sid: int
    cpu_ticks: int
    start: int
    rss_bytes: int


def _proc_info(pid: int) -> _ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses: the fields start after the last ")".
    fields = data[data.rfind(")") + 2 :].split()
    try:
        return _ProcInfo(
            pid=pid,
            state=fields[0],
            ppid=int(fields[1]),
            sid=int(fields[3]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            start=int(fields[19]),
            rss_bytes=int(fields[21]) * _PAGE_SIZE,
        )
    except (IndexError, ValueError):
        return None


def _all_procs() -> list[_ProcInfo]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_info(int(entry))
            if info is not None:
                procs.append(info)
    return procs


def _alive(info: _ProcInfo | None) -> bool:
    return info is not None and info.state not in ("Z", "X")


def _tasks_of_uid(uid: int) -> int:
    """How many tasks (threads count) the host already charges to `uid` for RLIMIT_NPROC."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as fh:
                status = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields.get("Uid", "-1").split()[0]) == uid:
                total += int(fields.get("Threads", "1").strip())
        except (IndexError, ValueError):
            continue
    return total


# killing ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Record:
    """A sandbox process we started: its pid and kernel start time (to survive pid reuse)."""

    pid: int
    start: int


def _targets(record: _Record, procs: list[_ProcInfo]) -> list[int]:
    """Live processes belonging to `record`: its session leader and every member of its session.

    A pid that is still some process's session id cannot be reused, so when the leader has
    exited its session members are still safely identified; when the pid now belongs to a
    different process (start time differs), the record is stale and nothing is ours.
    """
    leader = next((p for p in procs if p.pid == record.pid), None)
    if leader is not None and leader.start != record.start:
        return []
    return [p.pid for p in procs if _alive(p) and (p.pid == record.pid or p.sid == record.pid)]


def _signal_all(records: Iterable[_Record], signals: Iterable[int]) -> int:
    procs = _all_procs()
    count = 0
    for record in records:
        pids = _targets(record, procs)
        count += len(pids)
        for sig in signals:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
    return count


def _terminate(records: list[_Record], timeout: float) -> None:
    """SIGHUP+SIGTERM, wait up to `timeout`, then SIGKILL. Killing the outer bwrap is enough for
    a sandbox (the inner init gets SIGKILL through --die-with-parent and the PID namespace dies
    with it); the session sweep matters for unsandboxed shells and their background jobs."""
    if not records or not _signal_all(records, (signal.SIGHUP, signal.SIGTERM)):
        return
    deadline = time.monotonic() + max(timeout, 0.0)
    while time.monotonic() < deadline:
        if not _signal_all(records, ()):
            return
        time.sleep(0.05)
    _signal_all(records, (signal.SIGKILL,))
    deadline = time.monotonic() + 5.0
    while _signal_all(records, ()) and time.monotonic() < deadline:
        time.sleep(0.05)


# resource limits --------------------------------------------------------------------------------
def _clamp(wanted: int, hard: int) -> int:
    if hard == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, hard)


def _rlimits(spec: dict[str, Any]) -> list[tuple[int, tuple[int, int]]]:
    """Limits for the sandbox, computed in the parent (the forked child must not allocate much)."""
    memory_mb = max(int(spec.get("memory_mb") or 512), 16)
    disk_mb = max(int(spec.get("disk_mb") or 2048), 1)
    pids_limit = max(int(spec.get("pids_limit") or 256), 16)
    wanted = {
        resource.RLIMIT_AS: memory_mb * 2 << 20,
        resource.RLIMIT_FSIZE: disk_mb << 20,
        resource.RLIMIT_CORE: 0,
        # Counted per host uid (shared with the platform itself), hence the offset.
        resource.RLIMIT_NPROC: _tasks_of_uid(os.getuid()) + pids_limit,
    }
    limits = []
    for kind, value in wanted.items():
        _soft, hard = resource.getrlimit(kind)
        value = _clamp(value, hard)
        limits.append((kind, (value, value)))
    return limits


def _make_preexec(limits: list[tuple[int, tuple[int, int]]], set_ctty: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec: keep it to plain system calls."""

    def preexec() -> None:
        if set_ctty:
            # start_new_session made us a session leader; adopt the PTY on fd 0 as the
            # controlling terminal so the shell gets job control and ^C.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for kind, value in limits:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(kind, value)
        with contextlib.suppress(OSError):
            os.nice(5)

    return preexec


# spawning ---------------------------------------------------------------------------------------
# One long-lived thread starts every sandbox: PR_SET_PDEATHSIG (--die-with-parent) follows the
# spawning thread, and ThreadPoolExecutor workers live until the interpreter exits.
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-runner-spawn")


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **kwargs)

    return _spawner.submit(popen).result()


# terminals --------------------------------------------------------------------------------------
_live_terminals: dict[str, set[LocalTerminal]] = {}
_live_lock = threading.Lock()


class LocalTerminal:
    """A shell on a PTY. The master side is ours; the sandbox holds the slave."""

    def __init__(self, process: subprocess.Popen[bytes], master_fd: int, pid_file: Path, session_dir: str) -> None:
        self.process = process
        self.pid = process.pid
        self._fd = master_fd
        self._pid_file = pid_file
        self._session_dir = session_dir
        self._closed = False
        self._lock = threading.Lock()
        info = _proc_info(process.pid)
        self._record = _Record(process.pid, info.start if info else -1)
        with _live_lock:
            _live_terminals.setdefault(session_dir, set()).add(self)

    def fileno(self) -> int:
        return self._fd

    def read(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            return b""
        try:
            return os.read(self._fd, max_bytes)
        except OSError as exc:
            # EIO: every slave fd is closed (the shell exited); EBADF: closed under us.
            if exc.errno in (errno.EIO, errno.EBADF):
                return b""
            raise RunnerError(f"terminal read failed: {exc.strerror}") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise RunnerError("the terminal is closed", permanent=True)
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                raise RunnerError(f"the terminal has closed ({exc.strerror})", permanent=True) from exc
            view = view[written:]

    def resize(self, cols: int, rows: int) -> None:
        if self._closed:
            return
        try:
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, _winsize(cols, rows))
        except OSError as exc:
            raise RunnerError(f"cannot resize the terminal: {exc.strerror}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            # Kill before closing the fd, so a reader blocked in read() gets EIO, not a reused fd.
            _terminate([self._record], timeout=1.0)
            try:
                self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                log.warning("terminal process %s did not exit after SIGKILL", self.pid)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            with contextlib.suppress(OSError):
                self._pid_file.unlink()
            with _live_lock:
                live = _live_terminals.get(self._session_dir)
                if live is not None:
                    live.discard(self)
                    if not live:
                        del _live_terminals[self._session_dir]


def _bound(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _winsize(cols: int, rows: int) -> bytes:
    """struct winsize {rows, cols, xpixel, ypixel} for TIOCSWINSZ."""
    return struct.pack("HHHH", _bound(rows, 1, 1000), _bound(cols, 1, 1000), 0, 0)


# the runner -------------------------------------------------------------------------------------
class LocalRunner(Runner):
    """Sessions as host directories; shells and commands in throwaway bubblewrap sandboxes."""

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        # Never probe or raise here: the registry builds every runner for reconciliation,
        # and a missing bwrap must fail sessions with a clear message, not the registry.
        super().__init__(name, options)
        self._probe_lock = threading.Lock()
        self._probe_ok = False
        self._features: set[str] = set()

    # configuration -----------------------------------------------------------------------------
    @functools.cached_property
    def disks(self) -> SessionDisks:
        """This runner's session disks (disks.py); settings are read on first use, not at construction."""
        return SessionDisks(Path(self.options.get("disk_root") or Path(settings.DATA_DIR) / "local-disks"))

    @property
    def root(self) -> Path:
        configured = self.options.get("root")
        return Path(configured) if configured else Path(settings.DATA_DIR) / "local-sessions"

    @property
    def bwrap(self) -> str:
        return str(self.options.get("bwrap") or shutil.which("bwrap") or "/usr/bin/bwrap")

    @property
    def max_output(self) -> int:
        return int(self.options.get("max_output_bytes") or DEFAULT_MAX_OUTPUT)

    # sandbox availability ----------------------------------------------------------------------
    def _probe(self) -> str | None:
        """None when bwrap can build our sandbox here, else why not. Success is cached."""
        with self._probe_lock:
            if self._probe_ok:
                return None
            try:
                helptext = subprocess.run(
                    [self.bwrap, "--help"], capture_output=True, env=_host_env(), timeout=10, check=False
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return f"cannot run {self.bwrap} ({exc})"
            text = helptext.stdout.decode(errors="replace") + helptext.stderr.decode(errors="replace")
            features = {flag for flag in ("--disable-userns", "--size") if flag in text}
            args = self._base_args(features, share_net=False, new_session=True, spec={})
            args += ["--remount-ro", "/", "--remount-ro", "/dev", "--", "true"]
            try:
                result = subprocess.run(args, capture_output=True, env=_host_env(), timeout=15, check=False)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"cannot run {self.bwrap} ({exc})"
            if result.returncode != 0:
                detail = result.stderr.decode(errors="replace").strip()[-300:]
                return f"{self.bwrap} exited with {result.returncode}: {detail or 'no output'}"
            self._features = features
            self._probe_ok = True
            return None

    def _allow_unsandboxed(self) -> bool:
        return bool(settings.LAB_ALLOW_UNSANDBOXED_LOCAL)

    def _require_mode(self) -> bool:
        """True to sandbox, False to run unsandboxed (only when allowed); RunnerError otherwise."""
        problem = self._probe()
        if problem is None:
            return True
        if self._allow_unsandboxed():
            return False
        raise RunnerError(
            f"bubblewrap (bwrap) is not available or cannot create namespaces here: {problem}; "
            "install the bubblewrap package, or set LAB_ALLOW_UNSANDBOXED_LOCAL=true to run shells "
            "without a sandbox (unsafe)",
            permanent=True,
        )

    def available(self) -> bool:
        return self._probe() is None or self._allow_unsandboxed()

    # sandbox command line ----------------------------------------------------------------------
    def _base_args(self, features: set[str], *, share_net: bool, new_session: bool, spec: dict[str, Any]) -> list[str]:
        """Namespaces, read-only system view and private tmpfs; no session-specific mounts."""
        args = [self.bwrap, "--unshare-all"]
        if share_net:
            args.append("--share-net")
        # Explicit --unshare-user (--unshare-all only *tries*): capabilities must stay inside.
        args.append("--unshare-user")
        if "--disable-userns" in features:
            args.append("--disable-userns")
        args += ["--cap-drop", "ALL", "--die-with-parent"]
        if new_session:
            # Without a terminal there is no reason to share a session (and its TIOCSTI) with us.
            args.append("--new-session")
        args += ["--hostname", "lab", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        args += ["--ro-bind", "/usr", "/usr"]
        for top in TOP_LEVEL_DIRS:
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        for path in ETC_ALWAYS + (ETC_NETWORK if share_net else ()):
            args += ["--ro-bind-try", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        memory_mb = max(int(spec.get("memory_mb") or 512), 16)
        if "--size" in features:
            args += ["--size", str(min(64, memory_mb) << 20)]
        args += ["--tmpfs", "/dev/shm"]  # noqa: S108 - a mount point inside the sandbox, not a host path
        if "--size" in features:
            args += ["--size", str(memory_mb << 20)]
        args += ["--tmpfs", "/tmp"]  # noqa: S108 - a private tmpfs inside the sandbox
        return args

    def _sandbox_args(
        self,
        session_dir: Path,
        spec: dict[str, Any],
        *,
        new_session: bool,
        workdir: str,
        extra_env: dict[str, str],
    ) -> list[str]:
        share_net = self._shares_net(spec)
        args = self._base_args(self._features, share_net=share_net, new_session=new_session, spec=spec)
        etc = session_dir / "etc"
        for name in ("passwd", "group", "hosts", "nsswitch.conf"):
            args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
        args += ["--bind", str(session_dir / "workspace"), self.workspace]
        # Mount points were created on bwrap's root tmpfs; freeze it (and /dev) now. Not
        # recursive, so /tmp, /dev/shm and /workspace stay writable.
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", workdir]
        for key, value in self._session_env(spec, self.workspace).items():
            args += ["--setenv", key, value]
        for key, value in extra_env.items():
            args += ["--setenv", key, value]
        return args

    def _session_env(self, spec: dict[str, Any], home: str) -> dict[str, str]:
        user = _unix_name(str(spec.get("username") or ""))
        return {
            "PATH": SANDBOX_PATH,
            "LANG": "C.UTF-8",
            "HOME": home,
            "TERM": "xterm-256color",
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
        }

    # session directory -------------------------------------------------------------------------
    def _session_dir(self, state: dict[str, Any]) -> Path:
        root = state.get("root")
        if not root:
            raise RunnerError("this session has no local directory in its state", permanent=True)
        return Path(root)

    def _load(self, state: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """The live session directory and its spec; RunnerError once it is gone."""
        session_dir = self._session_dir(state)
        try:
            meta = json.loads((session_dir / SESSION_FILE).read_text())
        except FileNotFoundError as exc:
            raise RunnerError("the session's environment is gone", permanent=True) from exc
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot read the session's environment: {exc}", permanent=True) from exc
        return session_dir, dict(meta.get("spec") or {})

    def _workspace(self, state: dict[str, Any]) -> Path:
        session_dir, _spec = self._load(state)
        return session_dir / "workspace"

    @staticmethod
    def _state(session_dir: Path, spec: SessionSpec) -> dict[str, Any]:
        return {"root": str(session_dir), "session_id": spec.session_id}

    # lifecycle ---------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        if not _SESSION_ID_RE.match(spec.session_id) or ".." in spec.session_id:
            raise RunnerError(f"unusable session id {spec.session_id!r}", permanent=True)
        sandboxed = self._require_mode()  # before creating anything: refusing leaves no trace
        if not sandboxed:
            progress(UNSANDBOXED_WARNING)
            log.warning("local runner: session %s runs WITHOUT a sandbox", spec.session_id)
        began = time.monotonic()
        session_dir = self.root / spec.session_id
        meta_path = session_dir / SESSION_FILE
        meta: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            meta = json.loads(meta_path.read_text())
        if meta.get("prepared"):
            progress("Ready")  # adopted: a retried start must not recopy the starter files
            return StartResult(self._state(session_dir, spec), self._endpoints(dataclasses.asdict(spec)))

        created = not session_dir.exists()
        progress("Preparing workspace")
        try:
            session_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(session_dir, 0o700)  # other host users have no business in a workspace
            # session.json first: it is what marks a directory as ours (see stop()).
            meta = {"session_id": spec.session_id, "spec": dataclasses.asdict(spec), "prepared": False}
            _write_json(meta_path, meta)
            (session_dir / "pids").mkdir(exist_ok=True)
            workspace = session_dir / "workspace"
            workspace.mkdir(mode=0o700, exist_ok=True)
            if self._limit_disk(spec, progress):
                self.disks.ensure(spec.session_id, spec.disk_mb, at=workspace)
                os.chmod(workspace, 0o700)
                meta["disk"] = True
                _write_json(meta_path, meta)
            self._write_etc(session_dir, spec)
            if spec.starter_dir:
                if not Path(spec.starter_dir).is_dir():
                    raise RunnerError(f"starter files {spec.starter_dir} are missing", permanent=True)
                # symlinks=True: a link in the lab's files is copied as a link, never followed
                # on the host (it would otherwise copy e.g. /etc/shadow into the workspace).
                shutil.copytree(spec.starter_dir, workspace, symlinks=True, dirs_exist_ok=True)
            if time.monotonic() - began > timeout:
                raise RunnerError(f"workspace not ready after {timeout:g} s")
            meta["prepared"] = True
            _write_json(meta_path, meta)
        except (OSError, shutil.Error, RunnerError) as exc:
            if created:
                if self.disks.exists(spec.session_id, at=session_dir / "workspace"):
                    self.disks.remove(spec.session_id, at=session_dir / "workspace")
                _rmtree(session_dir)
            if isinstance(exc, RunnerError):
                raise
            raise RunnerError(f"cannot prepare the workspace: {exc}") from exc
        progress("Ready")
        return StartResult(self._state(session_dir, spec), self._endpoints(dataclasses.asdict(spec)))

    def _limit_disk(self, spec: SessionSpec, progress: ProgressCallback) -> bool:
        policy = str(self.options.get("disk_limit", "auto"))
        if policy == "off":
            return False
        reason = self.disks.unavailable()
        if reason is None:
            return True
        if policy == "required":
            raise RunnerError(f"cannot limit this session's disk: {reason}", permanent=True)
        progress(f"Note: the disk limit of {spec.disk_mb} MB covers single files only here ({reason})")
        return False

    def disk_usage(self, state: dict[str, Any]) -> DiskUsage | None:
        session_id = state.get("session_id")
        root = state.get("root")
        if not session_id or not root:
            return None
        return self.disks.usage(str(session_id), at=Path(root) / "workspace")

    def _write_etc(self, session_dir: Path, spec: SessionSpec) -> None:
        """A minimal /etc: the sandbox learns nothing about the host's users or hosts."""
        etc = session_dir / "etc"
        etc.mkdir(exist_ok=True)
        user = _unix_name(spec.username)
        files = {
            "passwd": (
                "root:x:0:0:root:/root:/bin/sh\n"
                f"{user}:x:{SANDBOX_UID}:{SANDBOX_GID}:Lab user:{self.workspace}:/bin/bash\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            "group": f"root:x:0:\n{user}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
            "hosts": "127.0.0.1\tlocalhost lab\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n",
        }
        for name, text in files.items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)

    def _endpoints(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"host": "127.0.0.1"} if self._shares_net(spec) else {}

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        root = state.get("root")
        if not root:
            return
        session_dir = Path(root)
        if not session_dir.exists():
            return
        # Never rmtree a path just because a state blob names it: it must look like ours.
        if not (session_dir / SESSION_FILE).exists() and session_dir.parent.resolve() != self.root.resolve():
            raise RunnerError(f"refusing to delete {session_dir}: not a local session directory", permanent=True)
        self._destroy(session_dir, timeout)

    def _destroy(self, session_dir: Path, timeout: float) -> None:
        with _live_lock:
            terminals = list(_live_terminals.get(str(session_dir), ()))
        for terminal in terminals:
            terminal.close()  # ours to reap: no zombies in this process
        _terminate(self._records(session_dir), timeout)
        if self.disks.exists(session_dir.name, at=session_dir / "workspace"):
            self.disks.remove(session_dir.name, at=session_dir / "workspace")  # before its files go
        _rmtree(session_dir)
        if session_dir.exists():
            raise RunnerError(f"could not remove {session_dir}")

    def poll(self, state: dict[str, Any]) -> PollStatus:
        root = state.get("root")
        return PollStatus.RUNNING if root and Path(root).is_dir() else PollStatus.MISSING

    # pid bookkeeping ---------------------------------------------------------------------------
    def _records(self, session_dir: Path) -> list[_Record]:
        records = []
        pids = session_dir / "pids"
        for path in pids.glob("*.json") if pids.is_dir() else ():
            try:
                data = json.loads(path.read_text())
                records.append(_Record(int(data["pid"]), int(data["start"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return records

    def _record_pid(self, session_dir: Path, process: subprocess.Popen[bytes], kind: str, name: str) -> Path:
        info = _proc_info(process.pid)
        record = _Record(process.pid, info.start if info else -1)
        path = session_dir / "pids" / f"{process.pid}.json"
        try:
            _write_json(path, {"pid": record.pid, "start": record.start, "kind": kind, "name": name})
        except OSError as exc:
            # The session was stopped between our check and the spawn: do not leave it running.
            _terminate([record], timeout=0.5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
            raise RunnerError("the session's environment is gone", permanent=True) from exc
        return path

    # commands ----------------------------------------------------------------------------------
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
        """Run `command` in a fresh sandbox. `user` is ignored: every sandbox process is uid 1000
        (there is only one user). Each of stdout and stderr keeps at most max_output_bytes."""
        if not command or not all(isinstance(part, str) and "\x00" not in part for part in command):
            raise RunnerError("exec needs a non-empty command of strings", permanent=True)
        session_dir, spec = self._load(state)
        extra_env = _check_env(environment or {})
        sandboxed = self._require_mode()
        limits = _rlimits(spec)
        if sandboxed:
            inner_dir = self._inner_workdir(workdir)
            argv = self._sandbox_args(session_dir, spec, new_session=True, workdir=inner_dir, extra_env=extra_env)
            argv += ["--", *command]
            env, cwd = _host_env(), str(session_dir)
        else:
            log.warning("local runner: exec without a sandbox in %s", session_dir)
            cwd = str(self._host_workdir(session_dir, workdir))
            env = {**self._session_env(spec, str(session_dir / "workspace")), **extra_env}
            argv = list(command)
        try:
            process = _spawn(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_make_preexec(limits, set_ctty=False),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return ExecResult(127, b"", f"{command[0]}: {exc}\n".encode())
        pid_file = self._record_pid(session_dir, process, "exec", command[0])
        try:
            return self._collect(process, stdin, timeout)
        finally:
            with contextlib.suppress(OSError):
                pid_file.unlink()

    def _collect(self, process: subprocess.Popen[bytes], stdin: bytes | None, timeout: float) -> ExecResult:
        """Feed stdin and drain both pipes with one deadline; keep at most max_output per stream."""
        info = _proc_info(process.pid)
        record = _Record(process.pid, info.start if info else -1)
        limit = self.max_output
        out_fd = process.stdout.fileno() if process.stdout else -1
        err_fd = process.stderr.fileno() if process.stderr else -1
        in_fd = process.stdin.fileno() if process.stdin else -1
        buffers: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
        pending = memoryview(stdin or b"")
        deadline = time.monotonic() + max(timeout, 0.0)
        timed_out = False
        with selectors.DefaultSelector() as selector:
            for fd in (out_fd, err_fd):
                if fd >= 0:
                    selector.register(fd, selectors.EVENT_READ)
            if process.stdin is not None:
                os.set_blocking(in_fd, False)
                if pending:
                    selector.register(in_fd, selectors.EVENT_WRITE)
                else:
                    process.stdin.close()
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Unsandboxed, a background job can hold the pipes after the command ended.
                    timed_out = process.poll() is None
                    break
                for key, _events in selector.select(min(remaining, 0.5)):
                    fd = int(key.fd)
                    if fd == in_fd and process.stdin is not None:
                        try:
                            pending = pending[os.write(fd, pending[:65536]) :]
                        except BlockingIOError:
                            continue
                        except OSError:  # EPIPE: the command stopped reading
                            pending = memoryview(b"")
                        if not pending:
                            selector.unregister(fd)
                            process.stdin.close()
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    buffer = buffers[fd]
                    if len(buffer) < limit:
                        buffer += chunk[: limit - len(buffer)]
        if not timed_out:
            # Both pipes at EOF does not mean the command ended (it may have closed them).
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                timed_out = True
        _terminate([record], timeout=0.0 if timed_out else 1.0)
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.warning("exec process %s did not exit after SIGKILL", process.pid)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        stdout, stderr = bytes(buffers[out_fd]), bytes(buffers[err_fd])
        if timed_out:
            return ExecResult(124, stdout, stderr, timed_out=True)
        code = process.returncode if process.returncode is not None else 124
        if code == 1 and stderr.startswith(b"bwrap: execvp "):
            # bwrap's own exec failure: report it the way a shell (and the other runners) do.
            code = 127 if stderr.rstrip().endswith(b"No such file or directory") else 126
        return ExecResult(128 - code if code < 0 else code, stdout, stderr)

    def _inner_workdir(self, workdir: str | None) -> str:
        if not workdir:
            return self.workspace
        if workdir.startswith("/"):
            if "\x00" in workdir:
                raise WorkspacePathError("Paths cannot contain NUL bytes.")
            return workdir  # inside the sandbox any directory is fair game
        relative = clean_workspace_path(workdir)
        return f"{self.workspace}/{relative}" if relative else self.workspace

    def _host_workdir(self, session_dir: Path, workdir: str | None) -> Path:
        """Unsandboxed: map /workspace[/...] or a relative path onto the host workspace only."""
        target = workdir or ""
        if target == self.workspace or target.startswith(self.workspace + "/"):
            target = target[len(self.workspace) :].lstrip("/")
        return session_dir / "workspace" / clean_workspace_path(target)

    # files -------------------------------------------------------------------------------------
    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        workspace = self._workspace(state)
        shown = clean_workspace_path(path)
        resolved = _resolve_inside(workspace, shown)
        try:
            dir_fd = _open_dir(workspace, _split(resolved), create=False)
        except OSError as exc:
            raise _file_error(shown, exc) from exc
        entries = []
        try:
            with os.scandir(dir_fd) as listing:
                for entry in listing:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # vanished while listing
                    is_dir = stat.S_ISDIR(st.st_mode)
                    full = f"{shown}/{entry.name}" if shown else entry.name
                    entries.append(FileEntry(full, is_dir, 0 if is_dir else st.st_size, st.st_mtime))
        finally:
            os.close(dir_fd)
        return sorted(entries, key=lambda e: (not e.is_dir, e.path))

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        workspace = self._workspace(state)
        shown = clean_workspace_path(path)
        parts = _split(_resolve_inside(workspace, shown))
        if not parts:
            raise RunnerError("the workspace itself is a directory, not a file", permanent=True)
        try:
            dir_fd = _open_dir(workspace, parts[:-1], create=False)
            try:
                # O_NONBLOCK: opening a FIFO the learner made must not hang the platform.
                fd = os.open(
                    parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
                )
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _file_error(shown, exc) from exc
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise RunnerError(f"{shown} is a directory", permanent=True)
            if not stat.S_ISREG(st.st_mode):
                raise RunnerError(f"{shown} is not a regular file", permanent=True)
            if st.st_size > max_bytes:
                raise RunnerError(f"{shown} is larger than {max_bytes} bytes", permanent=True)
            os.set_blocking(fd, True)
            chunks = []
            total = 0
            while total <= max_bytes:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:  # grew while we read
                raise RunnerError(f"{shown} is larger than {max_bytes} bytes", permanent=True)
            return b"".join(chunks)
        except OSError as exc:
            raise _file_error(shown, exc) from exc
        finally:
            os.close(fd)

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        session_dir, spec = self._load(state)
        workspace = session_dir / "workspace"
        shown = clean_workspace_path(path)
        parts = _split(_resolve_inside(workspace, shown))
        if not parts:
            raise RunnerError("cannot write over the workspace directory", permanent=True)
        disk_limit = max(int(spec.get("disk_mb") or 2048), 1) << 20
        if len(data) > disk_limit:
            raise RunnerError(f"{shown} would be larger than the lab's {disk_limit >> 20} MiB disk", permanent=True)
        name = parts[-1]
        try:
            dir_fd = _open_dir(workspace, parts[:-1], create=True)
        except OSError as exc:
            raise _file_error(shown, exc) from exc
        temp = f".lab-write-{uuid.uuid4().hex}.tmp"
        try:
            mode = 0o644
            try:
                existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise RunnerError(f"{shown} is a directory", permanent=True)
                if not stat.S_ISREG(existing.st_mode):
                    # A symlink here means it changed since we resolved the path: refuse.
                    raise RunnerError(f"{shown} is not a regular file", permanent=True)
                mode = stat.S_IMODE(existing.st_mode)  # keep e.g. the executable bit
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            # Atomic: readers see the old or the new file, never half of one.
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise _file_error(shown, exc) from exc
        except RunnerError:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        finally:
            os.close(dir_fd)

    # reaching the session ----------------------------------------------------------------------
    def _shares_net(self, spec: dict[str, Any]) -> bool:
        mode = spec.get("network_mode")
        if mode == "unrestricted":
            return True
        return mode == "bridge" and bool(self.options.get("share_host_network", False))

    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        _session_dir, spec = self._load(state)
        if not self._shares_net(spec):
            raise RunnerError("this session has no network, so its ports cannot be reached", permanent=True)
        return Endpoint(host="127.0.0.1", port=int(port))

    def open_terminal(
        self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1"
    ) -> LocalTerminal:
        """A new shell in a new sandbox on every call: `name` is recorded but cannot re-attach
        (a shell lives only as long as its terminal)."""
        session_dir, spec = self._load(state)
        sandboxed = self._require_mode()
        limits = _rlimits(spec)
        shell = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i"]
        if sandboxed:
            # No --new-session: the shell must keep the PTY as its controlling terminal.
            argv = self._sandbox_args(session_dir, spec, new_session=False, workdir=self.workspace, extra_env={})
            argv += ["--", *shell]
            env, cwd = _host_env(), str(session_dir)
        else:
            log.warning("local runner: terminal without a sandbox in %s", session_dir)
            cwd = str(session_dir / "workspace")
            env = self._session_env(spec, cwd)
            argv = shell
        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(cols, rows))
            process = _spawn(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_make_preexec(limits, set_ctty=True),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(master)
            raise RunnerError(f"cannot start a shell: {exc}") from exc
        finally:
            os.close(slave)  # only the child keeps the slave: EOF/EIO reaches us when it exits
        try:
            pid_file = self._record_pid(session_dir, process, "terminal", str(name)[:64])
        except RunnerError:
            os.close(master)
            raise
        return LocalTerminal(process, master, pid_file, str(session_dir))

    # supervision -------------------------------------------------------------------------------
    def list_managed(self) -> list[ManagedEnvironment]:
        root = self.root
        if not root.is_dir():
            return []
        found = []
        for path in sorted(root.iterdir()):
            if path.is_dir() and not path.is_symlink():
                found.append(
                    ManagedEnvironment(
                        session_id=path.name,
                        ref=str(path),
                        running=True,
                        detail={"processes": len(self._records(path))},
                    )
                )
        return found

    def remove_managed(self, env: ManagedEnvironment) -> None:
        path = Path(env.ref)
        if path.parent.resolve() != self.root.resolve() or path.is_symlink():
            raise RunnerError(f"refusing to remove {path}: not under {self.root}", permanent=True)
        if path.exists():
            self._destroy(path, timeout=5.0)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        """Best effort: the process trees of the recorded sandboxes, sampled over 0.1 s."""
        session_dir, spec = self._load(state)
        limit = max(int(spec.get("memory_mb") or 512), 1) << 20
        records = self._records(session_dir)
        before = self._tree(records)
        began = time.monotonic()
        time.sleep(0.1)
        after = self._tree(records)
        elapsed = time.monotonic() - began
        ticks = sum(p.cpu_ticks - before[p.pid].cpu_ticks for p in after.values() if p.pid in before)
        cpu = 100.0 * ticks / _CLK_TCK / elapsed if elapsed > 0 else 0.0
        memory = sum(p.rss_bytes for p in after.values())
        return RunnerStats(cpu_percent=round(cpu, 1), memory_bytes=memory, memory_limit_bytes=limit, pids=len(after))

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """Not supported: nothing runs here between commands, so there is no output to follow."""
        raise RunnerError("a local session has no output to follow: it is a directory, and its shells print only "
                          "to the terminal that opened them", permanent=True)

    def _tree(self, records: list[_Record]) -> dict[int, _ProcInfo]:
        procs = _all_procs()
        by_pid = {p.pid: p for p in procs}
        children: dict[int, list[int]] = {}
        for proc in procs:
            children.setdefault(proc.ppid, []).append(proc.pid)
        found: dict[int, _ProcInfo] = {}
        stack = [pid for record in records for pid in _targets(record, procs)]
        while stack:
            pid = stack.pop()
            if pid in found or pid not in by_pid:
                continue
            if _alive(by_pid[pid]):
                found[pid] = by_pid[pid]
            stack.extend(children.get(pid, ()))
        return found


# helpers ----------------------------------------------------------------------------------------
def _host_env() -> dict[str, str]:
    """The whole environment bwrap (or an unsandboxed command) starts from: nothing inherited."""
    return {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}


def _unix_name(username: str) -> str:
    name = username.lower()
    return name if _USERNAME_RE.match(name) and name not in ("root", "nobody") else "learner"


def _check_env(environment: dict[str, str]) -> dict[str, str]:
    for key, value in environment.items():
        if not _ENV_NAME_RE.match(key) or "\x00" in str(value):
            raise RunnerError(f"invalid environment variable {key!r}", permanent=True)
    return {key: str(value) for key, value in environment.items()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)


def _rmtree(path: Path) -> None:
    """Remove a session directory even if the learner made parts of it read-only."""

    def retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
        with contextlib.suppress(FileNotFoundError):
            func(target)

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=retry)


def _split(relative: str) -> list[str]:
    return [part for part in relative.split("/") if part]


def _resolve_inside(workspace: Path, relative: str) -> str:
    """Follow symlinks on the host and refuse any path that ends up outside the workspace.

    Returns the resolved relative path; the caller then opens it component by component with
    O_NOFOLLOW, so a symlink swapped in after this check is refused rather than followed.
    """
    base = os.path.realpath(workspace)
    if not relative:
        return ""
    real = os.path.realpath(os.path.join(base, relative))
    if real == base:
        return ""
    if not real.startswith(base + os.sep):
        raise WorkspacePathError(f"{relative} points outside the workspace")
    return os.path.relpath(real, base)


def _open_dir(workspace: Path, parts: list[str], *, create: bool) -> int:
    """An fd for workspace/parts..., walked with O_NOFOLLOW so no symlink is ever crossed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(workspace, flags)
    try:
        for part in parts:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_error(shown: str, exc: OSError) -> RunnerError:
    label = shown or "the workspace"
    if exc.errno == errno.ENOENT:
        return RunnerError(f"{label}: no such file or directory", permanent=True)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return WorkspacePathError(f"{label}: not a directory, or a symbolic link that cannot be followed")
    if exc.errno == errno.EISDIR:
        return RunnerError(f"{label} is a directory", permanent=True)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunnerError(f"{label}: no space left", permanent=True)
    return RunnerError(f"{label}: {exc.strerror or exc}")
