"""Idleness measured inside the session, on the real engine: a session whose learner runs a CPU-bound
loop (a build, a test run) with no browser open outlives its idle timeout, because the watchdog's pass
marks it active; an idle one is stopped although its page keeps sending heartbeats; and the lab's
choice of signals is honoured (CPU not counted: the busy one is stopped too).

The idle timeout counts in minutes, so rather than wait, each test sets last_active_at back past the
timeout ("the learner left long ago") and then lets the real parts act: the watchdog samples the
container through the Docker runner, and only its pass can move last_active_at forward again before
the reaper's pass decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runners import get_runner
from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reaping import reap
from sessions_app.tests.test_docker_sessions import docker_runners, make_lab, start  # noqa: F401 (fixtures)
from watchdog.models import SessionSample
from watchdog.watching import Watchdog

pytestmark = pytest.mark.docker

IDLE_MINUTES = 1
LEFT_LONG_AGO = timedelta(minutes=IDLE_MINUTES, seconds=30)  # past the idle timeout
BUSY_LOOP = "sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"


@pytest.fixture
def session_of(start) -> Callable[..., Session]:  # noqa: F811
    def _session(**lab_fields: object) -> Session:
        session = start(make_lab("labs/busybox:latest", idle_timeout_minutes=IDLE_MINUTES, **lab_fields))
        assert session.state == State.RUNNING, session.error
        return session

    return _session


def keep_busy(session: Session) -> None:
    """The learner starts a CPU-bound loop in the session (as themselves, the runner's default)."""
    result = get_runner("docker").exec(session.runner_state, ["sh", "-c", BUSY_LOOP])
    assert result.ok, result.stderr


def left_long_ago(session: Session):  # type: ignore[no-untyped-def]
    then = timezone.now() - LEFT_LONG_AGO
    Session.objects.filter(pk=session.pk).update(last_active_at=then)
    actions.forget_activity_marks()
    return then


def sampled_cpu(watchdog: Watchdog, session: Session, done: Callable[[float], bool], timeout: float = 60) -> float:
    """Run watchdog passes until the session's sampled CPU (percent of one CPU) satisfies `done`."""
    deadline = time.monotonic() + timeout
    while True:
        watchdog.run_once()
        cpu = SessionSample.objects.get(session=session).cpu_percent
        if done(cpu):
            return cpu
        assert time.monotonic() < deadline, f"the watchdog never saw it (CPU {cpu}%)"
        time.sleep(0.5)


def reaped(session: Session, django_capture_on_commit_callbacks) -> bool:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        reap()
    session.refresh_from_db()
    return session.state != State.RUNNING


def test_a_session_working_with_no_browser_open_outlives_its_idle_timeout(
        engine, docker_runners, session_of, make_watchdog, django_capture_on_commit_callbacks):  # noqa: F811
    session = session_of()
    keep_busy(session)
    watchdog = make_watchdog()
    for _ in range(2):  # twice "long ago": the loop keeps it alive pass after pass, not once
        then = left_long_ago(session)
        sampled_cpu(watchdog, session, lambda cpu: cpu >= 10)
        session.refresh_from_db()
        assert session.last_active_at > then + LEFT_LONG_AGO - timedelta(minutes=1)  # the pass moved it to now
        assert not reaped(session, django_capture_on_commit_callbacks)
    assert session.state == State.RUNNING


def test_an_idle_session_is_stopped_though_its_page_keeps_sending_heartbeats(
        engine, docker_runners, session_of, make_watchdog, client, owner,  # noqa: F811
        django_capture_on_commit_callbacks):
    session = session_of()
    then = left_long_ago(session)
    client.force_login(owner)
    heartbeat = client.post(reverse("sessions:heartbeat", args=[session.pk]))
    assert heartbeat.status_code == 200 and heartbeat.json()["state"] == "running"
    watchdog = make_watchdog()
    watchdog.run_once()
    sample = SessionSample.objects.get(session=session)
    assert sample.cpu_percent < 10, sample.cpu_percent  # sampled, and nothing is working
    session.refresh_from_db()
    assert session.last_active_at == then
    assert reaped(session, django_capture_on_commit_callbacks)
    assert session.end_reason == EndReason.IDLE
    assert session.events.filter(message=f"No activity for {IDLE_MINUTES} minutes: stopping.").exists()


def test_with_the_page_counted_the_heartbeat_keeps_an_idle_session(
        engine, docker_runners, session_of, client, owner, django_capture_on_commit_callbacks):  # noqa: F811
    session = session_of(idle_signals=["terminal", "page"])
    left_long_ago(session)
    client.force_login(owner)
    assert client.post(reverse("sessions:heartbeat", args=[session.pk])).status_code == 200
    assert not reaped(session, django_capture_on_commit_callbacks)


def test_where_cpu_work_does_not_count_a_busy_session_is_stopped(
        engine, docker_runners, session_of, make_watchdog, django_capture_on_commit_callbacks):  # noqa: F811
    session = session_of(idle_signals=["terminal", "editor", "preview"])
    keep_busy(session)
    then = left_long_ago(session)
    sampled_cpu(make_watchdog(), session, lambda cpu: cpu >= 10)  # the work was seen...
    session.refresh_from_db()
    assert session.last_active_at == then  # ...and counted for nothing
    assert reaped(session, django_capture_on_commit_callbacks)
    assert session.end_reason == EndReason.IDLE


def test_work_under_the_labs_threshold_does_not_count(
        engine, docker_runners, session_of, make_watchdog, django_capture_on_commit_callbacks):  # noqa: F811
    session = session_of(idle_cpu_percent=60, cpu=2)  # a loop busies one CPU: 50% of this lab's two
    keep_busy(session)
    then = left_long_ago(session)
    cpu = sampled_cpu(make_watchdog(), session, lambda cpu: cpu >= 10)
    assert cpu <= 100 * 1.1  # one CPU's worth at most (some jitter in the engine's figures)
    session.refresh_from_db()
    assert session.last_active_at == then
    assert reaped(session, django_capture_on_commit_callbacks)
