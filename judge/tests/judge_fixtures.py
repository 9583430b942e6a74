"""Fixtures for the judge's workflow tests: a running session on the in-memory runner."""

from __future__ import annotations

import pytest

from judge import actions
from judge.models import Attempt
from labs.models import LabStep
from runners import get_runner
from sessions_app import actions as session_actions
from sessions_app.models import Session, State


@pytest.fixture
def checked_lab(lab):
    """The shared lab with two checked steps, a step without checks, and a final check."""
    first = lab.steps.get()
    first.verify = [{"kind": "file", "path": "hello.txt", "contains": "hello"}]
    first.save()
    LabStep.objects.create(lab=lab, order=2, title="Read", body="Read it.")
    LabStep.objects.create(lab=lab, order=3, title="Answer", body="Answer.",
                           verify=[{"kind": "file", "path": "answer.txt"}])
    lab.judge = [{"kind": "file", "path": "hello.txt"}, {"kind": "command", "run": ["true"]}]
    lab.save()
    return lab


@pytest.fixture
def running(owner, checked_lab, django_capture_on_commit_callbacks) -> Session:
    with django_capture_on_commit_callbacks(execute=True):
        session = session_actions.start_session(owner, checked_lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING
    return session


def put(session: Session, path: str, text: str) -> None:
    get_runner(session.runner_name).write_file(session.runner_state, path, text.encode())


def check(session: Session, step, capture) -> Attempt:
    """Press Check: the attempt is created, and its job runs when the transaction commits."""
    with capture(execute=True):
        attempt = actions.request_check(session, step, session.user)
    attempt.refresh_from_db()
    return attempt
