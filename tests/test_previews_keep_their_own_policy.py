"""Web previews are served by Channels (labsite/asgi.py), never through Django's middleware: the
platform's Content-Security-Policy (its nonce, its form targets) must not reach a learner's app,
whose headers preview/proxy.py decides, and the app's page must still come through."""

from __future__ import annotations

import httpx2 as httpx

from preview.tests.test_preview_support import preview_url, session_cookie

pytest_plugins = ["preview.tests.test_preview_support"]  # daphne, upstream, running_session


def test_a_preview_page_gets_no_part_of_the_platforms_policy(daphne, running_session, upstream, owner) -> None:
    response = httpx.get(preview_url(daphne, running_session, upstream.port, "page"),
                         headers={"Cookie": f"sessionid={session_cookie(owner)}"}, timeout=20)
    assert response.status_code == 200
    assert "Hello from the learner's app" in response.text
    policies = response.headers.get_list("content-security-policy")
    assert not [policy for policy in policies if "'nonce-" in policy or "form-action" in policy], policies
