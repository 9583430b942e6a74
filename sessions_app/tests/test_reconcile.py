"""Reconciliation makes the runners and the database agree, both ways."""

import uuid

import pytest
from django.core.management import call_command

from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reconcile import reconcile
from sessions_app.runners import fake, get_runner
from sessions_app.runners.base import SessionSpec


@pytest.fixture
def running(owner, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    return session


def test_an_environment_no_session_owns_is_removed(running):
    orphan = get_runner("fake").start(
        SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="x", lab_slug="x", image="x")
    )
    report = reconcile()
    assert report.orphans_removed == 1
    assert orphan.state["env_id"] not in fake.ENVIRONMENTS
    assert running.runner_state["env_id"] in fake.ENVIRONMENTS  # the live session's is kept


def test_the_environment_of_an_ended_session_is_removed(running):
    Session.objects.filter(pk=running.pk).update(state=State.STOPPED)
    assert reconcile().orphans_removed == 1
    assert fake.ENVIRONMENTS == {}


def test_a_running_session_whose_environment_vanished_is_marked_failed(running):
    fake.ENVIRONMENTS.clear()  # removed behind the platform's back
    report = reconcile()
    running.refresh_from_db()
    assert report.sessions_failed == 1
    assert (running.state, running.end_reason) == (State.FAILED, EndReason.VANISHED)
    assert "disappeared" in running.error


def test_reconcile_twice_is_harmless(running):
    fake.ENVIRONMENTS.clear()
    reconcile()
    second = reconcile()
    assert (second.orphans_removed, second.sessions_failed) == (0, 0)


def test_the_command_reports_counts(running, capsys):
    call_command("reconcile_runners")
    assert "orphans_removed=0 sessions_failed=0" in capsys.readouterr().out
