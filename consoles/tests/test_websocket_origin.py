"""Cross-site WebSocket hijacking is refused by the application the server really runs.

Other console tests build their own middleware stack; these drive `labsite.asgi.application`
itself, so loosening the origin check (or routing a console around it) fails here. A page on
another origin sends the learner's own session cookie with its upgrade request (that is the
attack), so every refused request below carries the owner's valid cookie: only the Origin check
stands between it and the session. The platform is served at http://127.0.0.1:8000 (the Host
header a browser sends); the hostile pages are the other local origins the attack suite used.
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

from preview.tests.test_preview_support import session_cookie, start_session
from sessions_app.models import Session, State

# ws_upstream and worker_connections; local_runner
pytest_plugins = ["preview.tests.test_preview_support", "consoles.tests.terminal_harness"]
pytestmark = pytest.mark.usefixtures("worker_connections")  # transactional: consumers use other threads

HOST = "127.0.0.1:8000"
OWN_ORIGIN = "http://127.0.0.1:8000"
HOSTILE_ORIGINS = [
    # What opened a learner's terminal when only host names were compared (issue 9):
    "http://localhost:4444",
    "http://127.0.0.1:9999",
    "http://[::1]:1",
    "https://127.0.0.1",
    # The page's own host with another port or scheme:
    "http://127.0.0.1:8001",
    "http://127.0.0.1",
    "https://127.0.0.1:8000",
    # Other sites:
    "https://evil.example",
    "http://127.0.0.1.evil.example:8000",  # a look-alike that only starts with the platform's host
    "null",  # sandboxed iframes and file:// pages
]
RFB_VERSION = b"RFB 003.008\n"


def communicator(path: str, origin: str | None, user: Any, host: str = HOST,
                 extra: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    # Imported here, not at collection: building it sets up static files, which the test settings
    # relocate. The origin check reads ALLOWED_HOSTS and the proxy settings per connection.
    from labsite.asgi import application

    headers = [(b"host", host.encode()), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}".encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=headers + (extra or []))


async def refused(comm: WebsocketCommunicator) -> bool:
    """Whether the upgrade was closed without ever being accepted."""
    connected, _code = await comm.connect(timeout=10)
    if connected:
        await comm.disconnect()
    return not connected


async def runs_a_command(comm: WebsocketCommunicator) -> bool:
    """Whether the terminal opened and a command reached the (fake, echoing) shell."""
    connected, _ = await comm.connect(timeout=10)
    if not connected:
        return False
    ready = json.loads((await comm.receive_output(timeout=10))["text"])
    assert ready["type"] == "ready", ready
    await comm.send_to(bytes_data=b"echo origin-ok\n")
    echoed = await comm.receive_output(timeout=10)
    await comm.disconnect()
    return echoed.get("bytes") == b"echo origin-ok\n"


def terminal_path(session: Session) -> str:
    return f"/ws/sessions/{session.pk}/terminal/?name=1"


@pytest.fixture
def allowed_hosts(settings: Any) -> list[str]:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "labs.example.org"]
    return settings.ALLOWED_HOSTS


# ---- terminal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_a_terminal_upgrade_from_another_origin_is_refused(origin, owner, lab, allowed_hosts) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), origin, owner)
    assert await refused(comm), f"a page on {origin} got the owner's terminal"


async def test_an_upgrade_without_an_origin_is_refused(owner, lab, allowed_hosts) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), None, owner)
    assert await refused(comm)


async def test_an_upgrade_with_two_origins_is_refused(owner, lab, allowed_hosts) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), OWN_ORIGIN, owner,
                                                      extra=[(b"origin", b"http://127.0.0.1:9999")])
    assert await refused(comm)


@pytest.mark.parametrize(("host", "origin"), [
    (HOST, OWN_ORIGIN),
    ("localhost", "http://localhost"),  # default port: neither header names it
    ("[::1]:8000", "http://[::1]:8000"),
])
async def test_the_owner_runs_a_command_from_the_pages_own_origin(host, origin, owner, lab, allowed_hosts) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), origin, owner, host=host)
    assert await runs_a_command(comm)


async def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(owner, lab, allowed_hosts) -> None:
    # DNS rebinding: evil.example resolves to the platform; the page's origin is the request's own.
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), "http://evil.example:8000", owner,
                                                      host="evil.example:8000")
    assert await refused(comm)


async def test_a_wss_upgrade_opens_only_from_the_https_page(owner, lab, allowed_hosts) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    for origin, opens in (("https://labs.example.org", True), ("http://labs.example.org", False)):
        comm = await database_sync_to_async(communicator)(terminal_path(session), origin, owner,
                                                          host="labs.example.org")
        comm.scope["scheme"] = "wss"
        assert await runs_a_command(comm) is opens, origin


@pytest.mark.parametrize(("proxy_header", "opens", "refused_origin"), [
    (("HTTP_X_FORWARDED_PROTO", "https"), "https://labs.example.org", "http://labs.example.org"),  # DJANGO_BEHIND_PROXY
    (None, "http://labs.example.org", "https://labs.example.org"),  # no proxy: anyone can send the header
])
async def test_x_forwarded_proto_sets_the_scheme_only_behind_a_proxy(proxy_header, opens, refused_origin, owner, lab,
                                                                    allowed_hosts, settings) -> None:
    settings.SECURE_PROXY_SSL_HEADER = proxy_header
    session = await database_sync_to_async(start_session)(owner, lab)
    for origin, expected in ((opens, True), (refused_origin, False)):
        comm = await database_sync_to_async(communicator)(terminal_path(session), origin, owner,
                                                          host="labs.example.org",
                                                          extra=[(b"x-forwarded-proto", b"https")])
        assert await runs_a_command(comm) is expected, origin


async def test_csrf_trusted_origins_may_open_the_terminal(owner, lab, allowed_hosts, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://labs.example.org", "https://*.courses.example.org"]
    session = await database_sync_to_async(start_session)(owner, lab)
    for origin, opens in (("https://labs.example.org", True), ("https://unit1.courses.example.org", True),
                          ("http://unit1.courses.example.org", False), ("https://courses.example.org.evil", False)):
        comm = await database_sync_to_async(communicator)(terminal_path(session), origin, owner)
        assert await runs_a_command(comm) is opens, origin


async def test_the_preview_origin_never_opens_the_terminal(owner, lab, allowed_hosts, settings) -> None:
    settings.LAB_PREVIEW_HOST = "localhost:8000"
    settings.CSRF_TRUSTED_ORIGINS = ["http://localhost:8000"]  # refused at start-up; here: still no terminal
    session = await database_sync_to_async(start_session)(owner, lab)
    comm = await database_sync_to_async(communicator)(terminal_path(session), "http://localhost:8000", owner)
    assert await refused(comm)


# ---- a real session (the local bubblewrap runner): the hostile page's command never runs ---------


@pytest.mark.parametrize("origin", ["http://localhost:4444", "http://127.0.0.1:9999", "http://[::1]:1",
                                    "https://127.0.0.1"])
async def test_a_hostile_page_runs_nothing_in_a_real_session(origin, owner, local_runner, allowed_hosts) -> None:
    from consoles.tests.terminal_harness import local_terminal_records, make_lab, read_until
    from consoles.tests.terminal_harness import start_session as start_real_session

    session = await database_sync_to_async(lambda: start_real_session(owner, make_lab(local_runner)))()
    path = f"/ws/sessions/{session.pk}/terminal/?name=1&cols=80&rows=24"
    hostile = await database_sync_to_async(communicator)(path, origin, owner, host="127.0.0.1:8000")
    connected, _ = await hostile.connect(timeout=10)
    if connected:  # what the attack did: type a command into the learner's shell
        await hostile.send_to(bytes_data=b"touch /workspace/hijacked\n")
        await asyncio.sleep(1)
        await hostile.disconnect()
    assert not connected, f"a page on {origin} opened the learner's terminal"
    assert local_terminal_records(session) == [], "a shell was started"
    # The learner's own page still gets a shell, and the hostile command never ran in it.
    own = await database_sync_to_async(communicator)(path, OWN_ORIGIN, owner)
    assert (await own.connect(timeout=30))[0]
    assert json.loads((await own.receive_output(timeout=30))["text"])["type"] == "ready"
    await own.send_to(bytes_data=b"ls /workspace/hijacked 2>&1; echo checked-$((40+2))\n")
    output = await read_until(own, b"checked-42")
    assert b"No such file" in output
    await own.disconnect(timeout=20)


# ---- graphical console --------------------------------------------------------------------------


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


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_a_vnc_upgrade_from_another_origin_is_refused(origin, owner, vnc_session, vnc_listener,
                                                            allowed_hosts) -> None:
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{vnc_session.pk}/vnc/", origin, owner)
    assert await refused(comm), f"a page on {origin} got the owner's console"
    assert await asyncio.to_thread(accepted_within, vnc_listener, 0.5) is None, "the VNC server was reached"


async def test_the_owner_gets_the_vnc_console_from_the_same_origin(owner, vnc_session, vnc_listener,
                                                                    allowed_hosts) -> None:
    comm = await database_sync_to_async(communicator)(f"/ws/sessions/{vnc_session.pk}/vnc/", OWN_ORIGIN, owner)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    conn = await asyncio.to_thread(accepted_within, vnc_listener, 10)
    assert conn is not None, "the bridge never connected to the VNC server"
    with conn:
        conn.sendall(RFB_VERSION)
        assert (await comm.receive_output(timeout=10)).get("bytes") == RFB_VERSION
        await comm.disconnect()


# ---- web preview on the platform's origin -------------------------------------------------------


@pytest.fixture
def preview_session(owner: Any, lab: Any, ws_upstream: Any) -> Session:
    lab.exposed_ports = [ws_upstream.port]
    lab.save(update_fields=["exposed_ports"])
    return start_session(owner, lab)


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_a_preview_upgrade_from_another_origin_is_refused(origin, owner, preview_session, ws_upstream,
                                                                allowed_hosts) -> None:
    path = f"/sessions/{preview_session.pk}/preview/{ws_upstream.port}/socket"
    comm = await database_sync_to_async(communicator)(path, origin, owner)
    assert await refused(comm), f"a page on {origin} got the owner's app"
    assert ws_upstream.seen == [], "the learner's app was reached"


async def test_the_owner_reaches_the_preview_socket_from_the_same_origin(owner, preview_session, ws_upstream,
                                                                         allowed_hosts) -> None:
    path = f"/sessions/{preview_session.pk}/preview/{ws_upstream.port}/socket"
    comm = await database_sync_to_async(communicator)(path, OWN_ORIGIN, owner)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.send_to(text_data="hello")
    assert (await comm.receive_output(timeout=10)).get("text") == "hello"
    await comm.disconnect()
