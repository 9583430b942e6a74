"""Requests whose address or headers are too long get an answer with a page, on the real server
(webserver.serve), instead of a dropped connection or a bare status line.

Twisted reads the request line and each header as a line of at most 16 KiB and simply closed the
connection past that: a search of about 17,000 characters got no response at all. Headers past
16 KiB in all got "400 Bad Request" with no page. Now a request line too long is 414, headers too
long 431, a malformed request 400, each with a short HTML page, and the server goes on serving.
"""

from __future__ import annotations

import html

import pytest

from tests.http_bodies import send_request

pytestmark = pytest.mark.browser

LINE_LIMIT = 16 * 1024  # Twisted's, for the request line and for each header line


def search(length: int) -> str:
    return "/?q=" + "a" * length


def assert_page(answer, status: int, says: str) -> None:
    assert answer.status == status, (answer.status, answer.headers, answer.body[:300])
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["connection"] == "close"
    assert f"<h1>{says}</h1>" in html.unescape(answer.body.decode()), answer.body[:300]


def test_a_search_of_17000_characters_gets_414_with_a_page(asgi_live_server):
    answer = send_request(asgi_live_server.port, "GET", search(17_000), {"Accept": "text/html"}, timeout=20)

    assert_page(answer, 414, "The address is too long")


def test_a_request_line_under_the_limit_with_headers_over_it_in_all_gets_414(asgi_live_server):
    """The line fits, but it takes most of the 16 KiB the request line and headers may have together."""
    headers = {"Accept": "text/html", "Cookie": "c=" + "x" * 2_000}
    answer = send_request(asgi_live_server.port, "GET", search(LINE_LIMIT - 1_000), headers, timeout=20)

    assert_page(answer, 414, "The address is too long")


def test_headers_too_long_get_431_with_a_page(asgi_live_server):
    one_long = send_request(asgi_live_server.port, "GET", "/", {"Cookie": "c=" + "x" * 17_000}, timeout=20)
    many = send_request(asgi_live_server.port, "GET", "/", {f"X-Filler-{n}": "y" * 200 for n in range(90)},
                        timeout=20)

    assert_page(one_long, 431, "The request's headers are too long")
    assert_page(many, 431, "The request's headers are too long")


def test_a_malformed_request_gets_400_with_a_page(asgi_live_server):
    answer = send_request(asgi_live_server.port, "GET", "/ with spaces/", {}, timeout=20)

    assert_page(answer, 400, "Bad request")


def test_a_long_search_under_the_limit_is_answered_and_the_server_goes_on_after_a_refusal(asgi_live_server, lab):
    refused = send_request(asgi_live_server.port, "GET", search(40_000), {}, timeout=20)
    served = send_request(asgi_live_server.port, "GET", search(10_000), {}, timeout=20)
    found = send_request(asgi_live_server.port, "GET", "/?q=hello", {}, timeout=20)

    assert refused.status == 414
    assert served.status == 200
    assert found.status == 200 and lab.title.encode() in found.body


def test_chromium_shows_the_414_page_for_a_search_too_long(asgi_live_server, page):
    response = page.goto(f"{asgi_live_server.url}{search(17_000)}")

    assert response is not None and response.status == 414
    assert page.get_by_role("heading", level=1).inner_text() == "The address is too long"
