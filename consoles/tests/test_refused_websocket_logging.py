"""Refused WebSocket handshakes leave no traceback in the log (real daphne, the Redis channel layer).

Channels' denier, like any consumer with a channel layer, started a blocking receive on Redis
for a connection nothing would ever message; the refusal ended the connection a millisecond
later, and the receive, cancelled that early, failed 5 s later with a Redis TimeoutError that
daphne logged as "Exception inside application". Unknown WebSocket paths raised "No route
found" (a 500 and a traceback). Consumers here use no channel layer, and unknown paths are
refused like any other unwanted upgrade.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from preview.tests.test_preview_support import session_cookie

pytest_plugins = ["preview.tests.test_preview_support"]  # daphne

# channels_redis blocks in BZPOPMIN for 5 s at most: a receive that went wrong has failed by then.
REDIS_RECEIVE_SECONDS = 5.0


@pytest.fixture
def redis_channel_layer(settings: Any) -> None:
    if not settings.REDIS_URL:
        pytest.fail("this test needs Redis: set REDIS_URL")
    # Channels rebuilds its layers when the setting changes (and back afterwards).
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [settings.REDIS_URL]}}}


def handshake(url: str, origin: str | None, cookie: str) -> str:
    """"refused <status>" or "closed <code>" (accepted, then closed by the consumer)."""
    try:
        with connect(url, origin=origin, additional_headers={"Cookie": cookie},  # type: ignore[arg-type]
                     open_timeout=10, close_timeout=5) as ws:
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as closed:
                return f"closed {closed.rcvd.code if closed.rcvd else None}"
            return "open"
    except InvalidStatus as refused:
        return f"refused {refused.response.status_code}"


def test_refused_handshakes_log_no_traceback(daphne, redis_channel_layer, owner, caplog) -> None:
    cookie = f"sessionid={session_cookie(owner)}"
    base = f"ws://127.0.0.1:{daphne.port}"
    own = daphne.url
    nobody = uuid.uuid4()
    attempts = {
        (f"{base}/ws/sessions/{nobody}/terminal/?name=1", "http://127.0.0.1:9999"): "refused 403",
        (f"{base}/ws/sessions/{nobody}/terminal/?name=1", None): "refused 403",
        (f"{base}/ws/sessions/{nobody}/vnc/", "https://evil.example"): "refused 403",
        (f"{base}/ws/no-such-socket/", own): "refused 403",
        (f"{base}/ws/sessions/{nobody}/vnc/", own): "closed 4403",  # accepted, then not yours
    }
    with caplog.at_level(logging.INFO):
        for _round in range(4):  # the failure needed the cancel to land in a window of about a millisecond
            for (url, origin), expected in attempts.items():
                assert handshake(url, origin, cookie) == expected, (url, origin)
        time.sleep(REDIS_RECEIVE_SECONDS + 1.5)
    problems = [f"{record.name}: {record.getMessage()}" for record in caplog.records
                if record.levelno >= logging.ERROR or record.exc_info]
    assert problems == []
