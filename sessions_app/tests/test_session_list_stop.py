"""Stopping from "My sessions": a Stop (or Cancel) button on each live session, posting the same
action as the session page's, with its CSRF token; and after stopping, no page says "stopping"
next to "Stopped"."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from sessions_app import actions
from sessions_app.models import EndReason, Session, State

pytestmark = pytest.mark.django_db


def started(user: Any, lab: Any, capture: Any) -> Session:
    with capture(execute=True):
        session = actions.start_session(user, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    return session


def stop_form(page: str, session: Session) -> str:
    """The list's form that posts to this session's stop action ("" if there is none)."""
    action = reverse("sessions:stop", args=[session.pk])
    match = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', page, re.S)
    return match.group(0) if match else ""


def test_each_live_session_has_a_stop_button_and_ended_ones_have_none(owner, owner_client, lab,
                                                                       django_capture_on_commit_callbacks):
    ended = started(owner, lab, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(ended, reason=EndReason.LEARNER)
    running = started(owner, lab, django_capture_on_commit_callbacks)
    queued = Session.objects.create(user=owner, lab=lab, state=State.REQUESTED, runner_name="fake")

    page = owner_client.get(reverse("sessions:list")).content.decode()

    running_form, queued_form = stop_form(page, running), stop_form(page, queued)
    assert "csrfmiddlewaretoken" in running_form and 'name="return_to" value="list"' in running_form
    assert re.search(r'<button type="submit"[^>]*>Stop<span class="visually-hidden"> Hello shell session', running_form)
    assert "data-confirm=" in running_form
    assert re.search(r">Cancel<", queued_form)
    assert stop_form(page, ended) == ""


def test_stop_from_the_list_stops_the_session_and_comes_back_to_the_list(owner, lab,
                                                                          django_capture_on_commit_callbacks):
    running = started(owner, lab, django_capture_on_commit_callbacks)
    client = Client(enforce_csrf_checks=True)  # as a browser: the token comes from the list page itself
    client.force_login(owner)
    page = client.get(reverse("sessions:list")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', stop_form(page, running)).group(1)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("sessions:stop", args=[running.pk]),
                               {"csrfmiddlewaretoken": token, "return_to": "list"})

    assert response.status_code == 302 and response["Location"] == reverse("sessions:list")
    running.refresh_from_db()
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.LEARNER)
    after = client.get(reverse("sessions:list")).content.decode()
    assert stop_form(after, running) == ""
    assert "stopping" not in after.lower()


def test_without_its_token_the_lists_stop_changes_nothing(owner, lab, django_capture_on_commit_callbacks):
    running = started(owner, lab, django_capture_on_commit_callbacks)
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(reverse("sessions:stop", args=[running.pk]), {"return_to": "list"})

    assert response.status_code == 403
    running.refresh_from_db()
    assert running.state == State.RUNNING


def messages_shown(page: str) -> str:
    """The page's message banners (base.html), which stay as they are while the page lives."""
    match = re.search(r'<div class="messages".*?</div>', page, re.S)
    return match.group(0) if match else ""


@pytest.mark.parametrize("return_to", ["", "list"])
def test_after_stopping_no_banner_says_stopping_next_to_stopped(owner, owner_client, lab, return_to,
                                                                django_capture_on_commit_callbacks):
    running = started(owner, lab, django_capture_on_commit_callbacks)
    # The page the stop leads to is drawn before the teardown job has run, as with a worker.
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("sessions:stop", args=[running.pk]), {"return_to": return_to},
                                     follow=True)
        page = response.content.decode()
    running.refresh_from_db()
    assert running.state == State.STOPPED
    # The session page's status region refreshes itself (HTMX); the banners above it do not.
    status = owner_client.get(reverse("sessions:status", args=[running.pk])).content.decode()

    assert 'data-state="stopping"' in page or "Stopping" in page  # what the page showed then
    assert 'data-state="stopped"' in status and "Stopped" in status  # what it shows a moment later
    assert "stopping" not in messages_shown(page).lower(), messages_shown(page)
