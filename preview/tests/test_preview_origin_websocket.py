"""WebSockets with a separate preview host (LAB_PREVIEW_HOST), on the real `labsite.asgi.application`:
the preview's socket is authorized by the preview host's grant cookie and only from the preview
origin; the terminal refuses the preview origin, and the platform host no longer proxies previews.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import signing

from preview import access, origin
from preview.tests.test_preview_support import session_cookie, start_session
from sessions_app.models import Session

pytest_plugins = ["preview.tests.test_preview_support"]  # ws_upstream, worker_connections
pytestmark = pytest.mark.usefixtures("worker_connections")  # transactional: consumers use other threads

PREVIEW_HOST = "localhost:8099"
PREVIEW_ORIGIN = f"http://{PREVIEW_HOST}"
PLATFORM_HOST = "127.0.0.1:8099"
PLATFORM_ORIGIN = f"http://{PLATFORM_HOST}"


@pytest.fixture(autouse=True)
def preview_host(settings) -> str:  # type: ignore[no-untyped-def]
    settings.LAB_PREVIEW_HOST = PREVIEW_HOST
    return PREVIEW_HOST


@pytest.fixture
def preview_session(owner: Any, lab: Any, ws_upstream: Any) -> Session:
    lab.exposed_ports = [ws_upstream.port]
    lab.save(update_fields=["exposed_ports"])
    return start_session(owner, lab)


def grant_for(session: Session, user: Any, port: int) -> str:
    """The grant cookie the preview host sets after a valid embed token."""
    token = origin.embed_token(session.pk, user, port, PLATFORM_ORIGIN)
    return signing.dumps(signing.loads(token, salt=origin.EMBED_SALT), salt=origin.GRANT_SALT)


def communicator(path: str, *, host: str, origin: str, cookies: dict[str, str]) -> WebsocketCommunicator:
    from labsite.asgi import application  # imported late: see test_websocket_origin.py

    headers = [(b"host", host.encode()), (b"origin", origin.encode())]
    if cookies:
        headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def outcome(comm: WebsocketCommunicator) -> int | str:
    """"open", "refused" (never accepted) or the close code sent right after accepting."""
    connected, _ = await comm.connect(timeout=10)
    if not connected:
        return "refused"
    message = await comm.receive_output(timeout=10)
    if message["type"] == "websocket.close":
        return int(message.get("code", 1000))
    await comm.disconnect()
    return "open"


def socket_path(session: Session, port: int) -> str:
    return f"{access.preview_prefix(session.pk, port)}/socket"


async def test_the_grant_cookie_opens_the_apps_socket_from_the_preview_origin(owner, preview_session,
                                                                              ws_upstream) -> None:
    grant = await database_sync_to_async(grant_for)(preview_session, owner, ws_upstream.port)
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PREVIEW_HOST, origin=PREVIEW_ORIGIN,
                        cookies={access.GRANT_COOKIE: grant, "theme": "dark"})
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.send_to(text_data="whoami")
    seen = json.loads((await comm.receive_output(timeout=10))["text"])
    await comm.disconnect()
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["cookie"] == "theme=dark"  # the grant is ours, never the app's
    assert headers["origin"] == f"http://localhost:{ws_upstream.port}"


async def test_without_a_grant_the_socket_is_closed_with_4403(owner, preview_session, ws_upstream) -> None:
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PREVIEW_HOST, origin=PREVIEW_ORIGIN,
                        cookies={})
    assert await outcome(comm) == 4403
    assert ws_upstream.seen == []


async def test_the_platforms_session_cookie_opens_nothing_on_the_preview_host(owner, preview_session,
                                                                              ws_upstream) -> None:
    cookie = await database_sync_to_async(session_cookie)(owner)
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PREVIEW_HOST, origin=PREVIEW_ORIGIN,
                        cookies={settings.SESSION_COOKIE_NAME: cookie})
    assert await outcome(comm) == 4403
    assert ws_upstream.seen == []


async def test_a_grant_of_another_user_is_closed_with_4403(other_learner, preview_session, ws_upstream) -> None:
    grant = await database_sync_to_async(grant_for)(preview_session, other_learner, ws_upstream.port)
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PREVIEW_HOST, origin=PREVIEW_ORIGIN,
                        cookies={access.GRANT_COOKIE: grant})
    assert await outcome(comm) == 4403


@pytest.mark.parametrize("origin", [PLATFORM_ORIGIN, "https://evil.example", "null", "http://localhost:8100"])
async def test_the_preview_socket_refuses_any_other_origin(owner, preview_session, ws_upstream, origin) -> None:
    grant = await database_sync_to_async(grant_for)(preview_session, owner, ws_upstream.port)
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PREVIEW_HOST, origin=origin,
                        cookies={access.GRANT_COOKIE: grant})
    assert await outcome(comm) == "refused"
    assert ws_upstream.seen == []


async def test_the_platform_host_no_longer_proxies_the_preview_socket(owner, preview_session, ws_upstream) -> None:
    cookie = await database_sync_to_async(session_cookie)(owner)
    comm = communicator(socket_path(preview_session, ws_upstream.port), host=PLATFORM_HOST, origin=PLATFORM_ORIGIN,
                        cookies={settings.SESSION_COOKIE_NAME: cookie})
    assert await outcome(comm) == 4403
    assert ws_upstream.seen == []


async def test_the_terminal_refuses_the_preview_origin(owner, lab) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    cookie = await database_sync_to_async(session_cookie)(owner)
    path = f"/ws/sessions/{session.pk}/terminal/?name=1"
    # localhost is in ALLOWED_HOSTS (another port): the preview origin must be refused all the same.
    from_preview = communicator(path, host=PLATFORM_HOST, origin=PREVIEW_ORIGIN,
                                cookies={settings.SESSION_COOKIE_NAME: cookie})
    assert await outcome(from_preview) == "refused"
    on_preview_host = communicator(path, host=PREVIEW_HOST, origin=PREVIEW_ORIGIN,
                                   cookies={settings.SESSION_COOKIE_NAME: cookie})
    assert await outcome(on_preview_host) == "refused"


async def test_the_terminal_still_opens_from_the_platform_origin(owner, lab) -> None:
    session = await database_sync_to_async(start_session)(owner, lab)
    cookie = await database_sync_to_async(session_cookie)(owner)
    comm = communicator(f"/ws/sessions/{session.pk}/terminal/?name=1", host=PLATFORM_HOST, origin=PLATFORM_ORIGIN,
                        cookies={settings.SESSION_COOKIE_NAME: cookie})
    connected, _ = await comm.connect(timeout=10)
    assert connected
    assert json.loads((await comm.receive_output(timeout=10))["text"])["type"] == "ready"
    await comm.disconnect()
