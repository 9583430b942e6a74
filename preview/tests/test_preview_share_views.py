"""Managing share links from the session page: create, list, revoke; owner and staff only; with
HTMX partials and plain form posts alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from preview import access, actions
from preview.models import PreviewShare
from sessions_app.models import Session, State

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "preview-shares"}


@pytest.fixture
def session(owner, lab) -> Session:  # type: ignore[no-untyped-def]
    lab.exposed_ports = [8080, 3000]
    lab.save(update_fields=["exposed_ports"])
    now = timezone.now()
    return Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING, started_at=now,
                                  expires_at=now + timedelta(hours=1))


def url(name: str, session: Session, *args: object) -> str:
    return reverse(f"sessions:shares:{name}", args=[session.pk, *args])


def test_the_owner_creates_a_share_link_and_gets_the_panel_back(owner_client, session) -> None:
    response = owner_client.post(url("create", session), {"port": "8080", "minutes": "60"}, **HTMX)
    assert response.status_code == 200
    share = PreviewShare.objects.get(session=session)
    assert share.port == 8080
    assert share.created_by == session.user
    assert timedelta(minutes=59) < share.expires_at - timezone.now() <= timedelta(minutes=60)
    html = response.content.decode()
    assert 'id="preview-shares"' in html
    assert f"http://testserver{access.share_path(share)}" in html.replace("&amp;", "&")
    assert "<html" not in html  # a partial, not a page
    assert session.events.filter(message__contains="shared").exists()


def test_without_javascript_creating_redirects_to_the_session_page_with_the_link(owner_client, session) -> None:
    response = owner_client.post(url("create", session), {"port": "3000", "minutes": "15"}, follow=True)
    assert response.redirect_chain[-1][0] == session.get_absolute_url() + "#preview-shares"
    share = PreviewShare.objects.get(session=session)
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"http://testserver{access.share_path(share)}" in m for m in shown)


def test_the_default_form_offers_an_hour(owner_client, session) -> None:
    html = owner_client.get(url("list", session), **HTMX).content.decode()
    assert 'name="minutes"' in html
    assert 'value="60"' in html
    assert 'max="1440"' in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"port": "5432", "minutes": "60"}, "Select a valid choice"),
        ({"port": "8080", "minutes": "0"}, "greater than or equal to 1"),
        ({"port": "8080", "minutes": str(24 * 60 + 1)}, "less than or equal to 1440"),
        ({"port": "8080"}, "required"),
    ],
)
def test_bad_requests_make_no_share_and_say_why(owner_client, session, data, message) -> None:
    response = owner_client.post(url("create", session), data, **HTMX)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not PreviewShare.objects.exists()


def test_the_longest_share_is_a_setting(owner_client, session, settings) -> None:
    settings.LAB_SHARE_MAX_MINUTES = 30
    response = owner_client.post(url("create", session), {"port": "8080", "minutes": "31"}, **HTMX)
    assert "less than or equal to 30" in response.content.decode()
    owner_client.post(url("create", session), {"port": "8080", "minutes": "30"}, **HTMX)
    assert PreviewShare.objects.count() == 1


def test_no_share_for_a_session_that_is_not_running(owner_client, session) -> None:
    Session.objects.filter(pk=session.pk).update(state=State.STOPPED)
    response = owner_client.post(url("create", session), {"port": "8080", "minutes": "60"}, **HTMX)
    assert "only be made while the session is running" in response.content.decode()
    assert not PreviewShare.objects.exists()


def test_the_owner_revokes_a_share(owner_client, session, owner) -> None:
    share = actions.create_share(session, 8080, 60, owner)
    response = owner_client.post(url("revoke", session, share.pk), **HTMX)
    assert response.status_code == 200
    share.refresh_from_db()
    assert share.revoked_at is not None
    assert "Revoked" in response.content.decode()
    assert access.share_path(share) not in response.content.decode()


def test_without_javascript_revoking_redirects_back(owner_client, session, owner) -> None:
    share = actions.create_share(session, 8080, 60, owner)
    response = owner_client.post(url("revoke", session, share.pk))
    assert response.status_code == 302
    assert response["Location"] == session.get_absolute_url() + "#preview-shares"
    share.refresh_from_db()
    assert share.revoked_at is not None


def test_the_list_shows_live_and_ended_links(owner_client, session, owner) -> None:
    live = actions.create_share(session, 8080, 60, owner)
    expired = actions.create_share(session, 3000, 60, owner)
    PreviewShare.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    html = owner_client.get(url("list", session), **HTMX).content.decode().replace("&amp;", "&")
    assert access.share_path(live) in html
    assert access.share_path(expired) not in html
    assert "Expired" in html


def test_the_list_without_htmx_sends_you_to_the_session_page(owner_client, session) -> None:
    response = owner_client.get(url("list", session))
    assert response.status_code == 302
    assert response["Location"] == session.get_absolute_url() + "#preview-shares"


def test_another_learner_can_neither_see_nor_make_nor_revoke_shares(client, other_learner, session, owner) -> None:
    share = actions.create_share(session, 8080, 60, owner)
    client.force_login(other_learner)
    assert client.get(url("list", session), **HTMX).status_code == 404
    assert client.post(url("create", session), {"port": "8080", "minutes": "60"}, **HTMX).status_code == 404
    assert client.post(url("revoke", session, share.pk), **HTMX).status_code == 404
    share.refresh_from_db()
    assert share.revoked_at is None
    assert PreviewShare.objects.count() == 1


def test_a_share_of_one_session_cannot_be_revoked_through_another(owner_client, session, owner, lab) -> None:
    share = actions.create_share(session, 8080, 60, owner)
    other = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING)
    assert owner_client.post(url("revoke", other, share.pk), **HTMX).status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(client, session) -> None:
    response = client.post(url("create", session), {"port": "8080", "minutes": "60"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert not PreviewShare.objects.exists()


def test_staff_manage_any_sessions_shares(client, staff_user, session) -> None:
    client.force_login(staff_user)
    client.post(url("create", session), {"port": "8080", "minutes": "60"}, **HTMX)
    share = PreviewShare.objects.get(session=session)
    assert share.created_by == staff_user
    client.post(url("revoke", session, share.pk), **HTMX)
    share.refresh_from_db()
    assert share.revoked_at is not None


def test_creating_and_revoking_need_the_csrf_token(owner, session) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(url("create", session), {"port": "8080", "minutes": "60"}).status_code == 403
    share = actions.create_share(session, 8080, 60, owner)
    assert client.post(url("revoke", session, share.pk)).status_code == 403
    share.refresh_from_db()
    assert share.revoked_at is None


def test_creating_and_revoking_refuse_get(owner_client, session, owner) -> None:
    share = actions.create_share(session, 8080, 60, owner)
    assert owner_client.get(url("create", session)).status_code == 405
    assert owner_client.get(url("revoke", session, share.pk)).status_code == 405


def test_the_panel_included_with_only_the_session_loads_itself(rf, owner, session) -> None:
    request = rf.get("/")
    request.user = owner
    html = render_to_string("preview/_shares.html", {"session": session}, request=request)
    assert f'hx-get="{url("list", session)}"' in html
    assert 'hx-trigger="load"' in html
    assert f'action="{url("create", session)}"' in html  # the form works before (and without) HTMX


def test_the_panel_is_empty_for_a_lab_without_preview_ports(rf, owner, session) -> None:
    session.lab.exposed_ports = []
    request = rf.get("/")
    request.user = owner
    assert render_to_string("preview/_shares.html", {"session": session}, request=request).strip() == ""
