"""Who sees a session's web preview: the owner and staff; everyone else gets a plain 404."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from preview.tests.test_preview_support import preview_url, session_cookie
from sessions_app.models import Session, State

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures


def get(url: str, cookie: str | None = None, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    cookies = {"sessionid": cookie} if cookie else None
    return httpx.get(url, cookies=cookies, follow_redirects=False, timeout=20, **kwargs)


def test_the_owner_sees_the_app_page(daphne, running_session, upstream, owner) -> None:
    response = get(preview_url(daphne, running_session, upstream.port, "page"), session_cookie(owner))
    assert response.status_code == 200
    assert "Hello from the learner's app" in response.text
    assert upstream.state.requests[-1]["path"] == "/page"


def test_another_learner_gets_404_and_the_app_sees_nothing(daphne, running_session, upstream, other_learner) -> None:
    response = get(preview_url(daphne, running_session, upstream.port, "page"), session_cookie(other_learner))
    assert response.status_code == 404
    assert "learner's app" not in response.text
    assert upstream.state.requests == []


def test_an_anonymous_visitor_gets_404(daphne, running_session, upstream) -> None:
    response = get(preview_url(daphne, running_session, upstream.port, "page"))
    assert response.status_code == 404
    assert upstream.state.requests == []


def test_staff_see_any_learners_preview(daphne, running_session, upstream, staff_user) -> None:
    response = get(preview_url(daphne, running_session, upstream.port, "page"), session_cookie(staff_user))
    assert response.status_code == 200
    assert "Hello from the learner's app" in response.text


def test_a_port_the_lab_does_not_declare_is_404_even_for_the_owner(daphne, running_session, owner) -> None:
    response = get(preview_url(daphne, running_session, 5432, "page"), session_cookie(owner))
    assert response.status_code == 404
    assert "not a preview port" in response.text


def test_an_unknown_session_is_404(daphne, running_session, upstream, owner) -> None:
    url = preview_url(daphne, running_session, upstream.port, "page").replace(str(running_session.pk)[:8], "00000000")
    assert get(url, session_cookie(owner)).status_code == 404


def test_a_session_that_is_not_running_answers_503(daphne, running_session, upstream, owner) -> None:
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPING)
    response = get(preview_url(daphne, running_session, upstream.port, "page"), session_cookie(owner))
    assert response.status_code == 503
    assert "session is not running" in response.text
    assert upstream.state.requests == []


def test_a_stopped_session_is_still_404_for_outsiders(daphne, running_session, upstream, other_learner) -> None:
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPED)
    response = get(preview_url(daphne, running_session, upstream.port, "page"), session_cookie(other_learner))
    assert response.status_code == 404


def test_the_preview_root_without_its_slash_redirects_to_it(daphne, running_session, upstream, owner) -> None:
    url = preview_url(daphne, running_session, upstream.port).rstrip("/")
    response = get(url + "?a=1", session_cookie(owner))
    assert response.status_code == 308
    assert response.headers["location"] == f"/sessions/{running_session.pk}/preview/{upstream.port}/?a=1"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_outsiders_cannot_send_other_methods_either(daphne, running_session, upstream, other_learner, method) -> None:
    response = httpx.request(method, preview_url(daphne, running_session, upstream.port, "echo"), content=b"x",
                             cookies={"sessionid": session_cookie(other_learner)}, timeout=20)
    assert response.status_code == 404
    assert upstream.state.requests == []


def test_a_malformed_session_id_is_404(daphne, running_session, upstream, owner) -> None:
    url = f"{daphne.url}/sessions/{'-' * 36}/preview/{upstream.port}/"
    assert get(url, session_cookie(owner)).status_code == 404


def test_a_head_request_gets_the_apps_headers_and_no_body(daphne, running_session, upstream, owner) -> None:
    response = httpx.head(preview_url(daphne, running_session, upstream.port, "page"), timeout=20,
                          cookies={"sessionid": session_cookie(owner)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.content == b""
    assert upstream.state.requests[-1]["method"] == "HEAD"
