"""The session lifecycle through the jobs, on the in-memory runner."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runners import fake
from sessions_app import actions
from sessions_app.models import EndReason, Session, State


@pytest.fixture
def start(owner, lab, django_capture_on_commit_callbacks):
    def _start(runner="fake"):
        lab.runner = runner
        lab.save()
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        return session

    return _start


def test_starting_runs_the_session_and_saves_runner_state(start, lab):
    session = start()
    assert session.state == State.RUNNING
    assert session.runner_state["env_id"] in fake.ENVIRONMENTS
    assert session.expires_at - session.started_at == timedelta(minutes=lab.ttl_minutes)
    messages = list(session.events.values_list("message", flat=True))
    assert messages[0].startswith("Queued")
    assert "Creating environment" in messages
    assert messages[-1] == "Ready."


def test_a_retried_provision_never_makes_a_second_environment(start):
    from sessions_app.jobs import provision_session

    session = start()
    provision_session(str(session.pk))
    Session.objects.filter(pk=session.pk).update(state=State.PROVISIONING)
    provision_session(str(session.pk))
    assert len(fake.ENVIRONMENTS) == 1


def test_a_failing_start_fails_the_session_with_the_reason_and_leaves_nothing(start):
    session = start("fake-failing")
    assert session.state == State.FAILED
    assert "told to fail on start" in session.error
    assert session.end_reason == EndReason.ERROR
    assert fake.ENVIRONMENTS == {}


@pytest.fixture
def flaky_runner(settings, monkeypatch):
    """A runner whose first starts fail with a temporary error (an engine restarting)."""
    from runners import reset_cache
    from sessions_app import provisioning

    monkeypatch.setattr(provisioning, "RETRY_DELAY_SECONDS", 0.01)

    def make(fail_times: int) -> str:
        settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "fake-flaky": {
            "BACKEND": "runners.fake.FakeRunner",
            "OPTIONS": {"fail_on": "start", "permanent": False, "fail_times": fail_times}}}
        reset_cache()
        return "fake-flaky"

    return make


def test_a_temporary_start_error_is_retried_and_the_session_runs(start, flaky_runner):
    session = start(flaky_runner(fail_times=1))
    assert session.state == State.RUNNING
    assert session.events.filter(level="warning", message__startswith="Temporary problem").count() == 1
    assert len(fake.ENVIRONMENTS) == 1


def test_a_temporary_error_that_persists_fails_after_the_last_try(start, flaky_runner):
    from sessions_app.provisioning import START_ATTEMPTS

    session = start(flaky_runner(fail_times=99))
    assert session.state == State.FAILED
    assert session.events.filter(message__startswith="Temporary problem").count() == START_ATTEMPTS - 1
    assert fake.ENVIRONMENTS == {}


def test_a_permanent_start_error_is_not_retried(start):
    session = start("fake-failing")
    assert not session.events.filter(message__startswith="Temporary problem").exists()


def test_a_start_past_the_timeout_fails_and_leaves_nothing(start, settings):
    settings.LAB_START_TIMEOUT_SECONDS = 1
    session = start("fake-slow")
    assert session.state == State.FAILED
    assert "not ready after 1 s" in session.error
    assert fake.ENVIRONMENTS == {}


def test_an_unknown_runner_fails_clearly(start):
    session = start("no-such-runner")
    assert session.state == State.FAILED
    assert "No runner named 'no-such-runner'" in session.error


def test_stop_removes_the_environment(start, django_capture_on_commit_callbacks):
    session = start()
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    session.refresh_from_db()
    assert session.state == State.STOPPED
    assert session.end_reason == EndReason.LEARNER
    assert fake.ENVIRONMENTS == {}


def test_stopping_twice_is_harmless(start, django_capture_on_commit_callbacks):
    session = start()
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
        actions.stop_session(session)
    session.refresh_from_db()
    assert session.state == State.STOPPED


def test_extension_pushes_the_deadline_up_to_the_labs_limit(start, lab):
    session = start()
    deadline = session.expires_at
    for _ in range(lab.max_extensions):
        session = actions.extend_session(session)
    assert session.expires_at == deadline + timedelta(minutes=lab.extension_minutes * lab.max_extensions)
    with pytest.raises(actions.SessionActionError, match="No extensions left"):
        actions.extend_session(session)


def test_activity_writes_are_throttled(start, settings):
    settings.LAB_ACTIVITY_WRITE_SECONDS = 60
    session = start()
    Session.objects.filter(pk=session.pk).update(last_active_at=timezone.now() - timedelta(minutes=5))
    assert actions.mark_active(session, "terminal") is True
    assert actions.mark_active(session, "terminal") is False
