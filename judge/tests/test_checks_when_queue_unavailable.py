"""Check and Hint with the job queue gone (Redis killed): the learner is told, and nothing waits
for a job that will never come. The queue is a redis-server of the test's own (tests/redis_server.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobqueue.queueing import QUEUE_UNAVAILABLE
from judge import actions
from judge.models import Attempt, HintRequest
from judge.tests import judge_fixtures
from sessions_app.models import Session, State

pytestmark = pytest.mark.django_db

checked_lab = judge_fixtures.checked_lab
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def session(owner, checked_lab) -> Session:
    return Session.objects.create(user=owner, lab=checked_lab, runner_name="fake", state=State.RUNNING)


def test_check_buttons_say_the_queue_is_unavailable_and_queue_nothing(queue_down, owner_client, session):
    step = session.lab.steps.get(order=1)
    box = owner_client.post(reverse("judge:check_step", args=[session.pk, step.pk]), **HTMX)
    final = owner_client.post(reverse("judge:check_final", args=[session.pk]), follow=True)
    assert box.status_code == final.status_code == 200
    assert QUEUE_UNAVAILABLE in box.content.decode()
    assert QUEUE_UNAVAILABLE in final.content.decode()
    assert not Attempt.objects.exists()


def test_asking_for_a_hint_says_the_queue_is_unavailable_and_stores_nothing(queue_down, owner_client, session):
    panel = owner_client.post(reverse("hints:ask", args=[session.pk]), {"step": "1"}, **HTMX)
    page = owner_client.post(reverse("hints:ask", args=[session.pk]), {"step": "1"}, follow=True)
    assert panel.status_code == page.status_code == 200
    assert QUEUE_UNAVAILABLE in panel.content.decode()
    assert QUEUE_UNAVAILABLE in page.content.decode()
    assert not HintRequest.objects.exists()


def test_a_check_whose_job_could_not_be_queued_ends_at_once_with_the_reason(
    queues_on_own_redis, session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # the commit, in this test's transaction
        attempt = actions.request_check(session, None, session.user)
        queues_on_own_redis.kill()  # after the check, before the commit queues the job
    attempt.refresh_from_db()
    assert (attempt.status, attempt.result) == (Attempt.Status.ERROR, {"error": QUEUE_UNAVAILABLE})
    # Nothing is left looking busy: once the queue is back, the button asks for a new check.
    queues_on_own_redis.start()
    with django_capture_on_commit_callbacks(execute=True):
        again = actions.request_check(session, None, session.user)
    assert again.pk != attempt.pk and again.status == Attempt.Status.QUEUED
