"""With the job queue gone (Redis killed), the API answers 503 with Retry-After and changes nothing.

The queue is a redis-server of the test's own, killed before the request (tests/redis_server.py).
"""

from __future__ import annotations

import pytest

from jobqueue.queueing import QUEUE_UNAVAILABLE
from judge.models import Attempt
from judge.tests import judge_fixtures
from sessions_app.models import Session, State

pytestmark = pytest.mark.django_db

checked_lab = judge_fixtures.checked_lab


@pytest.fixture
def session(owner, checked_lab) -> Session:
    return Session.objects.create(user=owner, lab=checked_lab, runner_name="fake", state=State.RUNNING)


def unavailable(response) -> None:
    assert response.status_code == 503
    assert response.json() == {"detail": QUEUE_UNAVAILABLE}
    assert response["Retry-After"] == "60"


def test_start_is_503_and_starts_nothing(queue_down, owner_api, lab):
    unavailable(owner_api.post("/sessions", {"lab": lab.slug}))
    assert not Session.objects.exists()


def test_stop_is_503_and_the_session_keeps_running(queue_down, owner_api, session):
    unavailable(owner_api.post(f"/sessions/{session.pk}/stop"))
    session.refresh_from_db()
    assert (session.state, session.end_reason) == (State.RUNNING, "")


def test_staff_stop_is_503_too(queue_down, staff_api, session):
    unavailable(staff_api.post(f"/staff/sessions/{session.pk}/stop"))
    session.refresh_from_db()
    assert session.state == State.RUNNING


def test_a_check_is_503_and_queues_nothing(queue_down, owner_api, session):
    unavailable(owner_api.post(f"/sessions/{session.pk}/checks", {"step": 1}))
    assert not Attempt.objects.exists()
