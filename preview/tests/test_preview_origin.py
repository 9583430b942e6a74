"""The web preview on a host of its own (LAB_PREVIEW_HOST): the platform hands out a short-lived
token, the preview host swaps it for its own path-scoped grant cookie, and neither host serves
the other's routes or accepts the other's credentials.

HTTP runs through the real `labsite.asgi.application` under daphne (test_preview_support), the
platform's redirect view also through Django's test client. The platform is 127.0.0.1:<port> and
the preview host localhost:<port>: two origins, as a browser sees them.
"""

from __future__ import annotations

import time
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
from django.core import signing
from django.test import Client

from preview import access, actions, origin, proxy
from preview.tests.test_preview_support import headers_of, session_cookie
from sessions_app.models import Session, State

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


@pytest.fixture
def preview_host(settings, daphne) -> str:  # type: ignore[no-untyped-def]
    settings.LAB_PREVIEW_HOST = f"localhost:{daphne.port}"
    return settings.LAB_PREVIEW_HOST


@pytest.fixture
def platform_origin(daphne) -> str:  # type: ignore[no-untyped-def]
    return daphne.url  # http://127.0.0.1:<port>


def on_host(daphne, host: str, path: str, cookies: dict[str, str] | None = None, method: str = "GET",
            **kwargs: Any) -> httpx.Response:
    """A request to daphne with the given Host header (the test cannot rely on `localhost` resolving)."""
    headers = {"Host": host, **kwargs.pop("headers", {})}
    if cookies:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return httpx.request(method, f"{daphne.url}{path}", headers=headers, follow_redirects=False, timeout=20,
                         **kwargs)


def prefix_of(session: Session, port: int) -> str:
    return access.preview_prefix(session.pk, port)


def token_for(session: Session, user: Any, port: int, platform_origin: str) -> str:
    return origin.embed_token(session.pk, user, port, platform_origin)


def enter(daphne, host: str, session: Session, port: int, token: str, path: str = "page") -> httpx.Response:
    return on_host(daphne, host, f"{prefix_of(session, port)}/{path}?x=1&{origin.EMBED_PARAM}={token}")


def grant_from(response: httpx.Response) -> str:
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{access.GRANT_COOKIE}=")
    return cookie.split(";")[0].partition("=")[2]


# ---- the platform's side --------------------------------------------------------------------------


def test_the_platform_sends_the_owner_to_the_preview_host_with_a_token(preview_host, running_session, upstream,
                                                                        owner) -> None:
    client = Client()
    client.force_login(owner)
    response = client.get(f"{prefix_of(running_session, upstream.port)}/page?x=1", HTTP_HOST="127.0.0.1",
                          HTTP_SEC_FETCH_SITE="same-origin")
    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    location = urlsplit(response["Location"])
    assert (location.scheme, location.netloc) == ("http", preview_host)
    assert location.path == f"{prefix_of(running_session, upstream.port)}/page"
    query = parse_qs(location.query)
    assert query["x"] == ["1"]
    claims = signing.loads(query[origin.EMBED_PARAM][0], salt=origin.EMBED_SALT, max_age=60)
    assert claims["s"] == str(running_session.pk)
    assert claims["u"] == owner.pk
    assert claims["p"] == upstream.port
    assert claims["o"] == "http://127.0.0.1"


def test_the_preview_root_without_its_slash_gets_one_on_the_way(preview_host, running_session, upstream,
                                                               owner) -> None:
    client = Client()
    client.force_login(owner)
    response = client.get(prefix_of(running_session, upstream.port))
    assert urlsplit(response["Location"]).path == f"{prefix_of(running_session, upstream.port)}/"


def test_staff_get_a_token_too_and_outsiders_get_404(preview_host, running_session, upstream, staff_user,
                                                     other_learner) -> None:
    url = f"{prefix_of(running_session, upstream.port)}/"
    staff = Client()
    staff.force_login(staff_user)
    assert origin.EMBED_PARAM in staff.get(url)["Location"]
    outsider = Client()
    outsider.force_login(other_learner)
    assert outsider.get(url).status_code == 404
    assert Client().get(url).status_code == 404


def test_a_request_the_platform_page_did_not_make_gets_no_token(preview_host, running_session, upstream,
                                                                owner) -> None:
    """A learner's app (another site) must not get a viewer's browser to mint grants for it."""
    client = Client()
    client.force_login(owner)
    for site in ("cross-site", "same-site"):
        response = client.get(f"{prefix_of(running_session, upstream.port)}/", HTTP_SEC_FETCH_SITE=site)
        assert response.status_code == 302
        assert response["Location"] == running_session.get_absolute_url()


def test_an_old_share_link_on_the_platform_host_still_works(preview_host, running_session, upstream, owner,
                                                            daphne) -> None:
    token = access.share_token(actions.create_share(running_session, upstream.port, 60, owner))
    response = Client().get(f"{prefix_of(running_session, upstream.port)}/", {"share": token})
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.netloc == preview_host
    assert parse_qs(location.query) == {"share": [token]}
    first = on_host(daphne, preview_host, f"{location.path}?{location.query}")
    assert first.status_code == 302
    assert first.headers["set-cookie"].startswith(f"{access.SHARE_COOKIE}=")
    page = on_host(daphne, preview_host, first.headers["location"], cookies={access.SHARE_COOKIE: token})
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_new_share_links_point_at_the_preview_host(preview_host, running_session, upstream, owner) -> None:
    client = Client()
    client.force_login(owner)
    response = client.post(f"/sessions/{running_session.pk}/shares/create/", {"port": upstream.port, "minutes": 5},
                           HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert f"http://{preview_host}{prefix_of(running_session, upstream.port)}/?share=" in response.content.decode()


def test_through_asgi_the_platform_host_redirects_preview_paths(preview_host, running_session, upstream, owner,
                                                               daphne) -> None:
    response = on_host(daphne, f"127.0.0.1:{daphne.port}", f"{prefix_of(running_session, upstream.port)}/page",
                       cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"http://{preview_host}/")
    assert upstream.state.requests == []


def test_without_a_preview_host_the_redirect_view_is_never_used(running_session, upstream, owner_client) -> None:
    # Under ASGI the proxy answers these paths (test_preview_access); Django's own route stays closed.
    assert owner_client.get(f"{prefix_of(running_session, upstream.port)}/").status_code == 404


# ---- the preview host: tokens and the grant cookie --------------------------------------------------


def test_a_valid_token_becomes_a_scoped_grant_cookie_and_the_app_shows(preview_host, platform_origin,
                                                                      running_session, upstream, owner,
                                                                      daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    prefix = prefix_of(running_session, upstream.port)
    assert first.status_code == 302
    assert first.headers["location"] == f"{prefix}/page?x=1"  # the token is out of the address
    cookie = first.headers["set-cookie"]
    assert f"Path={prefix}/" in cookie
    assert "HttpOnly" in cookie
    # A frame of another site gets only partitioned cookies (keyed to the platform's site).
    assert "SameSite=None" in cookie and "Secure" in cookie and "Partitioned" in cookie
    assert upstream.state.requests == []  # the app never saw the token

    page = on_host(daphne, preview_host, first.headers["location"], cookies={access.GRANT_COOKIE: grant_from(first)})
    assert page.status_code == 200
    assert "Hello from the learner's app" in page.text
    assert page.headers["content-security-policy"] == f"frame-ancestors {platform_origin}"
    assert "x-frame-options" not in page.headers  # SAMEORIGIN would forbid the platform's frame
    assert upstream.state.requests[-1]["path"] == "/page?x=1"


def test_on_plain_http_elsewhere_the_grant_cookie_is_samesite_lax(preview_host, platform_origin, running_session,
                                                                  upstream, owner, daphne, settings) -> None:
    settings.LAB_PREVIEW_HOST = "preview.labs.test"
    first = enter(daphne, "preview.labs.test", running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    cookie = first.headers["set-cookie"]
    assert "SameSite=Lax" in cookie and "Secure" not in cookie and "Partitioned" not in cookie
    settings.SESSION_COOKIE_SECURE = True  # DJANGO_SECURE_COOKIES
    cookie = enter(daphne, "preview.labs.test", running_session, upstream.port,
                   token_for(running_session, owner, upstream.port, platform_origin)).headers["set-cookie"]
    assert "Secure" in cookie and "Partitioned" in cookie


def test_staff_enter_with_their_token(preview_host, platform_origin, running_session, upstream, staff_user,
                                      daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, staff_user, upstream.port, platform_origin))
    assert first.status_code == 302
    page = on_host(daphne, preview_host, first.headers["location"], cookies={access.GRANT_COOKIE: grant_from(first)})
    assert page.status_code == 200


def test_an_expired_token_is_404(preview_host, platform_origin, running_session, upstream, owner, daphne) -> None:
    with mock.patch("django.core.signing.time.time", return_value=time.time() - origin.EMBED_MAX_AGE - 5):
        token = token_for(running_session, owner, upstream.port, platform_origin)
    response = enter(daphne, preview_host, running_session, upstream.port, token)
    assert response.status_code == 404
    assert "set-cookie" not in response.headers
    assert upstream.state.requests == []


def test_a_token_for_a_user_who_may_not_look_is_404(preview_host, platform_origin, running_session, upstream,
                                                    other_learner, daphne) -> None:
    response = enter(daphne, preview_host, running_session, upstream.port,
                     token_for(running_session, other_learner, upstream.port, platform_origin))
    assert response.status_code == 404
    assert "set-cookie" not in response.headers


def test_a_token_for_another_port_or_session_is_404(preview_host, platform_origin, running_session, upstream,
                                                    ws_upstream, preview_lab, owner, daphne) -> None:
    from preview.tests.test_preview_support import start_session

    other_port = token_for(running_session, owner, ws_upstream.port, platform_origin)
    assert enter(daphne, preview_host, running_session, upstream.port, other_port).status_code == 404
    other_session = start_session(owner, preview_lab)
    theirs = token_for(other_session, owner, upstream.port, platform_origin)
    assert enter(daphne, preview_host, running_session, upstream.port, theirs).status_code == 404


def test_forged_tokens_and_cookies_are_404(preview_host, platform_origin, running_session, upstream, owner,
                                           daphne) -> None:
    token = token_for(running_session, owner, upstream.port, platform_origin)
    assert enter(daphne, preview_host, running_session, upstream.port, token[:-2] + "xx").status_code == 404
    # An embed token is no grant cookie (salts differ), nor the other way round.
    page = f"{prefix_of(running_session, upstream.port)}/page"
    assert on_host(daphne, preview_host, page, cookies={access.GRANT_COOKIE: token}).status_code == 404
    grant = signing.dumps(signing.loads(token, salt=origin.EMBED_SALT), salt=origin.GRANT_SALT)
    assert enter(daphne, preview_host, running_session, upstream.port, grant).status_code == 404
    assert upstream.state.requests == []


def test_the_grant_is_checked_against_the_database_every_time(preview_host, platform_origin, running_session,
                                                              upstream, staff_user, daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, staff_user, upstream.port, platform_origin))
    cookies = {access.GRANT_COOKIE: grant_from(first)}
    page = f"{prefix_of(running_session, upstream.port)}/page"
    assert on_host(daphne, preview_host, page, cookies=cookies).status_code == 200

    staff_user.is_staff = False  # staff status taken away: no more access, at once
    staff_user.save(update_fields=["is_staff"])
    assert on_host(daphne, preview_host, page, cookies=cookies).status_code == 404
    staff_user.is_staff = True
    staff_user.save(update_fields=["is_staff"])
    assert on_host(daphne, preview_host, page, cookies=cookies).status_code == 200

    staff_user.set_password("another-long-password-7")  # a new password ends the old grants
    staff_user.save(update_fields=["password"])
    assert on_host(daphne, preview_host, page, cookies=cookies).status_code == 404


def test_a_stopped_session_ends_the_grant_at_once(preview_host, platform_origin, running_session, upstream, owner,
                                                  daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    cookies = {access.GRANT_COOKIE: grant_from(first)}
    page = f"{prefix_of(running_session, upstream.port)}/page"
    assert on_host(daphne, preview_host, page, cookies=cookies).status_code == 200
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPED)
    response = on_host(daphne, preview_host, page, cookies=cookies)
    assert response.status_code == 503
    # Our own message page, which the platform's frame may show.
    assert response.headers["content-security-policy"].endswith("frame-ancestors *")
    assert len(upstream.state.requests) == 1


def test_a_grant_cookie_opens_only_its_own_port(preview_host, platform_origin, running_session, upstream,
                                                ws_upstream, owner, daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    other = on_host(daphne, preview_host, f"{prefix_of(running_session, ws_upstream.port)}/",
                    cookies={access.GRANT_COOKIE: grant_from(first)})
    assert other.status_code == 404


# ---- the preview host: nothing of the platform -------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/admin/", "/accounts/login/", "/sessions/", "/static/js/preview.js",
                                  "/ws/sessions/00000000-0000-0000-0000-000000000000/terminal/"])
def test_only_previews_exist_on_the_preview_host(preview_host, daphne, owner, path) -> None:
    response = on_host(daphne, preview_host, path, cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 404
    assert "set-cookie" not in response.headers
    assert "csrfmiddlewaretoken" not in response.text


def test_the_platforms_session_opens_nothing_on_the_preview_host(preview_host, running_session, upstream,
                                                                 staff_user, daphne) -> None:
    response = on_host(daphne, preview_host, f"{prefix_of(running_session, upstream.port)}/page",
                       cookies={"sessionid": session_cookie(staff_user)})
    assert response.status_code == 404
    assert upstream.state.requests == []


def test_our_cookies_never_reach_the_app(preview_host, platform_origin, running_session, upstream, owner,
                                         daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    echoed = on_host(daphne, preview_host, f"{prefix_of(running_session, upstream.port)}/echo",
                     cookies={access.GRANT_COOKIE: grant_from(first), "sessionid": "x", "theme": "dark"}).json()
    assert headers_of(echoed)["cookie"] == ["theme=dark"]


def test_the_app_cannot_set_or_overwrite_the_grant_cookie(preview_host, platform_origin, running_session, upstream,
                                                          owner, daphne) -> None:
    first = enter(daphne, preview_host, running_session, upstream.port,
                  token_for(running_session, owner, upstream.port, platform_origin))
    response = on_host(daphne, preview_host, f"{prefix_of(running_session, upstream.port)}/cookies",
                       params={"set": f"{access.GRANT_COOKIE}=forged; Path=/"},
                       cookies={access.GRANT_COOKIE: grant_from(first)})
    assert response.headers["set-cookie"].startswith(f"{proxy.MANGLED_COOKIE_PREFIX}{access.GRANT_COOKIE}=forged")


def test_the_preview_host_redirects_to_https_when_the_site_does(preview_host, running_session, upstream, daphne,
                                                                settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    response = on_host(daphne, preview_host, f"{prefix_of(running_session, upstream.port)}/page?a=1")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{preview_host}{prefix_of(running_session, upstream.port)}/page?a=1"
