"""Sessions end by the clock: time limit, idle timeout, and deletion after auto_delete_minutes."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from runners import fake
from sessions_app import actions, reaping
from sessions_app.models import EndReason, HousekeepingPass, Session, SessionEvent, State
from sessions_app.reaping import reap
from tests.concurrency import at_once


@pytest.fixture
def running(owner, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING
    return session


def test_an_expired_session_is_stopped_and_removed(running, django_capture_on_commit_callbacks):
    Session.objects.filter(pk=running.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    running.refresh_from_db()
    assert report.expired == 1
    assert (running.state, running.end_reason) == (State.EXPIRED, EndReason.EXPIRED)
    assert fake.ENVIRONMENTS == {}
    assert running.events.filter(message__startswith="Time limit reached").exists()


def test_a_session_within_its_time_is_left_alone(running, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    running.refresh_from_db()
    assert (report.expired, report.idle, running.state) == (0, 0, State.RUNNING)


def test_an_idle_session_is_stopped_after_the_labs_idle_timeout(running, lab, django_capture_on_commit_callbacks):
    idle_for = timedelta(minutes=lab.idle_timeout_minutes, seconds=1)
    Session.objects.filter(pk=running.pk).update(last_active_at=timezone.now() - idle_for)
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    running.refresh_from_db()
    assert report.idle == 1
    assert (running.state, running.end_reason) == (State.EXPIRED, EndReason.IDLE)


def test_a_lab_without_idle_timeout_never_idles_out(running, lab, django_capture_on_commit_callbacks):
    lab.idle_timeout_minutes = 0
    lab.save()
    Session.objects.filter(pk=running.pk).update(last_active_at=timezone.now() - timedelta(days=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert reap().idle == 0


def test_ended_sessions_are_deleted_after_auto_delete_minutes(running, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(running)
    Session.objects.filter(pk=running.pk).update(
        ended_at=timezone.now() - timedelta(minutes=lab.auto_delete_minutes - 1)
    )
    assert reap().deleted == 0
    Session.objects.filter(pk=running.pk).update(
        ended_at=timezone.now() - timedelta(minutes=lab.auto_delete_minutes + 1)
    )
    assert reap().deleted == 1
    assert not Session.objects.filter(pk=running.pk).exists()


def test_the_reaper_handles_more_rows_than_one_batch(owner, lab, monkeypatch, django_capture_on_commit_callbacks):
    from sessions_app import reaping

    monkeypatch.setattr(reaping, "BATCH", 7)
    past = timezone.now() - timedelta(minutes=1)
    Session.objects.bulk_create(
        [Session(user=owner, lab=lab, runner_name="fake", state=State.RUNNING, expires_at=past) for _ in range(30)]
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    assert report.expired == 30
    assert Session.objects.filter(state=State.EXPIRED).count() == 30


def test_a_pass_records_its_duration_and_the_sessions_it_handled(running, owner, lab,
                                                                 django_capture_on_commit_callbacks):
    Session.objects.filter(pk=running.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    gone = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.STOPPED,
                                  ended_at=timezone.now() - timedelta(minutes=lab.auto_delete_minutes + 1))
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    assert (report.expired, report.deleted) == (1, 1)
    assert not Session.objects.filter(pk=gone.pk).exists()
    row = HousekeepingPass.objects.get()
    assert row.kind == HousekeepingPass.Kind.REAP
    assert before <= row.started_at <= timezone.now()
    assert 0 <= row.duration_seconds < 30
    assert (row.sessions_handled, row.orphans_removed) == (2, 0)


def test_a_pass_that_waits_for_the_queue_is_recorded_too(running, queue_down):
    Session.objects.filter(pk=running.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reap().queue_unavailable
    row = HousekeepingPass.objects.get()
    assert (row.kind, row.sessions_handled) == (HousekeepingPass.Kind.REAP, 0)


def test_the_command_prints_what_it_did(running, capsys):
    call_command("reap_sessions")
    assert "expired=0 idle=0 deleted=0" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_two_reapers_at_once_stop_each_session_exactly_once(owner, lab):
    if connection.vendor != "postgresql":
        pytest.fail("this concurrency test must run on PostgreSQL (set DATABASE_URL)")
    past = timezone.now() - timedelta(minutes=1)
    Session.objects.bulk_create(
        [Session(user=owner, lab=lab, runner_name="fake", state=State.RUNNING, expires_at=past) for _ in range(60)]
    )
    reports = at_once(reap)
    assert sum(r.expired for r in reports) == 60
    assert Session.objects.filter(state=State.EXPIRED).count() == 60


# ---- sessions stuck between states ----------------------------------------------------------

def _stuck(owner, lab, state, seconds_ago, **fields):
    """A session left in `state` `seconds_ago` by a worker that died (or a job that was never queued)."""
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=state, **fields)
    then = timezone.now() - timedelta(seconds=seconds_ago)
    Session.objects.filter(pk=session.pk).update(created_at=then)
    SessionEvent.objects.create(session=session, created_at=then, message="Queued.")
    return session


@pytest.fixture
def redis_queue(queues_on_own_redis):
    """The default queue on a Redis of the test's own, where jobs wait (no worker runs them)."""
    from jobqueue.queueing import get_queue

    return get_queue("default")


def _leftover_environment(session):
    """What a start killed before saving its state leaves on the runner."""
    fake.ENVIRONMENTS[f"env-{session.pk}"] = {"session_id": str(session.pk), "runner": "fake", "running": True}


@pytest.fixture
def start_bound(settings):
    settings.LAB_START_TIMEOUT_SECONDS = 120
    return 120 + reaping.START_GRACE_SECONDS


@pytest.mark.parametrize("state", [State.REQUESTED, State.PROVISIONING])
def test_a_start_stuck_past_the_timeout_fails_and_its_environment_is_removed(
    owner, lab, state, start_bound, django_capture_on_commit_callbacks
):
    session = _stuck(owner, lab, state, start_bound + 5)
    _leftover_environment(session)
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    session.refresh_from_db()
    assert report.start_failed == 1
    assert (session.state, session.end_reason) == (State.FAILED, EndReason.ERROR)
    assert session.error == "Your environment did not start within 180 seconds (the start was lost or hung)."
    assert session.ended_at is not None
    assert fake.ENVIRONMENTS == {}
    messages = list(session.events.values_list("message", flat=True))
    assert messages[-2:] == [session.error, "Environment removed."]


def test_a_failed_start_frees_the_quota(owner, lab, start_bound, django_capture_on_commit_callbacks):
    _stuck(owner, lab, State.PROVISIONING, start_bound + 5)
    with pytest.raises(actions.SessionActionError):
        actions.start_session(owner, lab)
    with django_capture_on_commit_callbacks(execute=True):
        reap()
    with django_capture_on_commit_callbacks(execute=True):
        again = actions.start_session(owner, lab)
    again.refresh_from_db()
    assert again.state == State.RUNNING


def test_a_start_within_the_timeout_and_margin_is_left_alone(owner, lab, start_bound,
                                                             django_capture_on_commit_callbacks):
    session = _stuck(owner, lab, State.PROVISIONING, start_bound - 5)
    with django_capture_on_commit_callbacks(execute=True):
        assert reap().start_failed == 0
    session.refresh_from_db()
    assert session.state == State.PROVISIONING


def test_an_old_start_that_still_logs_progress_is_left_alone(owner, lab, start_bound,
                                                             django_capture_on_commit_callbacks):
    session = _stuck(owner, lab, State.PROVISIONING, start_bound + 60)
    session.log("Starting Docker engine")  # a live worker is still moving it along
    with django_capture_on_commit_callbacks(execute=True):
        assert reap().start_failed == 0
    session.refresh_from_db()
    assert session.state == State.PROVISIONING


def test_the_start_timeout_comes_from_the_setting(owner, lab, settings, django_capture_on_commit_callbacks):
    settings.LAB_START_TIMEOUT_SECONDS = 600
    session = _stuck(owner, lab, State.PROVISIONING, 600)  # past the default, within the setting
    with django_capture_on_commit_callbacks(execute=True):
        assert reap().start_failed == 0
    Session.objects.filter(pk=session.pk).update(created_at=timezone.now() - timedelta(hours=1))
    session.events.update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert reap().start_failed == 1


def test_a_provision_job_arriving_after_the_reaper_does_nothing(owner, lab, start_bound,
                                                                django_capture_on_commit_callbacks):
    from sessions_app import provisioning

    session = _stuck(owner, lab, State.REQUESTED, start_bound + 5)
    with django_capture_on_commit_callbacks(execute=True):
        reap()
    provisioning.provision(str(session.pk))  # the lost job turns up late
    session.refresh_from_db()
    assert session.state == State.FAILED
    assert fake.ENVIRONMENTS == {}


def test_a_session_stuck_in_stopping_gets_its_teardown_queued_again(
    owner, lab, django_capture_on_commit_callbacks
):
    session = _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS + 5, end_reason=EndReason.LEARNER,
                     runner_state={"env_id": "env-x"})
    fake.ENVIRONMENTS["env-x"] = {"session_id": str(session.pk), "runner": "fake", "running": True}
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    session.refresh_from_db()
    assert report.teardown_requeued == 1
    assert (session.state, session.end_reason) == (State.STOPPED, EndReason.LEARNER)
    assert fake.ENVIRONMENTS == {}
    assert session.events.filter(message="Still stopping: cleaning up again.").count() == 1


def test_a_lost_teardown_is_retried_at_most_once_per_bound(owner, lab, monkeypatch):
    queued = []  # the queued jobs are lost again: nothing runs them
    monkeypatch.setattr(reaping, "queue_teardown", lambda pk: queued.append(("teardown_session", str(pk))))
    session = _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS + 5)
    assert reap().teardown_requeued == 1
    assert reap().teardown_requeued == 0  # its retry is still young
    later = timezone.now() + timedelta(seconds=reaping.STOPPING_RETRY_SECONDS + 5)
    assert reap(later).teardown_requeued == 1
    assert queued == [("teardown_session", str(session.pk))] * 2
    session.refresh_from_db()
    assert session.state == State.STOPPING


def test_a_recent_stop_is_left_to_its_own_teardown(owner, lab, redis_queue, django_capture_on_commit_callbacks):
    from sessions_app import jobs

    session = _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS - 5)
    waiting = redis_queue.enqueue(jobs.teardown_session, str(session.pk), job_id=f"teardown-{session.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    assert (report.teardown_requeued, report.jobs_requeued) == (0, 0)
    session.refresh_from_db()
    assert session.state == State.STOPPING
    assert redis_queue.job_ids == [waiting.id]


def test_a_retried_teardown_never_runs_beside_one_still_queued(owner, lab, redis_queue):
    """One job id per session: the retry finds the teardown still waiting and adds nothing."""
    from sessions_app import jobs

    session = _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS + 5)
    waiting = redis_queue.enqueue(jobs.teardown_session, str(session.pk), job_id=f"teardown-{session.pk}")
    try:
        assert reaping.requeue_stuck_teardowns(timezone.now()) == 1
        assert redis_queue.job_ids.count(waiting.id) == 1
        session.refresh_from_db()
        assert session.state == State.STOPPING  # nothing ran: the waiting job is the only one
    finally:
        waiting.delete()


def test_a_failed_teardown_is_replaced_by_the_retry(owner, lab, redis_queue, django_capture_on_commit_callbacks):
    """RQ refuses an id whose record still exists (a failed job's stays for a year): the retry replaces it."""
    from sessions_app import jobs

    session = _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS + 5)
    failed = redis_queue.enqueue(jobs.teardown_session, str(session.pk), job_id=f"teardown-{session.pk}")
    redis_queue.remove(failed)
    failed.set_status("failed")
    with django_capture_on_commit_callbacks(execute=True):
        assert reaping.requeue_stuck_teardowns(timezone.now()) == 1
    assert redis_queue.job_ids == [failed.id]
    assert redis_queue.fetch_job(failed.id).get_status() == "queued"


def test_stuck_sessions_are_recovered_across_batches(owner, lab, monkeypatch, start_bound,
                                                     django_capture_on_commit_callbacks):
    monkeypatch.setattr(reaping, "BATCH", 4)
    for _ in range(9):
        _stuck(owner, lab, State.PROVISIONING, start_bound + 5)
    for _ in range(6):
        _stuck(owner, lab, State.STOPPING, reaping.STOPPING_RETRY_SECONDS + 5)
    with django_capture_on_commit_callbacks(execute=True):
        report = reap()
    assert (report.start_failed, report.teardown_requeued) == (9, 6)
    assert Session.objects.filter(state=State.FAILED).count() == 9
    assert Session.objects.filter(state=State.STOPPED).count() == 6


def test_the_command_reports_stuck_sessions(owner, lab, start_bound, capsys):
    _stuck(owner, lab, State.REQUESTED, start_bound + 5)
    call_command("reap_sessions")
    assert "start_failed=1 teardown_requeued=0" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_two_reapers_at_once_fail_each_stuck_start_exactly_once(owner, lab, start_bound):
    if connection.vendor != "postgresql":
        pytest.fail("this concurrency test must run on PostgreSQL (set DATABASE_URL)")
    sessions = [_stuck(owner, lab, State.PROVISIONING, start_bound + 5) for _ in range(40)]
    for session in sessions:
        _leftover_environment(session)
    reports = at_once(reap)
    assert len(reports) == 2
    assert sum(r.start_failed for r in reports) == 40
    assert Session.objects.filter(state=State.FAILED).count() == 40
    assert fake.ENVIRONMENTS == {}
    # Each session was failed once: one failure event each, never two.
    failure = SessionEvent.objects.filter(message__startswith="Your environment did not start")
    assert failure.count() == 40
