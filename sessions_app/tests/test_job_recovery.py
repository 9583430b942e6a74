"""The reaper's recovery pass (sessions_app/job_recovery.py): sessions waiting for a job Redis lost
or failed are repaired on the next pass, and sessions whose job may still be running are left alone.

Jobs go to a redis-server of the test's own and wait there (no worker runs them), so each test
sees what the pass queued.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import JobStatus

from jobqueue.queueing import get_queue, job_statuses
from sessions_app import actions, job_recovery, jobs
from sessions_app.job_recovery import (
    LOST_STOP_AFTER_SECONDS,
    RECOVER_AFTER_SECONDS,
    START_ABANDONED,
    START_LOST,
    STOP_LOST,
)
from sessions_app.models import EndReason, Session, SessionEvent, State
from vms import job_recovery as vm_recovery
from vms import jobs as vm_jobs
from vms.models import Snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def repair(django_capture_on_commit_callbacks):
    """One recovery pass, committed (its jobs are queued on commit)."""

    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return job_recovery.recover(now or timezone.now())

    return run


def quiet_session(owner, lab, state, seconds, message="Queued.") -> Session:
    """A session in `state` whose last news (`message`) is `seconds` old."""
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=state,
                                     end_reason=EndReason.LEARNER if state == State.STOPPING else "")
    then = timezone.now() - timedelta(seconds=seconds)
    Session.objects.filter(pk=session.pk).update(created_at=then)
    SessionEvent.objects.create(session=session, created_at=then, message=message)
    return session


def status(job_id: str) -> str | None:
    return job_statuses([job_id])[job_id]


def failed(func, *args, job_id: str) -> None:
    """A job that ran out of retries (its worker died twice, say): in Redis, with status failed."""
    queue = get_queue("default")
    job = queue.enqueue(func, *args, job_id=job_id)
    queue.remove(job)
    job.set_status(JobStatus.FAILED)


def test_a_requested_start_whose_job_is_missing_is_queued_again_once_quiet(queues_on_own_redis, owner, lab,
                                                                           repair):
    fresh = quiet_session(owner, lab, State.REQUESTED, RECOVER_AFTER_SECONDS - 5)
    lost = quiet_session(owner, lab, State.REQUESTED, RECOVER_AFTER_SECONDS + 1)
    assert repair().requeued == 1
    assert status(f"provision-{lost.pk}") == "queued"
    assert status(f"provision-{fresh.pk}") is None  # its own commit may still be queuing it
    assert lost.events.filter(message=START_LOST).count() == 1


def test_a_provisioning_start_whose_job_record_vanished_is_left_to_the_start_timeout(queues_on_own_redis,
                                                                                      owner, lab, repair):
    """Redis restarted empty: the job may still be running in a worker, so it is not started twice."""
    session = quiet_session(owner, lab, State.PROVISIONING, 60)
    assert repair().requeued == 0
    assert status(f"provision-{session.pk}") is None


def test_a_start_whose_job_failed_is_failed_with_the_reason_and_its_leftovers_removed(queues_on_own_redis,
                                                                                      owner, lab, repair):
    session = quiet_session(owner, lab, State.PROVISIONING, RECOVER_AFTER_SECONDS + 1)
    failed(jobs.provision_session, str(session.pk), job_id=f"provision-{session.pk}")
    assert repair().failed == 1
    session.refresh_from_db()
    assert (session.state, session.error, session.end_reason) == (State.FAILED, START_ABANDONED, EndReason.ERROR)
    assert status(f"remove-{session.pk}") == "queued"


def test_a_stop_whose_teardown_could_not_be_queued_is_queued_on_the_next_pass(queues_on_own_redis, owner, lab,
                                                                             repair):
    session = quiet_session(owner, lab, State.STOPPING, RECOVER_AFTER_SECONDS + 1,
                            message=actions.TEARDOWN_NOT_QUEUED)
    assert repair().requeued == 1  # not 5 minutes later
    assert status(f"teardown-{session.pk}") == "queued"
    assert session.events.filter(message=STOP_LOST).count() == 1


def test_a_quiet_stop_without_a_teardown_job_waits_in_case_one_is_still_running(queues_on_own_redis, owner, lab,
                                                                                repair):
    """A teardown logs nothing until it is done, and Redis may have lost the record of a running one."""
    session = quiet_session(owner, lab, State.STOPPING, LOST_STOP_AFTER_SECONDS - 10)
    assert repair().requeued == 0
    later = timezone.now() + timedelta(seconds=20)
    assert repair(later).requeued == 1
    assert status(f"teardown-{session.pk}") == "queued"


def test_a_snapshot_whose_job_failed_is_failed_and_gives_its_reservation_back(queues_on_own_redis, owner, lab,
                                                                               settings, tmp_path, repair):
    settings.LAB_SNAPSHOT_DIR = tmp_path
    snapshot = Snapshot.objects.create(owner=owner, lab=lab, name="s", status=Snapshot.Status.CREATING,
                                       reserved_bytes=0, path=str(tmp_path / "s.qcow2"))
    Snapshot.objects.filter(pk=snapshot.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    failed(vm_jobs.take_snapshot, str(snapshot.pk), job_id=f"snapshot-{snapshot.pk}")
    assert repair().failed == 1
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.error) == (Snapshot.Status.FAILED, vm_recovery.SNAPSHOT_ABANDONED)


def test_without_redis_nothing_is_looked_up(settings, owner, lab, repair):
    """Embedded jobs live in the memory of the process that queued them: no other process can see them."""
    settings.REDIS_URL = ""
    quiet_session(owner, lab, State.REQUESTED, 60)
    assert repair() == job_recovery.Recovered()
