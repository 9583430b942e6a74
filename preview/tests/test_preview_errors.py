"""When the app is not there: friendly pages the iframe can show, never a hung request."""

from __future__ import annotations

import httpx2 as httpx

from preview.tests.test_preview_support import preview_url, session_cookie
from runners import fake

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


def test_nothing_listening_on_the_port_answers_502_with_a_hint(daphne, running_session, closed_port, owner) -> None:
    response = httpx.get(preview_url(daphne, running_session, closed_port, "index.html"), timeout=20,
                         cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 502
    assert f"Nothing is listening on port {closed_port} in your session yet" in response.text
    assert "0.0.0.0" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert 'http-equiv="refresh"' in response.text  # a GET retries by itself until the app is up


def test_a_failed_post_is_not_retried_by_the_page(daphne, running_session, closed_port, owner) -> None:
    response = httpx.post(preview_url(daphne, running_session, closed_port, "form"), content=b"a=1", timeout=20,
                          cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 502
    assert 'http-equiv="refresh"' not in response.text


def test_the_page_works_once_the_app_starts_listening(daphne, running_session, closed_port, owner) -> None:
    from http.server import HTTPServer, SimpleHTTPRequestHandler
    from threading import Thread

    url = preview_url(daphne, running_session, closed_port, "")
    cookies = {"sessionid": session_cookie(owner)}
    assert httpx.get(url, cookies=cookies, timeout=20).status_code == 502
    server = HTTPServer(("127.0.0.1", closed_port), SimpleHTTPRequestHandler)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        assert httpx.get(url, cookies=cookies, timeout=20).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_an_environment_the_runner_cannot_find_answers_502(daphne, running_session, upstream, owner) -> None:
    fake.ENVIRONMENTS.clear()  # the container vanished under the session
    response = httpx.get(preview_url(daphne, running_session, upstream.port, "page"), timeout=20,
                         cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 502
    assert "cannot reach this session" in response.text
    assert upstream.state.requests == []


def test_an_app_that_hangs_up_without_answering_gives_502(daphne, running_session, owner) -> None:
    import socket
    from threading import Thread

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    running_session.lab.exposed_ports = [port]
    running_session.lab.save(update_fields=["exposed_ports"])

    def hang_up() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    Thread(target=hang_up, daemon=True).start()
    try:
        response = httpx.get(preview_url(daphne, running_session, port, ""), timeout=20,
                             cookies={"sessionid": session_cookie(owner)})
    finally:
        listener.close()
    assert response.status_code == 502
    assert "closed the connection without sending a response" in response.text
