"""What the learner's app receives: its own path, cookies and headers; never the platform's credentials."""

from __future__ import annotations

import httpx2 as httpx

from preview.tests.test_preview_support import headers_of, preview_url, session_cookie

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


def echo(daphne, session, upstream, user, path="echo", headers=None, method="GET", **kwargs):  # type: ignore[no-untyped-def]
    cookie = f"sessionid={session_cookie(user)}"
    extra = dict(headers or {})
    if "Cookie" in extra:
        cookie = f"{extra.pop('Cookie')}; {cookie}"
    response = httpx.request(method, preview_url(daphne, session, upstream.port, path),
                             headers={"Cookie": cookie, **extra}, timeout=20, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_app_sees_its_own_path_without_the_prefix(daphne, running_session, upstream, owner) -> None:
    seen = echo(daphne, running_session, upstream, owner, path="api/a%2Fb/%E2%9C%93?x=1&y=%20&x=2")
    assert seen["path"] == "/api/a%2Fb/%E2%9C%93?x=1&y=%20&x=2"


def test_the_app_sees_the_preview_root_as_its_root(daphne, running_session, upstream, owner) -> None:
    assert echo(daphne, running_session, upstream, owner, path="")["path"] == "/"


def test_platform_cookies_stay_behind_while_the_apps_own_cookies_go_through(
    daphne, running_session, upstream, owner
) -> None:
    cookies = ("csrftoken=platform-csrf; messages=platform-messages; lab_preview_share=some-token; "
               "django_language=en; theme=dark; labpreview-sessionid=the-apps-session")
    seen = headers_of(echo(daphne, running_session, upstream, owner, headers={"Cookie": cookies}))
    assert seen["cookie"] == ["theme=dark; sessionid=the-apps-session"]
    everything = repr(seen)
    assert session_cookie(owner) not in everything
    assert "platform-csrf" not in everything
    assert "platform-messages" not in everything
    assert "some-token" not in everything


def test_no_cookie_header_reaches_the_app_when_only_platform_cookies_were_sent(
    daphne, running_session, upstream, owner
) -> None:
    seen = headers_of(echo(daphne, running_session, upstream, owner, headers={"Cookie": "csrftoken=abc"}))
    assert "cookie" not in seen


def test_the_platforms_csrf_token_is_never_forwarded(daphne, running_session, upstream, owner) -> None:
    alone = headers_of(echo(daphne, running_session, upstream, owner, method="POST",
                            headers={"Cookie": "csrftoken=platform-csrf", "X-CSRFToken": "platform-csrf"}))
    assert "x-csrftoken" not in alone
    # A Django app in the session read "csrftoken" from document.cookie and got the platform's
    # value: it gets its own (stored renamed) instead.
    swapped = headers_of(echo(daphne, running_session, upstream, owner, method="POST",
                              headers={"Cookie": "csrftoken=platform-csrf; labpreview-csrftoken=app-csrf",
                                       "X-CSRFToken": "platform-csrf"}))
    assert swapped["x-csrftoken"] == ["app-csrf"]
    own = headers_of(echo(daphne, running_session, upstream, owner, method="POST",
                          headers={"Cookie": "csrftoken=platform-csrf", "X-CSRFToken": "app-token"}))
    assert own["x-csrftoken"] == ["app-token"]


def test_the_app_is_told_where_it_is_served(daphne, running_session, upstream, owner) -> None:
    seen = headers_of(echo(daphne, running_session, upstream, owner,
                           headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example",
                                    "Forwarded": "for=203.0.113.9"}))
    assert seen["host"] == [f"localhost:{upstream.port}"]
    assert seen["x-forwarded-prefix"] == [f"/sessions/{running_session.pk}/preview/{upstream.port}"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{daphne.port}"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # the client's own claim is not passed on
    assert "forwarded" not in seen


def test_authorization_is_forwarded_as_the_platform_never_uses_it(daphne, running_session, upstream, owner) -> None:
    seen = headers_of(echo(daphne, running_session, upstream, owner, headers={"Authorization": "Basic YTpi"}))
    assert seen["authorization"] == ["Basic YTpi"]


def test_our_own_origin_becomes_the_apps_origin_and_others_pass_unchanged(
    daphne, running_session, upstream, owner
) -> None:
    ours = headers_of(echo(daphne, running_session, upstream, owner, method="POST",
                           headers={"Origin": daphne.url}))
    assert ours["origin"] == [f"http://localhost:{upstream.port}"]
    theirs = headers_of(echo(daphne, running_session, upstream, owner, method="POST",
                             headers={"Origin": "https://elsewhere.example"}))
    assert theirs["origin"] == ["https://elsewhere.example"]


def test_hop_by_hop_headers_are_not_forwarded(daphne, running_session, upstream, owner) -> None:
    seen = headers_of(echo(daphne, running_session, upstream, owner,
                           headers={"Connection": "keep-alive, X-Per-Hop", "X-Per-Hop": "1", "TE": "trailers",
                                    "Proxy-Authorization": "Basic eDp5", "X-Kept": "yes"}))
    assert "x-per-hop" not in seen
    assert "te" not in seen
    assert "proxy-authorization" not in seen
    assert seen["x-kept"] == ["yes"]


def test_a_small_request_body_arrives_whole(daphne, running_session, upstream, owner) -> None:
    seen = echo(daphne, running_session, upstream, owner, method="POST", content=b"name=value")
    assert seen["body_size"] == len(b"name=value")
    assert headers_of(seen)["content-length"] == ["10"]
