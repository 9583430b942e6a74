"""Runner.output, what staff follow on the session page: a real container's stdout and stderr through
the real engine, a real VM's serial console (and its log file on its own), the in-memory runner's,
and the runners that have none say so."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import docker
import pytest

from runners.base import Runner, RunnerError, SessionSpec
from runners.docker import DockerRunner
from runners.docker_vm import DockerVmRunner
from runners.fake import FakeRunner
from runners.local import LocalRunner
from runners.qemu import SERIAL_LOG, QemuRunner
from runners.serial_log import TRIM_NOTICE, read, trim
from tests.vm_image import serial_shell, vm_spec

TINY = "labs/busybox:latest"
BOOT_TIMEOUT = 240


# ---- Docker: a real container ------------------------------------------------------------------


@pytest.fixture
def containers(engine):
    """Run containers on the real engine that print what a test wants; all removed afterwards."""
    made = []

    def run(script: str):
        container = engine.containers.run(TINY, ["sh", "-c", script], detach=True,
                                          labels={"labs.test": "runner-output"})
        made.append(container)
        return container

    yield run
    for container in made:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def wait_for(runner: DockerRunner, state: dict, needle: bytes, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        data, _ = runner.output(state)
        if needle in data or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


@pytest.mark.docker
def test_docker_output_is_the_containers_stdout_and_stderr_after_the_cursor(containers) -> None:
    # Apart in time: the engine logs stdout and stderr each as it reads them, ordered only by time.
    container = containers("echo one; sleep 0.3; echo two >&2; sleep 1; echo three; exec sleep 60")
    runner = DockerRunner("docker-test", {"instance": "labstestoutput"})
    state = {"container_id": container.id}

    data = wait_for(runner, state, b"two")
    assert data.startswith(b"one\ntwo\n"), data
    first, cursor = runner.output(state)
    assert first == b"one\ntwo\n" and cursor is not None
    again, same = runner.output(state, since=cursor)
    assert (again, same) == (b"", cursor)  # nothing new: the same cursor, no line twice

    deadline = time.monotonic() + 20
    later = b""
    while b"three" not in later and time.monotonic() < deadline:
        time.sleep(0.2)
        later, cursor = runner.output(state, since=cursor)
    assert later == b"three\n"


@pytest.mark.docker
def test_docker_output_reads_a_burst_in_pieces_without_losing_or_repeating_a_line(containers) -> None:
    container = containers("i=0; while [ $i -lt 3000 ]; do echo line-$i-padding-padding-padding; i=$((i+1)); done; "
                           "echo done; exec sleep 60")
    runner = DockerRunner("docker-test", {"instance": "labstestoutput"})
    state = {"container_id": container.id}
    assert b"done" in wait_for(runner, state, b"done")

    # A first read brings the newest output that fits; then everything comes after a cursor, in pieces.
    newest, _ = runner.output(state, max_bytes=4096)
    assert len(newest) <= 4096 and newest.endswith(b"done\n")
    received, calls = b"", 0
    cursor: float | None = 0.0001  # a cursor before the first line: everything
    while True:
        piece, cursor = runner.output(state, since=cursor, max_bytes=8192)
        if not piece:
            break
        assert len(piece) <= 8192
        received += piece
        calls += 1
    lines = received.decode().splitlines()
    assert lines == [f"line-{i}-padding-padding-padding" for i in range(3000)] + ["done"]
    assert calls > 10


@pytest.mark.docker
def test_docker_output_marks_the_lines_of_a_sessions_other_containers(containers) -> None:
    main = containers("echo from-the-learner; exec sleep 60")
    engine_beside = containers("sleep 0.5; echo from-the-engine; exec sleep 60")
    host = containers("sleep 1; echo from-the-second-host; exec sleep 60")
    runner = DockerRunner("docker-test", {"instance": "labstestoutput"})
    state = {"container_id": main.id, "engine_container_id": engine_beside.id, "hosts": {"web": host.id}}
    data = wait_for(runner, state, b"second-host")
    assert data == b"from-the-learner\n[engine] from-the-engine\n[web] from-the-second-host\n"


@pytest.mark.docker
def test_docker_vm_output_is_its_qemu_containers_log_alone(containers) -> None:
    qemu = containers("echo 'labs-vm: cannot read the base disk' >&2; exec sleep 60")
    other = containers("echo not-the-vm; exec sleep 60")
    runner = DockerVmRunner("docker-vm", {"instance": "labstestoutput"})
    state = {"container_id": qemu.id, "engine_container_id": other.id, "kind": "vm"}
    deadline = time.monotonic() + 20
    data = b""
    while not data and time.monotonic() < deadline:
        data, _ = runner.output(state)
        time.sleep(0.1)
    assert data == b"labs-vm: cannot read the base disk\n"


@pytest.mark.docker
def test_docker_output_of_a_session_started_by_the_runner(engine, tmp_path, settings) -> None:
    settings.DATA_DIR = tmp_path
    runner = DockerRunner("docker-test", {"instance": f"labstest{uuid.uuid4().hex[:6]}"})
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=7, username="olivia", lab_slug="tiny", image=TINY,
                       cpu=0.5, memory_mb=64, pids_limit=64, network_mode="none")
    state = runner.start(spec).state
    try:
        assert runner.output(state) == (b"", None)  # its keep-alive prints nothing
    finally:
        runner.stop(state, timeout=1)
    with pytest.raises(RunnerError) as gone:
        runner.output(state)
    assert gone.value.permanent and "not found" in str(gone.value)


# ---- QEMU: the serial console ------------------------------------------------------------------


def test_the_serial_log_is_read_after_its_cursor(tmp_path) -> None:
    log = tmp_path / "serial.log"
    assert read(log, None, 100) == (b"", None)  # nothing printed yet
    log.write_bytes(b"SeaBIOS\r\nbooting\r\n")
    data, cursor = read(log, None, 8)
    assert (data, cursor) == (b"ooting\r\n", 18.0)  # the newest that fits
    with log.open("ab") as guest:
        guest.write(b"labvm# ")
    assert read(log, cursor, 100) == (b"labvm# ", 25.0)  # a prompt needs no newline
    assert read(log, 25.0, 100) == (b"", 25.0)
    assert read(log, 0.0, 5) == (b"SeaBI", 5.0)


def test_the_serial_log_keeps_under_its_cap(tmp_path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"".join(b"line %05d\n" % i for i in range(1000)))  # 11,000 bytes
    _, cursor = read(log, None, 100)
    assert not trim(log, 20_000)
    assert trim(log, 4000)
    kept = log.read_bytes()
    assert kept.startswith(TRIM_NOTICE) and kept.endswith(b"line 00999\n")
    assert len(kept) == len(TRIM_NOTICE) + 1000
    # A reader whose cursor is now past the end starts again with what was kept.
    data, cursor = read(log, cursor, 100_000)
    assert data == kept and cursor == float(len(kept))
    with log.open("ab") as guest:  # QEMU goes on appending
        guest.write(b"after the cut\n")
    assert read(log, cursor, 100) == (b"after the cut\n", float(len(kept) + 14))
    assert not trim(tmp_path / "missing.log", 10)


@pytest.mark.slow
def test_qemu_output_is_the_vms_serial_console(vm_image, tmp_path) -> None:
    runner = QemuRunner("qemu", {"root": str(tmp_path / "vm-sessions"), "accel": "tcg", "run_as": ""})
    state = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state
    try:
        # The kernel and the shell print to ttyS0 with no terminal attached: it is all in the log.
        deadline = time.monotonic() + BOOT_TIMEOUT
        boot, cursor = runner.output(state)
        while b"labvm# " not in boot and time.monotonic() < deadline:
            time.sleep(0.5)
            boot, cursor = runner.output(state, max_bytes=1 << 20)
        assert b"Linux version" in boot or b"labvm# " in boot, boot[-400:]
        assert (Path(state["dir"]) / SERIAL_LOG).is_file()

        # What the learner's terminal shows is there too, after the cursor.
        serial_shell(runner, state, b"echo MARK-$((6*7))", b"MARK-42")
        later, cursor = runner.output(state, since=cursor)
        assert b"MARK-42" in later
        assert runner.output(state, since=cursor)[0] == b""
    finally:
        runner.stop(state, timeout=0)
    with pytest.raises(RunnerError, match="the VM is gone"):
        runner.output(state)


# ---- the others --------------------------------------------------------------------------------


def test_the_fake_runner_prints_what_it_is_told() -> None:
    runner = FakeRunner("fake-output", {})
    state = runner.start(SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="l",
                                     image="x")).state
    try:
        data, cursor = runner.output(state)
        assert data == b"fake environment: started\n"
        runner.emit(state, b"hello\n")
        runner.emit(state, b"world\n")
        assert runner.output(state, since=cursor) == (b"hello\nworld\n", 3.0)
        assert runner.output(state, since=3.0) == (b"", 3.0)
        assert runner.output(state, since=cursor, max_bytes=6) == (b"hello\n", 2.0)
    finally:
        runner.stop(state)
    with pytest.raises(RunnerError, match="gone"):
        runner.output(state)


def test_a_local_session_says_it_has_no_output(tmp_path) -> None:
    with pytest.raises(RunnerError) as refused:
        LocalRunner("local", {"root": str(tmp_path)}).output({"session_id": str(uuid.uuid4())})
    assert refused.value.permanent and "no output to follow" in str(refused.value)


def test_a_runner_without_output_says_so() -> None:
    with pytest.raises(RunnerError) as refused:
        Runner("plain").output({})
    assert refused.value.permanent and str(refused.value) == "output is not available for the plain runner"
