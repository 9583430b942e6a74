"""One large anonymous POST cannot take the web server down (issue 9).

Plain daphne buffered the whole body and Twisted parsed the multipart form in memory: a 100 MiB
POST to / (refused 403 by CSRF only afterwards) cost about 1.2 GiB and stalled every other page
for seconds. On the real server process (webserver.serve), it is refused with 413 before it is
read: by its Content-Length at once, or, chunked, as soon as it passes the limit; the server's
memory barely moves and other pages keep answering meanwhile.
"""

from __future__ import annotations

import urllib.request

import pytest

from tests.http_bodies import MB, ProcessMemory, Responsiveness, multipart, send_request, zeros

BODY = 100 * MB


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_anonymous_100_mib_post_is_refused_unread_while_memory_and_pages_stay_fine(asgi_live_server, chunked):
    server = asgi_live_server
    assert server.process is not None
    with urllib.request.urlopen(f"{server.url}/", timeout=30) as warm_up:  # first-request imports are not the attack
        assert warm_up.status == 200
    memory = ProcessMemory(server.process.pid)
    before = memory.rss()
    memory.reset_peak()

    content_type, length, body = multipart({"title": "x"}, "file", "big.bin", BODY, zeros(BODY))
    with Responsiveness(f"{server.url}/") as catalog:
        answer = send_request(server.port, "POST", "/", {"Content-Type": content_type}, body,
                              content_length=None if chunked else length, chunked=chunked)
    growth = memory.peak() - before

    assert growth < 20 * MB, f"the server's resident memory grew by {growth / MB:.0f} MiB"
    assert not catalog.errors and set(catalog.statuses) == {200}, (catalog.errors, catalog.statuses)
    assert catalog.slowest < 2, f"the catalog took {catalog.slowest:.1f} s to answer during the POST"
    assert answer.status == 413, answer
    assert b"larger than the server accepts (1.0 MB)" in answer.body
    assert answer.seconds_to_answer < 5, f"answered after {answer.seconds_to_answer:.1f} s"
