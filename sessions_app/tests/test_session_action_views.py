"""The learner's Stop, Extend and "I'm still here" (heartbeat) buttons, over HTTP.

Each view is driven through Django's test client the way the page calls it: a POST with the
CSRF token. Outsiders (another learner, an anonymous visitor, a GET, a POST without the token)
must change nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runners import fake
from sessions_app import actions
from sessions_app.models import EndReason, Session, State

LONG_AGO = timedelta(minutes=10)  # older than LAB_ACTIVITY_WRITE_SECONDS, so a heartbeat writes


@pytest.fixture
def running(owner, lab, django_capture_on_commit_callbacks) -> Session:  # type: ignore[no-untyped-def]
    """A running session on the fake runner, started the way the Start button starts one."""
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    # Idle for a while: a heartbeat has something to move.
    Session.objects.filter(pk=session.pk).update(last_active_at=timezone.now() - LONG_AGO)
    session.refresh_from_db()
    return session


def url(name: str, session: Session) -> str:
    return reverse(f"sessions:{name}", args=[session.pk])


def snapshot(session: Session) -> tuple[Any, ...]:
    """What any of the three buttons could change."""
    fresh = Session.objects.get(pk=session.pk)
    return fresh.state, fresh.expires_at, fresh.extensions_used, fresh.last_active_at, fresh.end_reason


def last_message(response: HttpResponse) -> str:
    """The message the view just added (earlier unread ones pile up before it without a page view)."""
    queued = [str(message) for message in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]
    return queued[-1] if queued else ""


def csrf_client(user: Any, session: Session) -> tuple[Client, str]:
    """A client that enforces CSRF like a browser, signed in, with the token from the session page."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(session.get_absolute_url()).status_code == 200  # sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


# ---- Stop --------------------------------------------------------------------------------


def test_the_owner_stops_the_session(owner_client, running, django_capture_on_commit_callbacks) -> None:
    env_id = running.runner_state["env_id"]
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(url("stop", running))
    assert response.status_code == 302 and response.url == running.get_absolute_url()
    assert last_message(response) == ""  # the page shows the state; a banner would go stale
    running.refresh_from_db()
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.LEARNER)
    assert running.ended_at is not None
    assert env_id not in fake.ENVIRONMENTS  # the teardown job removed the environment


def test_stopping_queues_the_teardown_and_the_page_shows_stopping(owner_client, running) -> None:
    # Without running the on-commit job, the view's own effect: the stop is recorded at once.
    response = owner_client.post(url("stop", running), follow=True)
    running.refresh_from_db()
    assert running.state == State.STOPPING
    assert 'data-state="stopping"' in response.content.decode()


def test_staff_stopping_a_learners_session_is_recorded_as_staff(
    client, staff_user, running, django_capture_on_commit_callbacks
) -> None:
    client.force_login(staff_user)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url("stop", running)).status_code == 302
    running.refresh_from_db()
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.STAFF)


def test_stopping_an_ended_session_again_is_harmless(owner_client, running, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(url("stop", running))
    before = snapshot(running)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert owner_client.post(url("stop", running)).status_code == 302
    assert callbacks == []  # no second teardown queued
    assert snapshot(running) == before


# ---- Extend ------------------------------------------------------------------------------


def test_the_owner_extends_up_to_the_labs_limit_then_is_told_why_not(owner_client, running, lab) -> None:
    deadline = running.expires_at
    assert lab.max_extensions == 2 and lab.extension_minutes == 15
    for used in (1, 2):
        response = owner_client.post(url("extend", running))
        assert response.status_code == 302 and response.url == running.get_absolute_url()
        assert last_message(response) == "Session extended."
        running.refresh_from_db()
        assert running.extensions_used == used
        assert running.expires_at == deadline + timedelta(minutes=15 * used)

    capped = snapshot(running)
    # Followed: the message is shown on the session page the learner lands on.
    response = owner_client.post(url("extend", running), follow=True)
    html = response.content.decode()
    assert "No extensions left: this lab allows 2." in html
    assert snapshot(running) == capped
    # The page no longer offers the button.
    assert url("extend", running) not in html


def test_staff_may_extend_past_the_labs_limit(client, staff_user, running) -> None:
    Session.objects.filter(pk=running.pk).update(extensions_used=running.lab.max_extensions)
    deadline = Session.objects.get(pk=running.pk).expires_at
    client.force_login(staff_user)
    response = client.post(url("extend", running))
    assert last_message(response) == "Session extended."
    running.refresh_from_db()
    assert running.expires_at == deadline + timedelta(minutes=running.lab.extension_minutes)


def test_a_session_that_is_not_running_cannot_be_extended(owner_client, running) -> None:
    Session.objects.filter(pk=running.pk).update(state=State.STOPPING)
    before = snapshot(running)
    response = owner_client.post(url("extend", running))
    assert last_message(response) == "Only a running session can be extended."
    assert snapshot(running) == before


# ---- Heartbeat ("I'm still here") ----------------------------------------------------------


def count_the_page(session: Session) -> None:
    session.lab.idle_signals = [*session.lab.idle_signals, "page"]
    session.lab.save(update_fields=["idle_signals"])


def test_the_owners_heartbeat_resets_the_idle_clock_where_the_lab_counts_the_page(owner_client, running) -> None:
    count_the_page(running)
    before = timezone.now()
    response = owner_client.post(url("heartbeat", running), HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    data = response.json()
    assert data["state"] == "running"
    assert 0 < data["seconds_left"] <= running.lab.ttl_minutes * 60
    running.refresh_from_db()
    assert running.last_active_at >= before
    assert data["last_active"] == running.last_active_at.isoformat()


def test_by_default_a_heartbeat_is_no_activity_and_says_when_the_server_last_saw_some(owner_client, running) -> None:
    assert "page" not in running.lab.idle_signals  # a tab left open keeps nothing alive
    response = owner_client.post(url("heartbeat", running), HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert Session.objects.get(pk=running.pk).last_active_at == running.last_active_at
    # The page's countdown follows the server's clock, so it warns of the coming idle stop.
    assert response.json()["last_active"] == running.last_active_at.isoformat()


def test_answering_the_idle_warning_counts_whatever_the_labs_signals(owner_client, running) -> None:
    running.lab.idle_signals = ["cpu"]
    running.lab.save(update_fields=["idle_signals"])
    before = timezone.now()
    response = owner_client.post(url("heartbeat", running), {"answer": "1"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    moved = Session.objects.get(pk=running.pk).last_active_at
    assert moved >= before and response.json()["last_active"] == moved.isoformat()


def test_heartbeats_are_throttled(owner_client, running, settings) -> None:
    settings.LAB_ACTIVITY_WRITE_SECONDS = 60
    count_the_page(running)
    owner_client.post(url("heartbeat", running))
    first = Session.objects.get(pk=running.pk).last_active_at
    assert first > running.last_active_at
    assert owner_client.post(url("heartbeat", running)).status_code == 200
    assert Session.objects.get(pk=running.pk).last_active_at == first  # no write within the minute


def test_a_staff_viewer_does_not_keep_a_learners_session_alive(client, staff_user, running) -> None:
    count_the_page(running)
    before = snapshot(running)
    client.force_login(staff_user)
    assert client.post(url("heartbeat", running), {"answer": "1"}).status_code == 200
    response = client.post(url("heartbeat", running))
    assert response.status_code == 200 and response.json()["state"] == "running"
    assert snapshot(running) == before


def test_a_heartbeat_on_an_ended_session_changes_nothing(owner_client, running) -> None:
    Session.objects.filter(pk=running.pk).update(state=State.STOPPED, ended_at=timezone.now())
    before = snapshot(running)
    response = owner_client.post(url("heartbeat", running), {"answer": "1"})
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert snapshot(running) == before


# ---- who and how: outsiders, wrong methods, CSRF ---------------------------------------------

ACTIONS = ["stop", "extend", "heartbeat"]


@pytest.mark.parametrize("action", ACTIONS)
def test_another_learner_gets_404_and_nothing_changes(
    client, other_learner, running, action, django_capture_on_commit_callbacks
) -> None:
    before = snapshot(running)
    client.force_login(other_learner)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(url(action, running))
    assert response.status_code == 404
    assert callbacks == []
    assert snapshot(running) == before
    assert running.runner_state["env_id"] in fake.ENVIRONMENTS


@pytest.mark.parametrize("action", ACTIONS)
def test_anonymous_is_sent_to_sign_in_and_nothing_changes(client, running, action) -> None:
    before = snapshot(running)
    response = client.post(url(action, running))
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login") + "?next=")
    assert snapshot(running) == before


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_accepted(owner_client, running, action, method) -> None:
    before = snapshot(running)
    response = getattr(owner_client, method)(url(action, running))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert snapshot(running) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_a_post_without_the_csrf_token_is_refused(owner, running, action) -> None:
    client, _token = csrf_client(owner, running)
    before = snapshot(running)
    assert client.post(url(action, running)).status_code == 403
    assert client.post(url(action, running), HTTP_X_CSRFTOKEN="not-the-token").status_code == 403
    assert snapshot(running) == before


def test_with_the_csrf_token_each_action_goes_through(owner, running, django_capture_on_commit_callbacks) -> None:
    client, token = csrf_client(owner, running)
    # The heartbeat sends the token in a header (session.js), the forms in a field.
    assert client.post(url("heartbeat", running), {"answer": "1"}, HTTP_X_CSRFTOKEN=token).status_code == 200
    assert Session.objects.get(pk=running.pk).last_active_at > running.last_active_at
    assert client.post(url("extend", running), {"csrfmiddlewaretoken": token}).status_code == 302
    assert Session.objects.get(pk=running.pk).extensions_used == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url("stop", running), {"csrfmiddlewaretoken": token}).status_code == 302
    assert Session.objects.get(pk=running.pk).state == State.STOPPED
