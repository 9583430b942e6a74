"""The preview's WebSocket relay keeps its buffers bounded both ways on a real daphne.

The platform (labsite.asgi.application) runs under daphne in a thread of this process; the
learner's "app" and the browser are plain sockets, so each test decides exactly who reads.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consoles.flow import DEFAULT_HIGH_WATER
from preview.tests.test_preview_support import BLOCK, session_cookie, start_session
from tests.raw_websocket import (
    OP_BINARY,
    RawWebSocket,
    accept_raw_websocket,
    daphne_buffered,
    push_until_stalled,
    server_frame,
)

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures

MB = 1024 * 1024
CAP = 128 * MB  # an unbounded relay takes this much in (in this process) within seconds
BOUND = 64 * MB  # loopback socket buffers plus the relay's own, with room


@pytest.fixture
def app_listener() -> Iterator[socket.socket]:
    """Where the learner's app listens; accepted sockets inherit its small receive buffer."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(30)
    yield listener
    listener.close()


@pytest.fixture
def app_session(owner: Any, lab: Any, app_listener: socket.socket) -> Any:
    lab.exposed_ports = [app_listener.getsockname()[1]]
    lab.save(update_fields=["exposed_ports"])
    return start_session(owner, lab)


def open_browser(daphne: Any, session: Any, port: int, owner: Any, receive_buffer: int | None = None
                 ) -> tuple[RawWebSocket, str]:
    path = f"/sessions/{session.pk}/preview/{port}/socket"
    client = RawWebSocket(daphne.port, path, f"sessionid={session_cookie(owner)}", daphne.url,
                          receive_buffer=receive_buffer)
    return client, path


def test_a_browser_that_stops_reading_pauses_reading_from_the_app(daphne, app_session, app_listener,
                                                                    owner) -> None:
    frame = server_frame(OP_BINARY, BLOCK)  # 64 KiB messages, as fast as the relay takes them
    result: dict[str, Any] = {}
    release = threading.Event()

    def flood() -> None:
        try:
            conn = accept_raw_websocket(app_listener)
        except OSError as exc:
            result["error"] = exc
            return
        with conn:
            result["pushed"], result["stalled"] = push_until_stalled(conn, frame, cap=CAP)
            release.wait(60)  # keep the connection: what was taken in must still arrive

    app = threading.Thread(target=flood, daemon=True)
    app.start()
    port = app_listener.getsockname()[1]
    client, path = open_browser(daphne, app_session, port, owner, receive_buffer=64 * 1024)
    try:
        peak, deadline = 0, time.monotonic() + 60
        while "pushed" not in result and "error" not in result and time.monotonic() < deadline:
            peak = max(peak, daphne_buffered(daphne.server, path))  # the browser reads nothing
            time.sleep(0.02)
        assert "error" not in result, result
        assert result.get("stalled"), f"the relay kept reading from the app: {result.get('pushed', 0) / MB:.0f} MiB"
        assert 64 * 1024 < result["pushed"] < BOUND, result
        # daphne's buffer for the browser stopped one message past the bound.
        assert peak <= DEFAULT_HIGH_WATER + len(frame) + 4096, f"daphne buffered {peak / MB:.1f} MiB"

        # Reading again, the browser gets every whole message the app sent: paused, not lost.
        expected = result["pushed"] // len(frame) * len(BLOCK)
        received = 0
        client.sock.settimeout(30)
        while received < expected:
            opcode, payload = client.read_frame()
            assert opcode == OP_BINARY and payload == BLOCK, (opcode, len(payload))
            received += len(payload)
        assert received == expected
    finally:
        release.set()
        client.close()
        app.join(timeout=10)


def test_an_app_that_stops_reading_pauses_reading_from_the_browser(daphne, app_session, app_listener,
                                                                    owner) -> None:
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(accept_raw_websocket(app_listener)), daemon=True)
    accepting.start()
    port = app_listener.getsockname()[1]
    client, _path = open_browser(daphne, app_session, port, owner)
    try:
        accepting.join(timeout=30)
        assert held, "the relay never connected to the app"
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        pushed, stalled = push_until_stalled(client.sock, RawWebSocket.binary_frame(b"k" * 60_000), cap=CAP)
    finally:
        client.close()
        for conn in held:
            conn.close()
    assert stalled, f"the relay kept reading from the browser: {pushed / MB:.0f} MiB taken in"
    assert 64 * 1024 < pushed < BOUND, pushed
