"""Share links: the one way someone other than the owner or staff sees a preview, one port at a time."""

from __future__ import annotations

from datetime import timedelta

import httpx2 as httpx
import pytest
from django.test import Client
from django.utils import timezone

from preview import access, actions
from preview.models import PreviewShare
from preview.tests.test_preview_support import headers_of, preview_url, session_cookie
from sessions_app.models import Session, State

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


@pytest.fixture
def share(running_session, upstream, owner) -> PreviewShare:  # type: ignore[no-untyped-def]
    return actions.create_share(running_session, upstream.port, 60, owner)


def open_link(daphne, session, port, token, cookies=None, path=""):  # type: ignore[no-untyped-def]
    """Follow a share link like a browser: the first answer sets the cookie and redirects."""
    client = httpx.Client(base_url=daphne.url, cookies=cookies or {}, timeout=20, follow_redirects=False)
    first = client.get(f"/sessions/{session.pk}/preview/{port}/{path}", params={"share": token, "x": "1"})
    return client, first


def test_a_share_link_lets_an_anonymous_visitor_in_and_moves_the_token_to_a_scoped_cookie(
    daphne, running_session, upstream, share
) -> None:
    client, first = open_link(daphne, running_session, upstream.port, access.share_token(share), path="page")
    prefix = f"/sessions/{running_session.pk}/preview/{upstream.port}"
    assert first.status_code == 302
    assert first.headers["location"] == f"{prefix}/page?x=1"  # the token is out of the address
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{access.SHARE_COOKIE}={access.share_token(share)}; ")
    assert f"Path={prefix}/" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    assert upstream.state.requests == []  # the app never saw the token

    page = client.get(first.headers["location"])
    assert page.status_code == 200
    assert "Hello from the learner's app" in page.text

    echoed = headers_of(client.get(f"{prefix}/echo").json())
    assert "cookie" not in echoed  # the share cookie is ours, not the app's


def test_the_share_cookie_is_secure_when_the_site_uses_https_cookies(
    daphne, running_session, upstream, share, settings
) -> None:
    settings.SESSION_COOKIE_SECURE = True
    _, first = open_link(daphne, running_session, upstream.port, access.share_token(share))
    assert "; Secure" in first.headers["set-cookie"]


def test_a_share_link_works_for_another_signed_in_learner(daphne, running_session, upstream, share,
                                                          other_learner) -> None:
    client, first = open_link(daphne, running_session, upstream.port, access.share_token(share), path="page",
                              cookies={"sessionid": session_cookie(other_learner)})
    assert first.status_code == 302
    assert client.get(first.headers["location"]).status_code == 200


def test_a_share_link_shows_nothing_else_of_the_session(daphne, running_session, upstream, ws_upstream, share,
                                                        other_learner) -> None:
    token = access.share_token(share)
    client, first = open_link(daphne, running_session, upstream.port, token,
                              cookies={"sessionid": session_cookie(other_learner)})
    assert first.status_code == 302
    assert client.get(preview_url(daphne, running_session, ws_upstream.port, "")).status_code == 404
    # The session page is a Django view; the token opens nothing there either.
    page = Client()
    page.force_login(other_learner)
    page.cookies[access.SHARE_COOKIE] = token
    assert page.get(running_session.get_absolute_url(), {"share": token}).status_code == 404


def test_an_expired_share_stops_working(daphne, running_session, upstream, share) -> None:
    client, first = open_link(daphne, running_session, upstream.port, access.share_token(share))
    PreviewShare.objects.filter(pk=share.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(first.headers["location"]).status_code == 404
    _, again = open_link(daphne, running_session, upstream.port, access.share_token(share))
    assert again.status_code == 404


def test_a_revoked_share_stops_working_at_once(daphne, running_session, upstream, share, owner) -> None:
    client, first = open_link(daphne, running_session, upstream.port, access.share_token(share), path="page")
    assert client.get(first.headers["location"]).status_code == 200
    actions.revoke_share(share, owner)
    assert client.get(first.headers["location"]).status_code == 404


def test_a_share_dies_with_its_session(daphne, running_session, upstream, share) -> None:
    client, first = open_link(daphne, running_session, upstream.port, access.share_token(share))
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPED)
    assert client.get(first.headers["location"]).status_code == 404


def test_a_tampered_token_is_404(daphne, running_session, upstream, share) -> None:
    token = access.share_token(share)
    forged = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    _, first = open_link(daphne, running_session, upstream.port, forged)
    assert first.status_code == 404
    assert "set-cookie" not in first.headers
    forged_cookie = httpx.get(preview_url(daphne, running_session, upstream.port, ""), timeout=20,
                              cookies={access.SHARE_COOKIE: forged})
    assert forged_cookie.status_code == 404
    assert upstream.state.requests == []


def test_a_token_signed_for_something_else_is_404(daphne, running_session, upstream, share) -> None:
    from django.core import signing

    other_salt = signing.dumps({"share": str(share.pk)}, salt="something.else")
    assert open_link(daphne, running_session, upstream.port, other_salt)[1].status_code == 404


def test_a_token_for_one_port_does_not_open_another(daphne, running_session, upstream, ws_upstream, owner) -> None:
    other_port = actions.create_share(running_session, ws_upstream.port, 60, owner)
    token = access.share_token(other_port)
    assert open_link(daphne, running_session, upstream.port, token)[1].status_code == 404
    as_cookie = httpx.get(preview_url(daphne, running_session, upstream.port, ""), timeout=20,
                          cookies={access.SHARE_COOKIE: token})
    assert as_cookie.status_code == 404


def test_a_token_for_another_session_does_not_open_this_one(daphne, running_session, upstream, preview_lab,
                                                            other_learner) -> None:
    from preview.tests.test_preview_support import start_session

    theirs = start_session(other_learner, preview_lab)
    token = access.share_token(actions.create_share(theirs, upstream.port, 60, other_learner))
    assert open_link(daphne, running_session, upstream.port, token)[1].status_code == 404


def test_the_owner_keeps_an_apps_own_share_parameter(daphne, running_session, upstream, owner) -> None:
    response = httpx.get(preview_url(daphne, running_session, upstream.port, "echo"), params={"share": "app-value"},
                         cookies={"sessionid": session_cookie(owner)}, timeout=20)
    assert response.status_code == 200
    assert response.json()["path"] == "/echo?share=app-value"
