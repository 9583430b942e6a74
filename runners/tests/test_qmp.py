"""The QMP client against a real QEMU (an empty machine: no guest, answers at once)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from runners.qmp import QMPClient, QMPCommandError, QMPError, QMPTimeout


def _accepts(path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


@pytest.fixture
def qemu_socket(tmp_path):
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail("qemu-system-x86_64 is required (apt-get install qemu-system-x86)")
    path = tmp_path / "qmp.sock"
    process = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{path},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not _accepts(path):  # the file appears at bind(), a moment before QEMU listens
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"QEMU did not open its QMP socket: {process.stderr.read().decode() if process.stderr else ''}")
        time.sleep(0.02)
    yield str(path)
    process.kill()
    process.wait()


def test_connecting_negotiates_capabilities_and_commands_return_their_value(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10) as qmp:
        assert qmp.greeting["version"]["qemu"]["major"] >= 7
        status = qmp.execute("query-status")
        assert status["status"] in ("running", "prelaunch")
        assert isinstance(status["running"], bool)


def test_commands_are_refused_until_capabilities_are_negotiated(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10, negotiate=False) as qmp:
        with pytest.raises(QMPCommandError) as refused:
            qmp.execute("query-status")
        assert refused.value.error_class == "CommandNotFound"
        qmp.execute("qmp_capabilities")
        assert "status" in qmp.execute("query-status")


def test_an_unknown_command_raises_with_qemus_error_class(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10) as qmp:
        with pytest.raises(QMPCommandError) as refused:
            qmp.execute("no-such-command")
        assert refused.value.error_class == "CommandNotFound"
        assert "no-such-command" in str(refused.value)
        assert qmp.execute("query-status")  # the connection is still usable


def test_events_are_kept_in_order_until_waited_for(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10) as qmp:
        qmp.execute("stop")
        qmp.execute("cont")
        resumed = qmp.wait_event("RESUME", timeout=10)
        assert resumed["event"] == "RESUME"
        assert [event["event"] for event in qmp.take_events()] == ["STOP"]
        assert qmp.take_events() == []


def test_waiting_for_an_event_that_never_comes_times_out_and_closes(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10) as qmp:
        started = time.monotonic()
        with pytest.raises(QMPTimeout):
            qmp.wait_event("SHUTDOWN", timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
        assert qmp.closed
        with pytest.raises(QMPError):
            qmp.execute("query-status")


def test_a_second_client_gets_no_greeting_while_the_first_holds_the_socket(qemu_socket):
    with QMPClient.connect(qemu_socket, timeout=10) as first:
        with pytest.raises(QMPTimeout):
            QMPClient.connect(qemu_socket, timeout=0.5)
        assert first.execute("query-status")
    with QMPClient.connect(qemu_socket, timeout=10) as later:
        assert later.execute("query-status")


def test_file_descriptors_travel_with_the_command_that_names_them(qemu_socket, tmp_path):
    fd = os.open(tmp_path / "payload", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with QMPClient.connect(qemu_socket, timeout=10) as qmp:
            with pytest.raises(QMPCommandError):
                qmp.execute("closefd", {"fdname": "passed"})  # nothing under that name yet
            qmp.execute("getfd", {"fdname": "passed"}, fds=[fd])
            qmp.execute("closefd", {"fdname": "passed"})  # QEMU received and registered it
    finally:
        os.close(fd)


def test_a_missing_socket_fails_with_a_clear_error(tmp_path):
    with pytest.raises(QMPError) as failed:
        QMPClient.connect(str(tmp_path / "absent.sock"), timeout=1)
    assert "absent.sock" in str(failed.value)


def test_quit_ends_the_conversation_and_later_commands_fail(qemu_socket):
    qmp = QMPClient.connect(qemu_socket, timeout=10)
    qmp.execute("quit")
    with pytest.raises(QMPError):
        qmp.execute("query-status")
    qmp.close()
