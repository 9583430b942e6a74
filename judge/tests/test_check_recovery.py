"""The reaper's recovery pass for checks and hints (judge/job_recovery.py), on a redis-server of the
test's own where jobs wait (no worker runs them)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import JobStatus

from jobqueue.queueing import get_queue, job_statuses
from judge import jobs
from judge.job_recovery import CHECK_INTERRUPTED, recover
from judge.models import Attempt, HintRequest
from sessions_app.job_recovery import RECOVER_AFTER_SECONDS, Recovered
from sessions_app.models import Session, State

pytestmark = pytest.mark.django_db


@pytest.fixture
def repair(django_capture_on_commit_callbacks):
    """One recovery pass, committed (its jobs are queued on commit)."""

    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return recover(now or timezone.now())

    return run


@pytest.fixture
def session(owner, lab) -> Session:
    return Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING)


def attempt_in(session: Session, status: str, seconds_ago: float = RECOVER_AFTER_SECONDS + 1) -> Attempt:
    attempt = Attempt.objects.create(user=session.user, session=session, lab=session.lab, status=status)
    Attempt.objects.filter(pk=attempt.pk).update(created_at=timezone.now() - timedelta(seconds=seconds_ago))
    return attempt


def judge_status(attempt: Attempt) -> str | None:
    job_id = f"judge-attempt-{attempt.pk}"
    return job_statuses([job_id], "judge")[job_id]


def test_a_queued_check_whose_job_is_missing_is_queued_again(queues_on_own_redis, session, repair):
    lost = attempt_in(session, Attempt.Status.QUEUED)
    assert repair().requeued == 1
    assert judge_status(lost) == "queued"


def test_a_check_whose_job_failed_ends_with_an_error_that_says_to_run_it_again(queues_on_own_redis, session,
                                                                                 repair):
    attempt = attempt_in(session, Attempt.Status.RUNNING)
    queue = get_queue("judge")
    job = queue.enqueue(jobs.run_attempt, attempt.pk, job_id=f"judge-attempt-{attempt.pk}")
    queue.remove(job)
    job.set_status(JobStatus.FAILED)  # its worker was killed: RQ's sweep failed it
    assert repair().failed == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.result) == (Attempt.Status.ERROR, {"error": CHECK_INTERRUPTED})


def test_a_running_check_whose_job_record_vanished_is_not_run_twice(queues_on_own_redis, session, repair):
    """Redis restarted empty while it ran: its worker may still be at it, and a check changes things."""
    attempt = attempt_in(session, Attempt.Status.RUNNING)
    assert repair() == Recovered()
    assert judge_status(attempt) is None


def test_a_pending_hint_whose_job_is_missing_is_queued_again(queues_on_own_redis, session, repair):
    hint = HintRequest.objects.create(user=session.user, session=session)
    HintRequest.objects.filter(pk=hint.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    assert repair().requeued == 1
    assert job_statuses([f"hint-{hint.pk}"])[f"hint-{hint.pk}"] == "queued"
