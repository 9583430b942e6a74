"""Bodies stream through the preview both ways: nothing waits for a whole body, memory stays bounded."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import httpx2 as httpx
import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import ApplicationCommunicator
from django.urls import re_path

from preview.consumers import PREVIEW_PATH, PreviewHttpConsumer
from preview.tests.test_preview_support import BLOCK, preview_url, session_cookie

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures

MB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """Samples this process's resident memory (daphne, the app and the client all live here)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_the_first_chunk_arrives_before_the_app_has_finished(daphne, running_session, upstream, owner) -> None:
    url = preview_url(daphne, running_session, upstream.port, "slow")
    with httpx.stream("GET", url, cookies={"sessionid": session_cookie(owner)}, timeout=20) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        received = b""
        while not received.endswith(b"\n"):
            received += next(chunks)
        assert received == b"first chunk\n"
        assert not upstream.state.slow_finished.is_set()  # the app is still holding the rest back
        upstream.state.release_slow.set()
        received += b"".join(chunks)
    assert received == b"first chunk\nthe rest\n"


def test_a_50_mb_download_streams_through_in_bounded_memory(daphne, running_session, upstream, owner) -> None:
    total = 50 * MB
    expected = hashlib.sha256()
    for _ in range(total // len(BLOCK)):
        expected.update(BLOCK)
    digest = hashlib.sha256()
    size = 0
    url = preview_url(daphne, running_session, upstream.port, f"big?bytes={total}")
    with PeakRss() as memory, httpx.stream("GET", url, cookies={"sessionid": session_cookie(owner)},
                                           timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(total)
        for chunk in response.iter_raw(65536):
            digest.update(chunk)
            size += len(chunk)
    assert size == total
    assert digest.hexdigest() == expected.hexdigest()
    assert memory.growth < 20 * MB, f"resident memory grew by {memory.growth / MB:.1f} MB"


def test_a_browser_that_stops_reading_does_not_make_the_proxy_buffer_the_download(
    daphne, running_session, upstream, owner
) -> None:
    total = 50 * MB
    url = preview_url(daphne, running_session, upstream.port, f"big?bytes={total}")
    with httpx.stream("GET", url, cookies={"sessionid": session_cookie(owner)}, timeout=60) as response:
        chunks = response.iter_raw(65536)
        size = len(next(chunks))
        with PeakRss() as memory:
            time.sleep(2)  # the app could send everything meanwhile; the proxy must wait for us
        for chunk in chunks:
            size += len(chunk)
    assert size == total
    assert memory.growth < 20 * MB, f"resident memory grew by {memory.growth / MB:.1f} MB while the browser paused"


def test_a_large_upload_arrives_intact(daphne, running_session, upstream, owner) -> None:
    body = BLOCK * 320  # 20 MiB
    response = httpx.post(preview_url(daphne, running_session, upstream.port, "upload"), content=body,
                          cookies={"sessionid": session_cookie(owner)}, timeout=60)
    assert response.status_code == 200
    assert response.json()["size"] == len(body)
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_chunked_upload_of_unknown_length_is_passed_on_chunked(daphne, running_session, upstream, owner) -> None:
    def pieces():  # type: ignore[no-untyped-def]
        for _ in range(64):
            yield BLOCK

    response = httpx.post(preview_url(daphne, running_session, upstream.port, "upload"), content=pieces(),
                          cookies={"sessionid": session_cookie(owner)}, timeout=60)
    assert response.status_code == 200
    assert response.json()["size"] == 64 * len(BLOCK)
    assert response.json()["te"] == "chunked"


def test_the_app_stops_being_read_when_the_browser_hangs_up(daphne, running_session, upstream, owner) -> None:
    url = preview_url(daphne, running_session, upstream.port, "hang")
    with httpx.stream("GET", url, cookies={"sessionid": session_cookie(owner)}, timeout=20) as response:
        assert next(response.iter_raw()).startswith(b"waiting")
    assert upstream.state.hang_peer_closed.wait(15), "the proxy kept the app's connection open"


@pytest.fixture
def owner_cookie(owner) -> str:  # type: ignore[no-untyped-def]
    return session_cookie(owner)


def upload_scope(session, port, cookie, length):  # type: ignore[no-untyped-def]
    path = f"/sessions/{session.pk}/preview/{port}/upload"
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", f"sessionid={cookie}".encode()),
                    (b"content-length", str(length).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }


def preview_app():  # type: ignore[no-untyped-def]
    return AuthMiddlewareStack(URLRouter([re_path(PREVIEW_PATH, PreviewHttpConsumer.as_asgi())]))


async def test_a_browser_leaving_mid_upload_ends_the_request_to_the_app(
    worker_connections, running_session, upstream, owner_cookie
) -> None:
    communicator = ApplicationCommunicator(
        preview_app(), upload_scope(running_session, upstream.port, owner_cookie, 10 * len(BLOCK))
    )
    await communicator.send_input({"type": "http.request", "body": BLOCK * 2, "more_body": True})
    assert await asyncio.to_thread(upstream.state.upload_started.wait, 10)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(10)  # the consumer finishes, without answering anyone
    assert await communicator.receive_nothing(0.2)


async def test_an_upload_is_passed_on_while_the_browser_is_still_sending(
    worker_connections, running_session, upstream, owner_cookie
) -> None:
    """At the ASGI level (daphne itself collects a request body before handing it on): the first
    chunks reach the app before the last one has been received."""
    chunks = 40
    communicator = ApplicationCommunicator(
        preview_app(), upload_scope(running_session, upstream.port, owner_cookie, chunks * len(BLOCK))
    )
    await communicator.send_input({"type": "http.request", "body": BLOCK * 2, "more_body": True})
    assert await asyncio.to_thread(upstream.state.upload_started.wait, 10)
    for _ in range(chunks - 3):
        await communicator.send_input({"type": "http.request", "body": BLOCK, "more_body": True})
    await communicator.send_input({"type": "http.request", "body": BLOCK, "more_body": False})
    start = await communicator.receive_output(20)
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    body = b""
    while True:
        message = await communicator.receive_output(20)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    assert b'"size": %d' % (chunks * len(BLOCK)) in body
    await communicator.wait(5)
