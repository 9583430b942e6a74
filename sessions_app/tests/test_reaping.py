"""Sessions end by the clock: time limit, idle timeout, and deletion after auto_delete_minutes."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reaping import reap
from sessions_app.runners import fake


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
    reports = []
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            reports.append(reap())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.expired for r in reports) == 60
    assert Session.objects.filter(state=State.EXPIRED).count() == 60
