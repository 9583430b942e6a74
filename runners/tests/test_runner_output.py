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
from runners.vm_command import SERIAL_LOG as SERIAL_LOG_IN_VM
from runners.vm_command import TRIM_EVERY, BootFiles, launcher_command, launcher_plan
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
def test_docker_vm_output_is_the_serial_log_in_its_qemu_container_by_byte_offset(engine) -> None:
    # The VM runner's image, a serial log already written and far past its cap: QEMU is not needed for this.
    qemu = engine.containers.run("labs/qemu:bookworm", ["sh", "-c", "printf 'old%.0s' $(seq 1000) > /run/vm/serial.log;"
                                 " printf 'login: ' >> /run/vm/serial.log; exec sleep 60"],
                                 detach=True, labels={"labs.test": "runner-output"})
    try:
        runner = DockerVmRunner("docker-vm", {"instance": "labstestoutput", "vm_serial_log_max_mb": 0.001})
        state = {"container_id": qemu.id, "kind": "vm"}
        deadline = time.monotonic() + 20
        data, cursor = b"", None
        while not data and time.monotonic() < deadline:
            data, cursor = runner.output(state)
            time.sleep(0.1)
        # Past 1024 bytes: its newest quarter stays, after the notice; a prompt without a newline shows.
        assert data == TRIM_NOTICE + (b"old" * 1000 + b"login: ")[-(1048 // 4):]
        assert cursor == len(data)
        assert runner.output(state, cursor) == (b"", cursor)
        qemu.exec_run(["sh", "-c", "printf 'root\\r\\n' >> /run/vm/serial.log"])
        assert runner.output(state, cursor) == (b"root\r\n", cursor + 6)
        assert runner.output(state, cursor, max_bytes=2) == (b"ro", cursor + 2)
    finally:
        qemu.remove(force=True)


@pytest.mark.docker
def test_the_vm_launcher_trims_the_serial_log_while_nobody_reads_it(engine) -> None:
    # The real launcher in the VM runner's image, with `sleep` in QEMU's place: its trimmer runs beside it.
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=7, username="olivia", lab_slug="tiny", image="x.iso",
                       cpu=1, memory_mb=64, disk_mb=1)
    plan = launcher_plan(spec, BootFiles(image=Path("x.iso"), iso=True), ["sleep", "60"], 1024)
    qemu = engine.containers.run("labs/qemu:bookworm", launcher_command(plan), detach=True, init=True,
                                 labels={"labs.test": "runner-output"})
    try:
        qemu.exec_run(["sh", "-c", f"printf 'x%.0s' $(seq 5000) > {SERIAL_LOG_IN_VM}"])
        deadline = time.monotonic() + 4 * TRIM_EVERY
        size = 5000
        while size > 1024 and time.monotonic() < deadline:
            time.sleep(0.5)
            size = int(qemu.exec_run(["stat", "-c", "%s", SERIAL_LOG_IN_VM]).output)
        assert size == len(TRIM_NOTICE) + 1024 // 4
    finally:
        qemu.remove(force=True)


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
        # QEMU writes its log just after it sends the text to the terminal: read until the next prompt.
        later = b""
        deadline = time.monotonic() + 15
        while b"labvm# " not in later.partition(b"MARK-42\r\n")[2]:
            assert time.monotonic() < deadline, later[-400:]
            chunk, cursor = runner.output(state, since=cursor)
            later += chunk
            if not chunk:
                time.sleep(0.2)
        assert later.count(b"MARK-42") == 1  # once: nothing read twice
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
