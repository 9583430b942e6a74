"""The local runner against the real bubblewrap (no doubles): isolation, exec, files, terminals, cleanup."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runners.base import PollStatus, RunnerError, SessionSpec, WorkspacePathError
from runners.local import LocalRunner, LocalTerminal

BWRAP = "/usr/bin/bwrap"


@pytest.fixture(autouse=True)
def _need_bwrap() -> None:
    # A missing bwrap must fail the run, not skip it: these tests are the sandbox's guarantee.
    if not os.access(BWRAP, os.X_OK):
        pytest.fail("bubblewrap is required for these tests: apt-get install bubblewrap")


@pytest.fixture
def runner(tmp_path: Path, settings: Any) -> LocalRunner:
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    return LocalRunner("local", {"root": str(tmp_path)})


def make_spec(**overrides: Any) -> SessionSpec:
    fields: dict[str, Any] = {
        "session_id": uuid.uuid4().hex,
        "user_id": 7,
        "username": "olivia",
        "lab_slug": "tiny",
        "image": "local",
        "memory_mb": 256,
        "network_mode": "none",
    }
    fields.update(overrides)
    return SessionSpec(**fields)


@pytest.fixture
def started(runner: LocalRunner) -> Iterator[Callable[..., dict[str, Any]]]:
    """Start sessions and stop them all afterwards, whatever the test did."""
    states: list[dict[str, Any]] = []

    def _start(**overrides: Any) -> dict[str, Any]:
        state = runner.start(make_spec(**overrides)).state
        states.append(state)
        return state

    yield _start
    for state in states:
        runner.stop(state, timeout=2)


def sh(runner: LocalRunner, state: dict[str, Any], script: str, **kwargs: Any):
    return runner.exec(state, ["sh", "-c", script], **kwargs)


def read_until(terminal: LocalTerminal, needle: bytes, timeout: float = 10.0) -> bytes:
    buffer = b""
    deadline = time.monotonic() + timeout
    while needle not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} did not appear; got {buffer[-500:]!r}")
        ready, _, _ = select.select([terminal.fileno()], [], [], min(remaining, 0.5))
        if ready:
            chunk = terminal.read()
            if not chunk:
                raise AssertionError(f"terminal closed before {needle!r}; got {buffer[-500:]!r}")
            buffer += chunk
    return buffer


def pids_running(token: str) -> list[int]:
    """Host pids whose command line contains `token` (a unique sleep duration)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\x00", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != "Z" and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def wait_gone(token: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := pids_running(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP service on the host's loopback, like the platform's own PostgreSQL or Redis."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


# lifecycle --------------------------------------------------------------------------------------
def test_start_prepares_workspace_and_adopts_an_existing_one(runner: LocalRunner, tmp_path: Path) -> None:
    starter = tmp_path / "starter"
    (starter / "src").mkdir(parents=True)
    (starter / "hello.txt").write_text("hello\n")
    (starter / "src" / "main.py").write_text("print(1)\n")
    (starter / "shadow").symlink_to("/etc/shadow")  # copied as a link, never as the host's file
    spec = make_spec(starter_dir=str(starter))
    messages: list[str] = []

    result = runner.start(spec, progress=messages.append)
    try:
        session_dir = Path(result.state["root"])
        workspace = session_dir / "workspace"
        assert result.state == {"root": str(tmp_path / spec.session_id), "session_id": spec.session_id}
        assert messages == ["Preparing workspace", "Ready"]
        assert (workspace / "hello.txt").read_text() == "hello\n"
        assert (workspace / "src" / "main.py").exists()
        assert (workspace / "shadow").is_symlink()
        assert (session_dir / "session.json").exists() and (session_dir / "pids").is_dir()
        assert runner.poll(result.state) is PollStatus.RUNNING
        assert result.endpoints == {}

        runner.write_file(result.state, "hello.txt", b"changed by the learner\n")
        again = runner.start(spec)  # a retried start adopts: same place, learner's work kept
        assert again.state == result.state
        assert (workspace / "hello.txt").read_text() == "changed by the learner\n"
        assert [env.session_id for env in runner.list_managed()].count(spec.session_id) == 1
    finally:
        runner.stop(result.state)


def test_default_root_is_under_data_dir(settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    assert LocalRunner("local").root == tmp_path / "local-sessions"


def test_registry_builds_the_local_runner() -> None:
    from runners import get_runner

    assert isinstance(get_runner("local"), LocalRunner)


def test_failed_start_leaves_nothing_behind(runner: LocalRunner, tmp_path: Path) -> None:
    spec = make_spec(starter_dir=str(tmp_path / "no-such-starter"))
    with pytest.raises(RunnerError):
        runner.start(spec)
    assert not (tmp_path / spec.session_id).exists()


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".."])
def test_unusable_session_ids_are_refused(runner: LocalRunner, bad: str) -> None:
    with pytest.raises(RunnerError) as excinfo:
        runner.start(make_spec(session_id=bad))
    assert excinfo.value.permanent


def test_stop_is_idempotent_and_poll_reports_missing(runner: LocalRunner, started) -> None:
    state = started()
    runner.stop(state)
    assert not Path(state["root"]).exists()
    assert runner.poll(state) is PollStatus.MISSING
    runner.stop(state)  # again: nothing to do, no error
    with pytest.raises(RunnerError):
        runner.exec(state, ["true"])


def test_stop_refuses_to_delete_a_foreign_directory(runner: LocalRunner, tmp_path: Path) -> None:
    foreign = tmp_path.parent / f"not-a-session-{uuid.uuid4().hex}"
    foreign.mkdir()
    try:
        with pytest.raises(RunnerError):
            runner.stop({"root": str(foreign), "session_id": "x"})
        assert foreign.exists()
    finally:
        foreign.rmdir()


# exec and isolation -----------------------------------------------------------------------------
def test_exec_echo(runner: LocalRunner, started) -> None:
    state = started()
    result = runner.exec(state, ["echo", "hello", "world"])
    assert result.ok
    assert result.stdout == b"hello world\n"
    assert result.stderr == b""


def test_exec_exit_code_stdin_workdir_and_environment(runner: LocalRunner, started) -> None:
    state = started()
    assert sh(runner, state, "echo oops >&2; exit 3").exit_code == 3
    assert sh(runner, state, "echo oops >&2; exit 3").stderr == b"oops\n"
    assert runner.exec(state, ["cat"], stdin=b"fed through stdin").stdout == b"fed through stdin"
    runner.write_file(state, "sub/dir/marker", b"")
    assert runner.exec(state, ["pwd"]).stdout == b"/workspace\n"
    assert runner.exec(state, ["pwd"], workdir="sub/dir").stdout == b"/workspace/sub/dir\n"
    assert runner.exec(state, ["pwd"], workdir="/tmp").stdout == b"/tmp\n"
    result = sh(runner, state, 'echo "$GREETING"', environment={"GREETING": "hi there"})
    assert result.stdout == b"hi there\n"
    assert runner.exec(state, ["no-such-command-xyz"]).exit_code == 127


def test_the_sandbox_runs_as_an_unprivileged_user_with_a_minimal_etc(runner: LocalRunner, started) -> None:
    state = started(username="olivia")
    result = sh(runner, state, "id -u; id -un; hostname; echo $HOME; grep -c . /etc/passwd; ls /")
    uid, name, hostname, home, passwd_lines, *top = result.stdout.decode().split()
    assert (uid, name, hostname, home) == ("1000", "olivia", "lab", "/workspace")
    assert passwd_lines == "3"  # root, the learner, nobody: nothing about the host's users
    assert "root" not in top and "home" not in top and "var" not in top
    caps = sh(runner, state, "grep -E '^Cap(Eff|Bnd)' /proc/self/status").stdout.decode()
    assert caps.count("0000000000000000") == 2
    # --disable-userns: no nested user namespace to regain capabilities in.
    assert runner.exec(state, ["unshare", "--user", "--map-root-user", "true"]).exit_code != 0


def test_sandbox_cannot_write_outside_its_workspace(runner: LocalRunner, started, tmp_path: Path) -> None:
    state = started()
    session_dir = Path(state["root"])
    outside = tmp_path / "escaped.txt"
    for target in ("/usr/x", "/etc/x", "/x", "/dev/x", "/proc/x", str(outside), str(session_dir / "session.json")):
        result = runner.exec(state, ["touch", target])
        assert result.exit_code != 0, f"the sandbox could write {target}"
    assert not outside.exists()
    assert sh(runner, state, "touch /workspace/ok && touch /tmp/scratch").ok
    assert (session_dir / "workspace" / "ok").exists()
    # The host's own files are not even visible.
    assert runner.exec(state, ["ls", str(tmp_path)]).exit_code != 0
    assert runner.exec(state, ["cat", "/etc/shadow"]).exit_code != 0


@pytest.mark.parametrize("mode", ["isolated", "none", "bridge"])
def test_sessions_get_no_network_unless_the_host_network_is_shared_explicitly(
    runner: LocalRunner, started, listener: int, mode: str
) -> None:
    state = started(network_mode=mode)
    interfaces = sh(runner, state, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.split()
    assert interfaces == [b"lo"]
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected"
    result = runner.exec(state, ["bash", "-c", probe], timeout=10)
    assert result.exit_code != 0 and b"connected" not in result.stdout
    with pytest.raises(RunnerError) as excinfo:
        runner.endpoint(state, 8080)
    assert excinfo.value.permanent


@pytest.mark.parametrize(("mode", "options"), [("unrestricted", {}), ("bridge", {"share_host_network": True})])
def test_unrestricted_or_explicitly_shared_sessions_use_the_host_network(
    tmp_path: Path, listener: int, mode: str, options: dict[str, Any]
) -> None:
    runner = LocalRunner("local", {"root": str(tmp_path), **options})
    state = runner.start(make_spec(network_mode=mode)).state
    try:
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected"
        result = runner.exec(state, ["bash", "-c", probe], timeout=10)
        assert result.ok and b"connected" in result.stdout
        endpoint = runner.endpoint(state, 8080)
        assert (endpoint.host, endpoint.port) == ("127.0.0.1", 8080)
    finally:
        runner.stop(state, timeout=2)


def test_platform_environment_does_not_leak(runner: LocalRunner, started, monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SECRET_KEY", "leak-me")
    monkeypatch.setenv("DATABASE_URL", "postgres://leak-me@localhost/db")
    state = started()
    result = runner.exec(state, ["sh", "-c", "env; cat /proc/1/environ /proc/self/environ"])
    assert result.ok
    assert b"leak-me" not in result.stdout
    assert b"DJANGO_SECRET_KEY" not in result.stdout


def test_platform_file_descriptors_do_not_leak(runner: LocalRunner, started, tmp_path: Path) -> None:
    state = started()
    with open(tmp_path / "platform-secret", "w") as fh:
        os.set_inheritable(fh.fileno(), True)  # even an inheritable fd must not get through
        result = runner.exec(state, ["ls", "/proc/self/fd"])
    assert sorted(result.stdout.split()) == [b"0", b"1", b"2", b"3"]  # 3 is ls's own directory


def test_exec_timeout_kills_the_whole_sandbox(runner: LocalRunner, started) -> None:
    state = started()
    token = "86124"
    began = time.monotonic()
    result = sh(runner, state, f"echo before; sleep {token} & sleep {token}", timeout=1)
    assert result.timed_out and result.exit_code == 124 and not result.ok
    assert result.stdout == b"before\n"
    assert time.monotonic() - began < 10
    assert wait_gone(token) == []
    assert list((Path(state["root"]) / "pids").iterdir()) == []


def test_exec_output_is_bounded(tmp_path: Path, settings: Any) -> None:
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    runner = LocalRunner("local", {"root": str(tmp_path), "max_output_bytes": 1000})
    state = runner.start(make_spec()).state
    try:
        result = sh(runner, state, "head -c 5000000 /dev/zero; head -c 3000 /dev/zero >&2")
        assert result.ok
        assert len(result.stdout) == 1000 and len(result.stderr) == 1000
    finally:
        runner.stop(state)


def test_resource_limits(runner: LocalRunner, started) -> None:
    state = started(memory_mb=64, disk_mb=1)
    # RLIMIT_AS (2 x memory_mb) stops a single process from mapping far more than its share.
    big = runner.exec(state, ["python3", "-c", "bytearray(600 << 20)"])
    assert big.exit_code != 0 and b"MemoryError" in big.stderr
    # RLIMIT_FSIZE (disk_mb) caps a single file.
    assert sh(runner, state, "head -c 2000000 /dev/zero > /workspace/big").exit_code != 0
    assert (Path(state["root"]) / "workspace" / "big").stat().st_size <= 1 << 20
    # The private /tmp is a tmpfs no larger than memory_mb.
    assert sh(runner, state, "head -c 100000000 /dev/zero > /tmp/fill").exit_code != 0
    with pytest.raises(RunnerError):
        runner.write_file(state, "too-big", b"x" * (2 << 20))


# terminals --------------------------------------------------------------------------------------
def test_terminal_runs_commands_and_resizes(runner: LocalRunner, started) -> None:
    state = started()
    terminal = runner.open_terminal(state, cols=80, rows=24)
    try:
        terminal.write(b"echo $((6*7))\n")
        read_until(terminal, b"42")
        terminal.write(b"stty size\n")
        read_until(terminal, b"24 80")
        terminal.resize(cols=132, rows=43)
        terminal.write(b"stty size\n")
        read_until(terminal, b"43 132")
        terminal.write(b"tty >/dev/null && echo has-a-tty; id -u\n")
        read_until(terminal, b"1000")
        pid_files = list((Path(state["root"]) / "pids").iterdir())
        assert [p.name for p in pid_files] == [f"{terminal.pid}.json"]
    finally:
        terminal.close()
    assert not Path(f"/proc/{terminal.pid}").exists()  # killed and reaped: no zombie
    assert list((Path(state["root"]) / "pids").iterdir()) == []
    assert terminal.read() == b""
    terminal.close()  # idempotent


def test_terminal_exit_is_seen_as_eof(runner: LocalRunner, started) -> None:
    state = started()
    terminal = runner.open_terminal(state)
    try:
        terminal.write(b"exit\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            select.select([terminal.fileno()], [], [], 0.5)
            if terminal.read() == b"":
                break
        else:
            raise AssertionError("no EOF after exit")
    finally:
        terminal.close()


def test_stop_kills_the_terminal_process_tree(runner: LocalRunner, started) -> None:
    state = started()
    terminal = runner.open_terminal(state)
    token = "86123"
    terminal.write(f"sleep {token} & echo started-$((1+1))\n".encode())
    read_until(terminal, b"started-2")
    assert pids_running(token)
    stats = runner.stats(state)
    assert stats.pids >= 3 and stats.memory_bytes > 0 and stats.memory_limit_bytes == 256 << 20

    runner.stop(state, timeout=2)
    assert not Path(f"/proc/{terminal.pid}").exists()
    assert wait_gone(token) == []
    assert not Path(state["root"]).exists()
    assert runner.poll(state) is PollStatus.MISSING
    assert terminal.read() == b""


def test_stop_kills_sandboxes_it_did_not_spawn_itself(runner: LocalRunner, started, tmp_path: Path) -> None:
    """Another process (a worker) stops what the web process started: only pids/ tells it what runs."""
    state = started()
    terminal = runner.open_terminal(state)
    token = "86126"
    terminal.write(f"sleep {token} & echo started-$((2+2))\n".encode())
    read_until(terminal, b"started-4")
    other = LocalRunner("local", {"root": str(tmp_path)})
    from runners import local

    # Forget this process's handle, as a different process would not have it.
    with local._live_lock:
        saved = local._live_terminals.pop(state["root"], set())
    try:
        other.stop(state, timeout=2)
        assert wait_gone(token) == []
        assert not Path(state["root"]).exists()
    finally:
        for item in saved:
            item.close()


def test_terminal_outlives_the_thread_that_opened_it(runner: LocalRunner, started) -> None:
    """--die-with-parent follows the spawning thread; request threads come and go."""
    state = started()
    opened: list[LocalTerminal] = []
    thread = threading.Thread(target=lambda: opened.append(runner.open_terminal(state)))
    thread.start()
    thread.join()
    [terminal] = opened
    try:
        time.sleep(0.3)
        terminal.write(b"echo $((6*7))\n")
        read_until(terminal, b"42")
    finally:
        terminal.close()


CRASHING_PLATFORM = """
import sys, threading, time
from django.conf import settings
settings.configure(LAB_ALLOW_UNSANDBOXED_LOCAL=False)
from runners.base import SessionSpec
from runners.local import LocalRunner
runner = LocalRunner("local", {"root": sys.argv[1], "disk_root": sys.argv[1] + "-disks"})
state = runner.start(SessionSpec("crash", 1, "olivia", "tiny", "local")).state
opened = []
thread = threading.Thread(target=lambda: opened.append(runner.open_terminal(state)))
thread.start(); thread.join()
opened[0].write(b"sleep " + sys.argv[2].encode() + b" & echo st-$((3+3))\\n")
output = b""
while b"st-6" not in output:
    output += opened[0].read()
print("ready", flush=True)
time.sleep(60)
"""


def test_sandboxes_die_with_a_crashed_platform_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    token = "86127"
    project = Path(__file__).resolve().parents[2]
    platform = subprocess.Popen(
        [sys.executable, "-c", CRASHING_PLATFORM, str(tmp_path), token],
        cwd=project, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(project)},
    )
    try:
        assert platform.stdout is not None
        ready, _, _ = select.select([platform.stdout], [], [], 30)
        assert ready and platform.stdout.readline() == b"ready\n"
        assert pids_running(token)
    finally:
        platform.kill()  # SIGKILL: no cleanup code of ours runs
        platform.wait()
    assert wait_gone(token) == []
    # What is left is a directory; stop() (or reconciliation) removes it.
    runner = LocalRunner("local", {"root": str(tmp_path), "disk_root": f"{tmp_path}-disks"})
    [env] = runner.list_managed()
    runner.remove_managed(env)
    assert runner.list_managed() == []


def test_list_and_remove_managed(runner: LocalRunner, started) -> None:
    first, second = started(), started()
    terminal = runner.open_terminal(second)
    found = {env.session_id: env for env in runner.list_managed()}
    assert {first["session_id"], second["session_id"]} <= set(found)
    assert found[second["session_id"]].detail["processes"] == 1
    runner.remove_managed(found[second["session_id"]])
    assert not Path(second["root"]).exists()
    assert not Path(f"/proc/{terminal.pid}").exists()
    assert Path(first["root"]).exists()


# files ------------------------------------------------------------------------------------------
def test_files_round_trip(runner: LocalRunner, started) -> None:
    state = started()
    runner.write_file(state, "notes/todo.txt", b"write tests\n")
    assert runner.read_file(state, "notes/todo.txt") == b"write tests\n"
    assert runner.exec(state, ["cat", "/workspace/notes/todo.txt"]).stdout == b"write tests\n"
    runner.write_file(state, "./notes//todo.txt", b"replaced")
    assert runner.read_file(state, "notes/todo.txt") == b"replaced"
    assert sh(runner, state, "printf 'echo ran' > run.sh && chmod +x run.sh").ok
    runner.write_file(state, "run.sh", b"#!/bin/sh\necho edited\n")
    assert runner.exec(state, ["./run.sh"]).stdout == b"edited\n"  # executable bit kept

    listing = runner.list_files(state)
    assert [(e.path, e.is_dir) for e in listing][:1] == [("notes", True)]
    assert {e.path for e in listing} >= {"notes", "run.sh"}
    [todo] = runner.list_files(state, "notes")
    assert (todo.path, todo.is_dir, todo.size) == ("notes/todo.txt", False, 8)
    leftovers = [p for p in (Path(state["root"]) / "workspace" / "notes").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary file of the atomic write is gone


def test_read_file_refusals(runner: LocalRunner, started) -> None:
    state = started()
    runner.write_file(state, "big.bin", b"x" * 100)
    with pytest.raises(RunnerError, match="larger"):
        runner.read_file(state, "big.bin", max_bytes=10)
    runner.write_file(state, "dir/file", b"")
    with pytest.raises(RunnerError, match="directory"):
        runner.read_file(state, "dir")
    with pytest.raises(RunnerError, match="no such file"):
        runner.read_file(state, "missing.txt")
    assert runner.exec(state, ["mkfifo", "/workspace/pipe"]).ok
    began = time.monotonic()
    with pytest.raises(RunnerError, match="regular file"):
        runner.read_file(state, "pipe")  # must not block waiting for a writer
    assert time.monotonic() - began < 2


@pytest.mark.parametrize("path", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "evil", "rootlink/etc/passwd",
                                  "hostlink", "escape/new.txt"])
def test_paths_cannot_escape_the_workspace(runner: LocalRunner, started, tmp_path: Path, path: str) -> None:
    state = started()
    workspace = Path(state["root"]) / "workspace"
    outside = tmp_path / "outside"
    outside.mkdir()
    # Links made inside the sandbox and on the host alike.
    assert sh(runner, state, "ln -s /etc/passwd /workspace/evil && ln -s / /workspace/rootlink").ok
    (workspace / "hostlink").symlink_to("/etc/passwd")
    (workspace / "escape").symlink_to(outside)
    passwd = Path("/etc/passwd").read_bytes()

    with pytest.raises(RunnerError) as excinfo:
        runner.read_file(state, path)
    assert excinfo.value.permanent
    with pytest.raises(RunnerError):
        runner.write_file(state, path, b"pwned\n")
    with pytest.raises(RunnerError):
        runner.list_files(state, path)
    assert Path("/etc/passwd").read_bytes() == passwd
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x").exists()


def test_symlinks_that_stay_inside_the_workspace_are_followed(runner: LocalRunner, started) -> None:
    state = started()
    runner.write_file(state, "real/file.txt", b"inside")
    assert sh(runner, state, "ln -s real/file.txt alias && ln -s real dirlink").ok
    assert runner.read_file(state, "alias") == b"inside"
    assert runner.read_file(state, "dirlink/file.txt") == b"inside"
    assert [e.path for e in runner.list_files(state, "dirlink")] == ["dirlink/file.txt"]
    with pytest.raises(WorkspacePathError):
        runner.read_file(state, "/workspace/real/file.txt")


# no sandbox available ---------------------------------------------------------------------------
def test_refuses_to_run_without_bwrap(tmp_path: Path, settings: Any) -> None:
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    runner = LocalRunner("local", {"root": str(tmp_path), "bwrap": "/nonexistent/bwrap"})
    assert runner.available() is False
    spec = make_spec()
    with pytest.raises(RunnerError) as excinfo:
        runner.start(spec)
    assert excinfo.value.permanent
    message = str(excinfo.value)
    assert "bubblewrap (bwrap) is not available or cannot create namespaces here" in message
    assert "/nonexistent/bwrap" in message
    assert "install the bubblewrap package" in message
    assert "LAB_ALLOW_UNSANDBOXED_LOCAL=true" in message
    assert not (tmp_path / spec.session_id).exists()


def test_refuses_exec_and_terminal_when_bwrap_disappears(tmp_path: Path, settings: Any) -> None:
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    state = LocalRunner("local", {"root": str(tmp_path)}).start(make_spec()).state
    broken = LocalRunner("local", {"root": str(tmp_path), "bwrap": "/nonexistent/bwrap"})
    try:
        with pytest.raises(RunnerError, match="bubblewrap"):
            broken.exec(state, ["true"])
        with pytest.raises(RunnerError, match="bubblewrap"):
            broken.open_terminal(state)
    finally:
        broken.stop(state)


def test_runs_unsandboxed_only_when_allowed(tmp_path: Path, settings: Any, monkeypatch) -> None:
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = True
    monkeypatch.setenv("DJANGO_SECRET_KEY", "leak-me")
    runner = LocalRunner("local", {"root": str(tmp_path), "bwrap": "/nonexistent/bwrap"})
    assert runner.available() is True
    messages: list[str] = []
    state = runner.start(make_spec(), progress=messages.append).state
    try:
        assert any(m.startswith("WARNING: running without a sandbox") for m in messages)
        assert messages[-1] == "Ready"
        workspace = Path(state["root"]) / "workspace"
        result = sh(runner, state, "pwd; echo HOME=$HOME; env")
        assert result.ok
        assert result.stdout.startswith(f"{workspace}\nHOME={workspace}\n".encode())
        assert b"leak-me" not in result.stdout
        assert runner.exec(state, ["pwd"], workdir="/workspace").stdout == f"{workspace}\n".encode()
        with pytest.raises(WorkspacePathError):
            runner.exec(state, ["pwd"], workdir="/etc")

        terminal = runner.open_terminal(state)
        token = "86125"
        try:
            terminal.write(f"sleep {token} & echo $((6*7))\n".encode())
            read_until(terminal, b"42")
            assert pids_running(token)
        finally:
            terminal.close()
        assert wait_gone(token) == []  # background jobs die with the shell, even unsandboxed
    finally:
        runner.stop(state)

    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    assert runner.available() is False
    with pytest.raises(RunnerError, match="bubblewrap"):
        runner.start(make_spec())
