"""The preview host's WebSockets open only from the preview origin itself, scheme and port included.

LAB_PREVIEW_HOST without a port sets previews apart by host name, so any port of that host counts
as the preview host for routing. The grant cookie, like every cookie, is not kept apart by port:
a page on another port of the preview host (another service there) would send it. So the Origin
must be exactly the origin the upgrade was sent to, as on the platform.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from preview import access
from preview.tests.test_preview_origin_websocket import (  # noqa: F401 - preview_session is a fixture
    communicator,
    grant_for,
    outcome,
    preview_session,
    socket_path,
)
from sessions_app.models import Session

pytest_plugins = ["preview.tests.test_preview_support"]  # ws_upstream, worker_connections
pytestmark = pytest.mark.usefixtures("worker_connections")

PREVIEW_HOST = "preview.localhost"  # no port: the host name alone sets previews apart
SERVED_AT = "preview.localhost:8000"


@pytest.fixture(autouse=True)
def preview_host(settings: Any) -> str:
    settings.LAB_PREVIEW_HOST = PREVIEW_HOST
    return PREVIEW_HOST


async def preview_socket(session: Session, owner: Any, port: int, origin: str) -> WebsocketCommunicator:
    """An upgrade to the preview host carrying the owner's valid grant cookie."""
    grant = await database_sync_to_async(grant_for)(session, owner, port)
    return communicator(socket_path(session, port), host=SERVED_AT, origin=origin,
                        cookies={access.GRANT_COOKIE: grant})


@pytest.mark.parametrize("origin", [
    "http://preview.localhost:4444",  # another port of the preview host
    "http://preview.localhost",
    "https://preview.localhost:8000",  # another scheme
    "https://preview.localhost",
])
async def test_another_port_or_scheme_of_the_preview_host_is_refused(
        origin, owner, preview_session, ws_upstream) -> None:  # noqa: F811 - preview_session is the fixture
    comm = await preview_socket(preview_session, owner, ws_upstream.port, origin)
    assert await outcome(comm) == "refused"
    assert ws_upstream.seen == [], "the learner's app was reached"


async def test_the_preview_page_itself_opens_its_socket(owner, preview_session,  # noqa: F811 - the fixture
                                                        ws_upstream) -> None:
    comm = await preview_socket(preview_session, owner, ws_upstream.port, f"http://{SERVED_AT}")
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.send_to(text_data="hello")
    assert (await comm.receive_output(timeout=10)).get("text") == "hello"  # the app echoes
    await comm.disconnect()
