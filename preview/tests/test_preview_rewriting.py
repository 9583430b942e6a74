"""What the browser gets back: redirects and cookies kept under the preview prefix, framing allowed
on our pages only, and no header that sets policy for the whole platform origin."""

from __future__ import annotations

from urllib.parse import quote

import httpx2 as httpx
import pytest

from preview import access, proxy
from preview.tests.test_preview_support import preview_url, session_cookie
from runners.base import Endpoint

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures

PREFIX = "/sessions/1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed/preview/8080"
APP_HOSTS = proxy.app_netlocs(Endpoint("172.18.0.5", 8080), 8080)


def fetch(daphne, session, upstream, user, path):  # type: ignore[no-untyped-def]
    return httpx.get(preview_url(daphne, session, upstream.port, path), follow_redirects=False, timeout=20,
                     cookies={"sessionid": session_cookie(user)})


# ---- through the proxy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/login?next=/x", "{prefix}/login?next=/x"),
        ("http://localhost:{port}/dashboard#top", "{prefix}/dashboard#top"),
        ("http://127.0.0.1:{port}/", "{prefix}/"),
        ("next-page", "next-page"),
        ("https://example.org/elsewhere", "https://example.org/elsewhere"),
    ],
)
def test_redirects_stay_inside_the_preview(daphne, running_session, upstream, owner, location, expected) -> None:
    location = location.format(port=upstream.port)
    response = fetch(daphne, running_session, upstream, owner, f"redirect?to={quote(location, safe='')}")
    assert response.status_code == 302
    prefix = f"/sessions/{running_session.pk}/preview/{upstream.port}"
    assert response.headers["location"] == expected.format(prefix=prefix)


def test_cookies_the_app_sets_are_scoped_to_its_preview(daphne, running_session, upstream, owner) -> None:
    sets = ["a=1", "b=2; Path=/admin; Domain=example.org; HttpOnly", "sessionid=app-session; Path=/; SameSite=Lax"]
    query = "&".join(f"set={quote(value)}" for value in sets)
    response = fetch(daphne, running_session, upstream, owner, f"sub/cookies?{query}")
    assert response.status_code == 200
    prefix = f"/sessions/{running_session.pk}/preview/{upstream.port}"
    assert response.headers.get_list("set-cookie") == [
        f"a=1; Path={prefix}/sub",
        f"b=2; Path={prefix}/admin; HttpOnly",
        f"labpreview-sessionid=app-session; Path={prefix}/; SameSite=Lax",
    ]


def test_the_preview_may_be_framed_by_our_pages_only(daphne, running_session, upstream, owner) -> None:
    response = fetch(daphne, running_session, upstream, owner, "policies")
    assert response.status_code == 200
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers.get_list("content-security-policy") == [
        "default-src 'self'", "frame-ancestors 'self'", proxy.SANDBOX_POLICY]


def test_headers_that_would_set_policy_for_the_whole_platform_are_dropped(daphne, running_session, upstream,
                                                                          owner) -> None:
    response = fetch(daphne, running_session, upstream, owner, "policies")
    for name in ("strict-transport-security", "clear-site-data", "service-worker-allowed"):
        assert name not in response.headers


def test_our_own_error_pages_frame_on_our_pages_too(daphne, running_session, closed_port, owner) -> None:
    response = httpx.get(preview_url(daphne, running_session, closed_port, ""), timeout=20,
                         cookies={"sessionid": session_cookie(owner)})
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


# ---- the rules themselves ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", f"{PREFIX}/"),
        ("/a/b?c=d", f"{PREFIX}/a/b?c=d"),
        (f"{PREFIX}/already", f"{PREFIX}/already"),  # an app honouring X-Forwarded-Prefix
        ("http://172.18.0.5:8080/x", f"{PREFIX}/x"),
        ("http://LOCALHOST:8080", f"{PREFIX}/"),
        ("http://user@localhost:8080/x", f"{PREFIX}/x"),
        ("https://labs.example.org/x", f"{PREFIX}/x"),  # honours X-Forwarded-Host but not the prefix
        ("//evil.example/x", "//evil.example/x"),
        ("http://localhost:9999/x", "http://localhost:9999/x"),  # another port is another app
        ("relative/path", "relative/path"),
        ("javascript:alert(1)", "javascript:alert(1)"),
    ],
)
def test_location_rewriting(value: str, expected: str) -> None:
    assert proxy.rewrite_location(value, PREFIX, APP_HOSTS, "labs.example.org") == expected


@pytest.mark.parametrize(
    ("value", "request_path", "expected"),
    [
        ("a=1", "/", f"a=1; Path={PREFIX}/"),
        ("a=1", "/deep/page", f"a=1; Path={PREFIX}/deep"),
        ("a=1; path=relative", "/x", f"a=1; Path={PREFIX}/"),
        ("a=1; Path=/; Domain=.example.org; Secure", "/", f"a=1; Path={PREFIX}/; Secure"),
        (f"a=1; Path={PREFIX}/p", "/", f"a=1; Path={PREFIX}/p"),
        ("csrftoken=x; Path=/", "/", f"labpreview-csrftoken=x; Path={PREFIX}/"),
        ("__Host-id=x; Path=/; Secure", "/", f"labpreview-__Host-id=x; Path={PREFIX}/; Secure"),
        ("lab_preview_share=forged", "/", f"labpreview-lab_preview_share=forged; Path={PREFIX}/"),
    ],
)
def test_set_cookie_rewriting(value: str, request_path: str, expected: str) -> None:
    assert proxy.rewrite_set_cookie(value, PREFIX, request_path) == expected


def test_renamed_app_cookies_get_their_names_back_and_platform_cookies_are_removed() -> None:
    pairs = proxy.parse_cookie_pairs(["labpreview-csrftoken=app; csrftoken=platform", "sessionid=p; x=1;;"])
    assert proxy.app_cookie_pairs(pairs) == [("csrftoken", "app"), ("x", "1")]
    # Only names that needed renaming are renamed back.
    assert proxy.app_cookie_pairs([("labpreview-theme", "dark")]) == [("labpreview-theme", "dark")]


def test_the_share_parameter_is_taken_out_of_the_query_byte_for_byte() -> None:
    assert access.split_share_param(b"a=%20&share=tok%3Aen&b=2") == ("tok:en", b"a=%20&b=2")
    assert access.split_share_param(b"sharex=1") == (None, b"sharex=1")


def test_the_apps_frame_ancestors_is_replaced_and_the_rest_of_its_policy_kept() -> None:
    headers = proxy.rewrite_response_headers(
        [(b"Content-Security-Policy", b"frame-ancestors 'none'"),
         (b"Content-Security-Policy", b"script-src 'self'; FRAME-ANCESTORS https://x"),
         (b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"), (b"Keep-Alive", b"timeout=5")],
        prefix=PREFIX, app_hosts=APP_HOSTS, public_host="labs.example.org", app_request_path="/",
    )
    assert headers == [
        (b"content-security-policy", b"script-src 'self'"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"content-security-policy", b"frame-ancestors 'self'"),
    ]


def test_https_is_taken_from_the_tls_proxy_only_when_it_is_trusted(settings) -> None:
    scope = {"scheme": "http", "headers": [(b"x-forwarded-proto", b"https")]}
    assert proxy.public_scheme(scope) == "http"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert proxy.public_scheme(scope) == "https"
    assert proxy.public_scheme({"scheme": "wss", "headers": []}) == "https"


def test_expect_and_client_forwarding_claims_are_not_passed_on() -> None:
    context = proxy.ForwardContext(prefix=PREFIX, port=8080, client_ip="10.0.0.7", scheme="https",
                                     public_host="labs.example.org")
    headers = proxy.upstream_request_headers(
        [(b"Expect", b"100-continue"), (b"X-Real-IP", b"1.2.3.4"), (b"X-Forwarded-Port", b"1"),
         (b"Host", b"labs.example.org"), (b"Accept", b"text/html")],
        context,
    )
    assert headers == [
        ("host", "localhost:8080"),
        ("accept", "text/html"),
        ("x-forwarded-for", "10.0.0.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "labs.example.org"),
        ("x-forwarded-prefix", PREFIX),
    ]
