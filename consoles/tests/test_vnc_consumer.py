"""The graphical console bridge: a WebSocket to the session's real VNC server (x11vnc on Xvfb).

The protocol tests drive the consumer with Channels' communicator inside the platform's
WebSocket stack (origin check, cookie auth). The flow-control tests run a real daphne and
raw sockets, because only a real server has a write buffer that a slow browser can fill.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client
from django.utils import timezone

from consoles import vnc_bridge
from runners.base import vnc_endpoint_of
from sessions_app.models import Session, State
from tests.raw_websocket import RawWebSocket, push_until_stalled
from tests.vnc_server import (
    RFB_VERSION,
    VNC_PATH,
    VncServer,
    VncServerUnavailable,
    build_vnc_application,
    free_tcp_port,
    live_platform,
    running_vnc_server,
)

ORIGIN = b"http://127.0.0.1"


# ----- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections(request):
    """The consumer's ORM calls run on asgiref's worker thread; its connection must not outlive the test."""
    yield
    if request.node.get_closest_marker("django_db"):
        await database_sync_to_async(connections.close_all)()


@pytest.fixture
def vnc_server(tmp_path) -> Any:
    try:
        with running_vnc_server(tmp_path / "tcp") as server:
            yield server
    except VncServerUnavailable as exc:
        pytest.fail(f"a real VNC server is required: {exc}")


@pytest.fixture
def vnc_unix_server(tmp_path) -> Any:
    try:
        with running_vnc_server(tmp_path / "unix", unix=True) as server:
            yield server
    except VncServerUnavailable as exc:
        pytest.fail(f"a real VNC server is required: {exc}")


@pytest.fixture
def listener() -> Any:
    """A plain TCP server socket on 127.0.0.1 that tests accept from themselves."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    yield server
    server.close()


def endpoint_of(server: socket.socket) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.getsockname()[1]}


def make_session(user, lab, endpoint: dict[str, Any] | None, state: str = State.RUNNING) -> Session:
    now = timezone.now()
    return Session.objects.create(
        user=user, lab=lab, state=state, runner_name="fake",
        endpoints={"vnc": endpoint} if endpoint else {},
        started_at=now, expires_at=now + timedelta(hours=1), last_active_at=now - timedelta(hours=1),
    )


def cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def communicator(session: Session, cookie: bytes | None, origin: bytes = ORIGIN,
                 subprotocols: list[str] | None = None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1"), (b"origin", origin)]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(build_vnc_application(), VNC_PATH.format(pk=session.pk) + query,
                                 headers=headers, subprotocols=subprotocols)


class RfbReader:
    """Reads RFB bytes from the communicator regardless of how frames split them."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.buffer = b""

    async def read_exact(self, count: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            message = await self.comm.receive_output(timeout=max(0.1, deadline - time.monotonic()))
            assert message["type"] == "websocket.send", message
            assert "bytes" in message and message.get("text") is None, "noVNC expects only binary frames"
            self.buffer += message["bytes"]
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


async def expect_close(comm: WebsocketCommunicator, code: int) -> dict[str, Any]:
    message = await comm.receive_output(timeout=10)
    assert message["type"] == "websocket.close" and message["code"] == code, message
    return message


def accepted_within(server: socket.socket, seconds: float) -> socket.socket | None:
    server.settimeout(seconds)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return None
    return conn


async def handshake(rfb: RfbReader, comm: WebsocketCommunicator, server: VncServer) -> tuple[int, int, bytes]:
    """Version, security None, ClientInit; returns the framebuffer size and the pixel format."""
    assert await rfb.read_exact(12) == RFB_VERSION
    await comm.send_to(bytes_data=RFB_VERSION)
    count = (await rfb.read_exact(1))[0]
    types = await rfb.read_exact(count)
    assert 1 in types, f"x11vnc -nopw offers security type None, got {list(types)}"
    await comm.send_to(bytes_data=b"\x01")
    assert await rfb.read_exact(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
    await comm.send_to(bytes_data=b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await rfb.read_exact(4))
    pixel_format = await rfb.read_exact(16)
    (name_length,) = struct.unpack(">I", await rfb.read_exact(4))
    await rfb.read_exact(name_length)
    return width, height, pixel_format


# ----- the owner's console --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_owner_completes_an_rfb_handshake_and_sees_the_red_screen(owner, lab, vnc_server):
    session = await database_sync_to_async(make_session)(owner, lab, vnc_server.endpoint)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol is None  # noVNC 1.7 offers no subprotocol by default
    rfb = RfbReader(comm)

    width, height, pixel_format = await handshake(rfb, comm, vnc_server)
    assert (width, height) == (vnc_server.width, vnc_server.height)
    bits_per_pixel, _depth, big_endian, true_colour = pixel_format[:4]
    red_shift = pixel_format[10]
    assert bits_per_pixel == 32 and true_colour  # any non-zero byte means true colour

    # Non-incremental updates of an 8×8 corner, raw encoding (no SetEncodings sent). x11vnc copies
    # the X screen only once a client is connected, so the first answers may still be black.
    deadline = time.monotonic() + 15
    while True:
        await comm.send_to(bytes_data=struct.pack(">BBHHHH", 3, 0, 0, 0, 8, 8))
        message_type, _pad, rects = struct.unpack(">BBH", await rfb.read_exact(4))
        assert message_type == 0 and rects >= 1
        for _ in range(rects):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await rfb.read_exact(12))
            assert encoding == 0
            pixels = await rfb.read_exact(w * h * 4)
            if (x, y) == (0, 0):
                first = int.from_bytes(pixels[:4], "big" if big_endian else "little")
        is_red = (first >> red_shift) & 0xFF == 0xFF and first & ~(0xFF << red_shift) & 0xFFFFFF == 0
        if is_red or time.monotonic() > deadline:  # x11vnc may serve a blank frame before its first copy
            break
        await asyncio.sleep(0.2)
    assert (first >> red_shift) & 0xFF == 0xFF and first & ~(0xFF << red_shift) & 0xFFFFFF == 0, hex(first)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_binary_subprotocol_is_accepted_when_the_client_offers_it(owner, lab, vnc_server):
    session = await database_sync_to_async(make_session)(owner, lab, vnc_server.endpoint)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner), subprotocols=["binary"])
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "binary"
    assert await RfbReader(comm).read_exact(12) == RFB_VERSION
    await comm.disconnect()


def test_only_the_binary_subprotocol_is_ever_chosen():
    assert vnc_bridge.choose_subprotocol(["base64", "binary"]) == "binary"
    assert vnc_bridge.choose_subprotocol(["base64"]) is None
    assert vnc_bridge.choose_subprotocol([]) is None


@pytest.mark.django_db(transaction=True)
async def test_a_unix_socket_target_works(owner, lab, vnc_unix_server):
    session = await database_sync_to_async(make_session)(owner, lab, vnc_unix_server.endpoint)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    width, height, _ = await handshake(RfbReader(comm), comm, vnc_unix_server)
    assert (width, height) == (vnc_unix_server.width, vnc_unix_server.height)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_unix_socket_whose_path_is_too_long_for_an_address_works(owner, lab, vnc_unix_server, tmp_path):
    # VM sockets live under LAB_DATA_DIR, which can be deeper than sun_path's 108 bytes.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    long_path = deep / "vnc.sock"
    os.rename(vnc_unix_server.endpoint["unix"], long_path)  # a bound socket keeps working when renamed
    assert len(os.fsencode(str(long_path))) > 108
    session = await database_sync_to_async(make_session)(owner, lab, {"unix": str(long_path)})
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    width, height, _ = await handshake(RfbReader(comm), comm, vnc_unix_server)
    assert (width, height) == (vnc_unix_server.width, vnc_unix_server.height)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_staff_can_open_a_learners_console(staff_user, owner, lab, vnc_server):
    session = await database_sync_to_async(make_session)(owner, lab, vnc_server.endpoint)
    comm = communicator(session, await database_sync_to_async(cookie_for)(staff_user))
    assert (await comm.connect())[0]
    assert await RfbReader(comm).read_exact(12) == RFB_VERSION
    await comm.disconnect()


# ----- who may connect ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_another_learner_is_closed_with_4403_before_anything_is_connected(owner, other_learner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    comm = communicator(session, await database_sync_to_async(cookie_for)(other_learner))
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_FORBIDDEN)
    assert accepted_within(listener, 0.5) is None
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_visitor_is_closed_with_4403(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    comm = communicator(session, cookie=None)
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_FORBIDDEN)
    assert accepted_within(listener, 0.5) is None
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_cross_origin_page_is_refused(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner), origin=b"https://evil.example")
    connected, _code = await comm.connect()
    assert not connected
    assert accepted_within(listener, 0.5) is None
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_query_string_cannot_choose_another_target(owner, lab, listener):
    decoy = socket.create_server(("127.0.0.1", 0))
    try:
        session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
        decoy_port = decoy.getsockname()[1]
        query = f"?host=127.0.0.1&port={decoy_port}&unix=/tmp/x.sock&target=127.0.0.1:{decoy_port}"
        comm = communicator(session, await database_sync_to_async(cookie_for)(owner), query=query)
        assert (await comm.connect())[0]
        conn = await asyncio.to_thread(accepted_within, listener, 5)
        assert conn is not None
        conn.close()
        assert accepted_within(decoy, 0.3) is None
        await comm.disconnect()
    finally:
        decoy.close()


# ----- sessions without a console -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_session_without_a_vnc_endpoint_is_closed_with_4409(owner, lab):
    session = await database_sync_to_async(make_session)(owner, lab, None)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_UNAVAILABLE)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_session_that_is_not_running_is_closed_with_4409(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener), State.STOPPED)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_UNAVAILABLE)
    assert accepted_within(listener, 0.5) is None
    await comm.disconnect()


@pytest.mark.parametrize("endpoint", [
    {"host": "127.0.0.1", "port": "5900"}, {"host": "", "port": 5900}, {"port": 5900},
    {"host": "127.0.0.1", "port": 70000}, {"unix": "relative/vnc.sock"}, "127.0.0.1:5900",
])
def test_a_malformed_vnc_endpoint_counts_as_none(endpoint):
    assert vnc_endpoint_of({"vnc": endpoint}) is None


@pytest.mark.django_db(transaction=True)
async def test_a_vnc_server_that_is_down_closes_with_4502(owner, lab, tmp_path):
    session = await database_sync_to_async(make_session)(owner, lab, {"host": "127.0.0.1", "port": free_tcp_port()})
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_UPSTREAM_FAILED)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_missing_unix_socket_closes_with_4502(owner, lab, tmp_path):
    session = await database_sync_to_async(make_session)(owner, lab, {"unix": str(tmp_path / "gone.sock")})
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    await expect_close(comm, vnc_bridge.CLOSE_UPSTREAM_FAILED)
    await comm.disconnect()


# ----- either side closing --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_when_the_vnc_server_closes_the_browser_socket_closes(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    conn = await asyncio.to_thread(accepted_within, listener, 5)
    assert conn is not None
    conn.sendall(b"RFB 003.008\n")
    conn.close()
    assert await RfbReader(comm).read_exact(12) == RFB_VERSION
    await expect_close(comm, 1000)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_when_the_browser_leaves_the_vnc_connection_closes(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    conn = await asyncio.to_thread(accepted_within, listener, 5)
    assert conn is not None
    await comm.send_to(bytes_data=b"hello")
    await comm.send_to(text_data="text frames are ignored")
    await comm.disconnect()
    conn.settimeout(5)
    received = b""
    while chunk := await asyncio.to_thread(conn.recv, 4096):
        received += chunk
    assert received == b"hello"  # and then end of stream
    conn.close()


# ----- activity -------------------------------------------------------------------------------


def _last_active(session: Session) -> Any:
    return Session.objects.get(pk=session.pk).last_active_at


async def _bytes_arrive(conn: socket.socket, count: int) -> bytes:
    conn.settimeout(5)
    data = b""
    while len(data) < count:
        chunk = await asyncio.to_thread(conn.recv, 4096)
        assert chunk, "the bridge closed the VNC connection"
        data += chunk
    return data


@pytest.mark.django_db(transaction=True)
async def test_keyboard_input_from_the_owner_counts_as_activity_but_screen_refreshes_do_not(owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    before = await database_sync_to_async(_last_active)(session)
    comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
    assert (await comm.connect())[0]
    conn = await asyncio.to_thread(accepted_within, listener, 5)
    assert conn is not None

    refresh = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)  # what noVNC sends after every update
    await comm.send_to(bytes_data=refresh * 2)
    assert await _bytes_arrive(conn, 20) == refresh * 2
    await asyncio.sleep(0.3)
    assert await database_sync_to_async(_last_active)(session) == before

    key = struct.pack(">BBHI", 4, 1, 0, 0x61)  # KeyEvent: "a" pressed
    await comm.send_to(bytes_data=key)
    assert await _bytes_arrive(conn, 8) == key
    deadline = time.monotonic() + 5
    while await database_sync_to_async(_last_active)(session) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await database_sync_to_async(_last_active)(session) > before
    conn.close()
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_staff_input_does_not_count_as_the_learners_activity(staff_user, owner, lab, listener):
    session = await database_sync_to_async(make_session)(owner, lab, endpoint_of(listener))
    before = await database_sync_to_async(_last_active)(session)
    comm = communicator(session, await database_sync_to_async(cookie_for)(staff_user))
    assert (await comm.connect())[0]
    conn = await asyncio.to_thread(accepted_within, listener, 5)
    assert conn is not None
    key = struct.pack(">BBHI", 4, 1, 0, 0x61)
    await comm.send_to(bytes_data=key)
    assert await _bytes_arrive(conn, 8) == key
    await asyncio.sleep(0.3)
    assert await database_sync_to_async(_last_active)(session) == before
    conn.close()
    await comm.disconnect()


def test_activity_writes_are_throttled():
    now = [100.0]
    throttle = vnc_bridge.ActivityThrottle(interval=10, clock=lambda: now[0])
    assert throttle.due()
    now[0] += 9
    assert not throttle.due()
    now[0] += 2
    assert throttle.due()


# ----- flow control on a real daphne ----------------------------------------------------------

BOUND_BYTES = 64 * 1024 * 1024  # kernel socket buffers on loopback plus the bridge's own, with room


@pytest.fixture(scope="module")
def live() -> Any:
    """One daphne for both flow-control tests: a session whose VNC server pushes, one whose never reads."""
    source = socket.create_server(("127.0.0.1", 0))
    sink = socket.socket()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # inherited by the accepted socket
    sink.bind(("127.0.0.1", 0))
    sink.listen()
    endpoints = {name: {"host": "127.0.0.1", "port": sock.getsockname()[1]}
                 for name, sock in (("source", source), ("sink", sink))}
    log_dir = Path(tempfile.mkdtemp(prefix="vnc-live-log-"))
    try:
        with live_platform(log_dir, endpoints) as platform:
            yield platform, source, sink
    finally:
        source.close()
        sink.close()
        shutil.rmtree(log_dir, ignore_errors=True)


def test_a_browser_that_stops_reading_pauses_reading_from_the_vnc_server(live):
    platform, source, _sink = live
    source.settimeout(30)
    result: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = source.accept()
        except OSError as exc:
            result["error"] = exc
            return
        with conn:
            result["pushed"], result["stalled"] = push_until_stalled(conn, os.urandom(64 * 1024))

    pusher = threading.Thread(target=serve, daemon=True)
    pusher.start()
    client = RawWebSocket(platform.port, platform.path("source"), platform.cookie, platform.origin,
                          receive_buffer=64 * 1024)
    pusher.join(timeout=60)  # the client never reads a byte
    client.close()
    assert "error" not in result, result
    assert not pusher.is_alive()
    assert result["stalled"], f"the bridge kept reading: {result['pushed'] / 2**20:.0f} MiB taken in"
    assert 64 * 1024 < result["pushed"] < BOUND_BYTES, result


def test_a_vnc_server_that_stops_reading_pauses_reading_from_the_browser(live):
    platform, _source, sink = live
    sink.settimeout(30)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(sink.accept()[0]), daemon=True)
    accepting.start()
    try:
        client = RawWebSocket(platform.port, platform.path("sink"), platform.cookie, platform.origin)
        accepting.join(timeout=30)
        assert held, "the bridge never connected to the VNC server"
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        pushed, stalled = push_until_stalled(client.sock, RawWebSocket.binary_frame(b"k" * 60_000))
        client.close()
    finally:
        for conn in held:
            conn.close()
    assert stalled, f"the bridge kept reading from the browser: {pushed / 2**20:.0f} MiB taken in"
    assert 64 * 1024 < pushed < BOUND_BYTES, pushed
