"""Request bodies to the web preview on the platform's real server (webserver.serve's daphne, in
this process): a body over LAB_PREVIEW_MAX_BODY_BYTES is refused with 413, by its Content-Length
before the app is even contacted, or chunked as soon as it passes the limit; a body within it
reaches the app while the browser is still sending it (daphne alone held it back until the end)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from preview.tests.test_preview_support import preview_url, session_cookie
from tests.http_bodies import MB, send_request, zeros

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


def upload_path(daphne, session, port) -> str:  # type: ignore[no-untyped-def]
    return preview_url(daphne, session, port, "upload").removeprefix(daphne.url)


def test_an_upload_over_the_previews_limit_is_refused_with_413(daphne, running_session, upstream, owner, settings):
    settings.LAB_PREVIEW_MAX_BODY_BYTES = 4 * MB  # read by the server at each request: it runs in this process
    path = upload_path(daphne, running_session, upstream.port)
    cookie = {"Cookie": f"sessionid={session_cookie(owner)}"}

    answer = send_request(daphne.port, "POST", path, cookie, zeros(8 * MB), content_length=8 * MB)
    assert answer.status == 413, answer
    assert b"larger than the web preview passes on (4.0 MB)" in answer.body
    assert upstream.state.requests == []  # refused before the app was contacted

    chunked = send_request(daphne.port, "POST", path, cookie, zeros(8 * MB), chunked=True)
    assert chunked.status == 413, chunked
    assert b"larger than the web preview passes on (4.0 MB)" in chunked.body


def test_an_upload_reaches_the_app_while_the_browser_is_still_sending(daphne, running_session, upstream, owner):
    reached_before_the_end = False

    def body() -> Iterator[bytes]:
        nonlocal reached_before_the_end
        yield from zeros(MB)
        deadline = time.monotonic() + 10
        while not upstream.state.upload_started.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        reached_before_the_end = upstream.state.upload_started.is_set()
        yield from zeros(MB)

    answer = send_request(daphne.port, "POST", upload_path(daphne, running_session, upstream.port),
                          {"Cookie": f"sessionid={session_cookie(owner)}"}, body(), content_length=2 * MB)
    assert answer.status == 200, answer
    assert b'"size": 2097152' in answer.body
    assert reached_before_the_end, "the app got nothing until the browser had sent the whole body"
