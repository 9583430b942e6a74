"""Without a preview host, every preview answer is sandboxed: the app's documents get an opaque
origin, so their script never runs as the platform (tests/e2e/test_preview_isolation.py tries the
attacks in Chromium). The app's own headers cannot take the sandbox away, and the session page's
iframe is sandboxed to match. With a preview host the app keeps that origin for itself.

Through the real `labsite.asgi.application` under daphne (test_preview_support).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote, urlencode

import httpx2 as httpx
import pytest
from django.utils import timezone

from preview import access, actions, proxy
from preview.tests.test_preview_support import preview_url, session_cookie
from sessions_app.models import Session, State

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures

FORBIDDEN_TOKENS = ("allow-same-origin", "allow-top-navigation", "allow-popups-to-escape-sandbox")


def get(url: str, user=None) -> httpx.Response:  # type: ignore[no-untyped-def]
    cookies = {"sessionid": session_cookie(user)} if user is not None else {}
    return httpx.get(url, cookies=cookies, follow_redirects=False, timeout=20)


def assert_sandboxed(response: httpx.Response) -> None:
    policies = response.headers.get_list("content-security-policy")
    assert proxy.SANDBOX_POLICY in policies, (response.status_code, policies)


def test_the_sandbox_allows_script_but_never_the_platforms_origin_or_its_page() -> None:
    assert proxy.SANDBOX_POLICY.startswith("sandbox allow-scripts ")
    for token in FORBIDDEN_TOKENS:
        assert token not in proxy.SANDBOX_POLICY


@pytest.mark.parametrize("path", ["page", "echo/data.json", "big?bytes=10", "redirect?to=/elsewhere"])
def test_every_answer_of_the_app_is_sandboxed(daphne, running_session, upstream, owner, path) -> None:
    response = get(preview_url(daphne, running_session, upstream.port, path), owner)
    assert response.status_code in (200, 302)
    assert_sandboxed(response)


def test_the_apps_own_policies_cannot_lift_the_sandbox(daphne, running_session, upstream, owner) -> None:
    # Browsers enforce every policy a response carries: the app's may only add restrictions.
    loose = ["Content-Security-Policy:sandbox allow-same-origin allow-scripts allow-top-navigation",
             "Content-Security-Policy:default-src *"]
    response = get(preview_url(daphne, running_session, upstream.port,
                               "with-headers?" + urlencode({"header": loose}, doseq=True)), owner)
    assert response.status_code == 200
    policies = response.headers.get_list("content-security-policy")
    assert policies == ["sandbox allow-same-origin allow-scripts allow-top-navigation", "default-src *",
                        "frame-ancestors 'self'", proxy.SANDBOX_POLICY]


def test_our_own_pages_and_redirects_are_sandboxed_too(daphne, running_session, upstream, closed_port, owner,
                                                       other_learner, lab) -> None:
    root = preview_url(daphne, running_session, upstream.port, "")
    share = actions.create_share(running_session, upstream.port, 10, owner)
    answers = {
        "no trailing slash": get(root.rstrip("/"), owner),
        "not yours": get(root, other_learner),
        "undeclared port": get(preview_url(daphne, running_session, 1, ""), owner),
        "nothing listening": get(preview_url(daphne, running_session, closed_port, ""), owner),
        "share link, first use": get(f"{root}?share={quote(access.share_token(share))}"),
    }
    stopped = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.STOPPED,
                                     started_at=timezone.now(), expires_at=timezone.now() + timedelta(hours=1))
    answers["not running"] = get(preview_url(daphne, stopped, upstream.port, ""), owner)
    assert {name: r.status_code for name, r in answers.items()} == {
        "no trailing slash": 308, "not yours": 404, "undeclared port": 404, "nothing listening": 502,
        "share link, first use": 302, "not running": 503,
    }
    for response in answers.values():
        assert_sandboxed(response)


def test_on_a_preview_host_the_app_keeps_that_origin(settings, daphne, running_session, upstream, owner) -> None:
    settings.LAB_PREVIEW_HOST = f"localhost:{daphne.port}"
    share = actions.create_share(running_session, upstream.port, 10, owner)
    path = f"{access.preview_prefix(running_session.pk, upstream.port)}/page"
    first = httpx.get(f"{daphne.url}{path}?share={quote(access.share_token(share))}", timeout=20,
                      headers={"Host": settings.LAB_PREVIEW_HOST}, follow_redirects=False)
    assert first.status_code == 302
    page = httpx.get(f"{daphne.url}{path}", headers={"Host": settings.LAB_PREVIEW_HOST}, timeout=20,
                     cookies={access.SHARE_COOKIE: access.share_token(share)})
    assert page.status_code == 200 and "Hello from the learner's app" in page.text
    for response in (first, page):
        assert not any("sandbox" in p for p in response.headers.get_list("content-security-policy"))


# ---- the session page's iframe --------------------------------------------------------------------


def frame_sandbox(owner_client, session: Session) -> str:  # type: ignore[no-untyped-def]
    page = owner_client.get(session.get_absolute_url()).content.decode()
    marker = 'data-preview-sandbox="'
    assert marker in page
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_the_preview_frame_is_sandboxed_like_the_preview(owner_client, running_session) -> None:
    tokens = frame_sandbox(owner_client, running_session).split()
    assert tokens == list(proxy.SANDBOX_TOKENS)


def test_with_a_preview_host_the_frame_keeps_the_apps_origin_but_not_the_platforms_page(
    settings, owner_client, running_session
) -> None:
    settings.LAB_PREVIEW_HOST = "preview.labs.example.org"
    tokens = frame_sandbox(owner_client, running_session).split()
    assert tokens == [*proxy.SANDBOX_TOKENS, "allow-same-origin"]
    assert not any(token.startswith("allow-top-navigation") for token in tokens)
