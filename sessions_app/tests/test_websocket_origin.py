"""Cross-site WebSocket hijacking is refused by the application the server really runs.

Other console tests build their own middleware stack; these drive `labsite.asgi.application`
itself, so dropping AllowedHostsOriginValidator (or routing a console around it) fails here.
A page on another origin sends the learner's own session cookie with its upgrade request (that
is the attack), so every refused request below carries the owner's valid cookie: only the
Origin check stands between it and the session.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from sessions_app.models import Session, State
from sessions_app.tests.test_preview_support import session_cookie, start_session

pytest_plugins = ["sessions_app.tests.test_preview_support"]  # ws_upstream, worker_connections
pytestmark = pytest.mark.usefixtures("worker_connections")  # transactional: consumers use other threads

SAME_ORIGIN = b"http://localhost"  # in the default DJANGO_ALLOWED_HOSTS
FOREIGN_ORIGINS = [
    b"https://evil.example",
    b"http://localhost.evil.example",  # a look-alike that only starts with an allowed host
    b"null",  # sandboxed iframes and file:// pages
]
RFB_VERSION = b"RFB 003.008\n"


def communicator(path: str, origin: bytes, user: Any) -> WebsocketCommunicator:
    # Imported here, not at collection: building it sets up static files, which the test settings
    # relocate. (The origin check keeps the ALLOWED_HOSTS of that moment; no test here overrides it.)
    from labsite.asgi import application

    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}".encode()
    return WebsocketCommunicator(application, path, headers=[(b"origin", origin), (b"cookie", cookie)])


async def refused(comm: WebsocketCommunicator) -> bool:
    """Whether the upgrade was closed without ever being accepted."""
    connected, _code = await comm.connect(timeout=10)
    if connected:
        await comm.disconnect()
    return not connected


@pytest.fixture
def vnc_listener() -> Iterator[socket.socket]:
    """Stands in for the session's VNC server: tests see whether anything connected to it."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


@pytest.fixture
def vnc_session(owner: Any, lab: Any, vnc_listener: socket.socket) -> Session:
    now = timezone.now()
    return Session.objects.create(
        user=owner, lab=lab, state=State.RUNNING, runner_name="fake", started_at=now,
        expires_at=now + timedelta(hours=1),
        endpoints={"vnc": {"host": "127.0.0.1", "port": vnc_listener.getsockname()[1]}},
    )


def accepted_within(server: socket.socket, seconds: float) -> socket.socket | None:
    server.settimeout(seconds)
    try:
        return server.accept()[0]
    except TimeoutError:
        return None


# ---- terminal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_terminal_upgrade_from_another_origin_is_refused(origin, owner, lab) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{session.pk}/terminal/?name=1", origin, owner)
    assert await refused(comm), f"a page on {origin!r} got the owner's terminal"


async def test_the_owner_gets_a_terminal_from_the_same_origin(owner, lab) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{session.pk}/terminal/?name=1", SAME_ORIGIN,
                                                      owner)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    ready = json.loads((await comm.receive_output(timeout=10))["text"])
    assert ready["type"] == "ready"
    await comm.send_to(bytes_data=b"echo origin-ok\n")  # the fake shell echoes what it is sent
    echoed = await comm.receive_output(timeout=10)
    assert echoed.get("bytes") == b"echo origin-ok\n"
    await comm.disconnect()


# ---- graphical console --------------------------------------------------------------------------


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_vnc_upgrade_from_another_origin_is_refused(origin, owner, vnc_session, vnc_listener) -> None:
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{vnc_session.pk}/vnc/", origin, owner)
    assert await refused(comm), f"a page on {origin!r} got the owner's console"
    assert await asyncio.to_thread(accepted_within, vnc_listener, 0.5) is None, "the VNC server was reached"


async def test_the_owner_gets_the_vnc_console_from_the_same_origin(owner, vnc_session, vnc_listener) -> None:
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{vnc_session.pk}/vnc/", SAME_ORIGIN, owner)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    conn = await asyncio.to_thread(accepted_within, vnc_listener, 10)
    assert conn is not None, "the bridge never connected to the VNC server"
    with conn:
        conn.sendall(RFB_VERSION)
        assert (await comm.receive_output(timeout=10)).get("bytes") == RFB_VERSION
        await comm.disconnect()


# ---- web preview --------------------------------------------------------------------------------


@pytest.fixture
def preview_session(owner: Any, lab: Any, ws_upstream: Any) -> Session:
    lab.exposed_ports = [ws_upstream.port]
    lab.save(update_fields=["exposed_ports"])
    return start_session(owner, lab)


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_preview_upgrade_from_another_origin_is_refused(origin, owner, preview_session, ws_upstream) -> None:
    path = f"/sessions/{preview_session.pk}/preview/{ws_upstream.port}/socket"
    comm = await database_sync_to_async(communicator)(path, origin, owner)
    assert await refused(comm), f"a page on {origin!r} got the owner's app"
    assert ws_upstream.seen == [], "the learner's app was reached"


async def test_the_owner_reaches_the_preview_socket_from_the_same_origin(owner, preview_session, ws_upstream) -> None:
    path = f"/sessions/{preview_session.pk}/preview/{ws_upstream.port}/socket"
    comm = await database_sync_to_async(communicator)(path, SAME_ORIGIN, owner)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.send_to(text_data="hello")
    assert (await comm.receive_output(timeout=10)).get("text") == "hello"
    await comm.disconnect()
