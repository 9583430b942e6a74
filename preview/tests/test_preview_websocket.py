"""WebSockets on a preview path reach the app too: frames both ways, subprotocols, close codes."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from preview import access, actions
from preview.tests.test_preview_support import session_cookie
from sessions_app.models import Session, State

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


def ws_url(daphne, session, port, path="socket"):  # type: ignore[no-untyped-def]
    return f"ws://127.0.0.1:{daphne.port}/sessions/{session.pk}/preview/{port}/{path}"


def open_ws(daphne, session, port, cookie="", path="socket", **kwargs):  # type: ignore[no-untyped-def]
    headers = {"Cookie": cookie} if cookie else {}
    return connect(ws_url(daphne, session, port, path), origin=daphne.url, additional_headers=headers,
                   open_timeout=10, proxy=None, **kwargs)


def close_code(ws) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_the_owner_talks_to_the_app_in_text_and_binary(daphne, running_session, ws_upstream, owner) -> None:
    cookie = f"sessionid={session_cookie(owner)}"
    with open_ws(daphne, running_session, ws_upstream.port, cookie, path="chat/room?x=1") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\x01\xffbinary"
        big = bytes(range(256)) * 4096  # 1 MiB in one message
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("whoami")
        seen = json.loads(ws.recv(timeout=10))
    assert seen["path"] == "/chat/room?x=1"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["host"] == f"localhost:{ws_upstream.port}"
    assert headers["origin"] == f"http://localhost:{ws_upstream.port}"
    assert headers["x-forwarded-prefix"] == f"/sessions/{running_session.pk}/preview/{ws_upstream.port}"
    assert "cookie" not in headers  # only the platform's session cookie was sent


def test_subprotocols_are_negotiated_with_the_app(daphne, running_session, ws_upstream, owner) -> None:
    cookie = f"sessionid={session_cookie(owner)}; prefs=compact"
    with open_ws(daphne, running_session, ws_upstream.port, cookie, subprotocols=["chat.v1", "other"]) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("whoami")
        seen = json.loads(ws.recv(timeout=10))
    assert seen["subprotocol"] == "chat.v1"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["cookie"] == "prefs=compact"


def test_the_apps_close_code_reaches_the_browser(daphne, running_session, ws_upstream, owner) -> None:
    with open_ws(daphne, running_session, ws_upstream.port, f"sessionid={session_cookie(owner)}") as ws:
        ws.send("close-4321")
        assert close_code(ws) == 4321


def test_another_learner_is_closed_with_4403_and_the_app_sees_nothing(daphne, running_session, ws_upstream,
                                                                       other_learner) -> None:
    with open_ws(daphne, running_session, ws_upstream.port, f"sessionid={session_cookie(other_learner)}") as ws:
        assert close_code(ws) == 4403
    assert ws_upstream.seen == []


def test_an_anonymous_visitor_is_closed_with_4403(daphne, running_session, ws_upstream) -> None:
    with open_ws(daphne, running_session, ws_upstream.port) as ws:
        assert close_code(ws) == 4403
    assert ws_upstream.seen == []


def test_staff_reach_the_app(daphne, running_session, ws_upstream, staff_user) -> None:
    with open_ws(daphne, running_session, ws_upstream.port, f"sessionid={session_cookie(staff_user)}") as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"


def test_an_undeclared_port_is_closed_with_4404(daphne, running_session, owner) -> None:
    with open_ws(daphne, running_session, 5432, f"sessionid={session_cookie(owner)}") as ws:
        assert close_code(ws) == 4404


def test_a_session_that_is_not_running_is_closed_with_4409(daphne, running_session, ws_upstream, owner) -> None:
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPING)
    with open_ws(daphne, running_session, ws_upstream.port, f"sessionid={session_cookie(owner)}") as ws:
        assert close_code(ws) == 4409


def test_nothing_listening_is_closed_with_4502(daphne, running_session, closed_port, owner) -> None:
    with open_ws(daphne, running_session, closed_port, f"sessionid={session_cookie(owner)}") as ws:
        assert close_code(ws) == 4502


def test_a_share_cookie_opens_the_websocket_of_its_port_only(daphne, running_session, ws_upstream, upstream,
                                                             owner) -> None:
    token = access.share_token(actions.create_share(running_session, ws_upstream.port, 60, owner))
    with open_ws(daphne, running_session, ws_upstream.port, f"{access.SHARE_COOKIE}={token}") as ws:
        ws.send("shared")
        assert ws.recv(timeout=10) == "shared"
    with open_ws(daphne, running_session, upstream.port, f"{access.SHARE_COOKIE}={token}") as ws:
        assert close_code(ws) == 4403
