"""Jobs on the embedded install (no Redis): they run in background threads, never in the request."""

from __future__ import annotations

import threading
import time

import pytest

from labsite import queueing
from sessions_app.actions import start_session
from sessions_app.models import State


@pytest.fixture
def embedded(settings):
    settings.REDIS_URL = ""
    settings.LAB_EMBEDDED_JOBS = "thread"
    yield
    queueing.wait_for_background_jobs()


@pytest.mark.django_db(transaction=True)
def test_starting_a_session_returns_before_the_environment_is_ready(embedded, owner, lab):
    lab.runner = "fake-slow"  # takes 3 s to start
    lab.save()
    began = time.monotonic()
    session = start_session(owner, lab)
    assert time.monotonic() - began < 2
    session.refresh_from_db()
    assert session.state in (State.REQUESTED, State.PROVISIONING)
    queueing.wait_for_background_jobs()
    session.refresh_from_db()
    assert session.state == State.RUNNING
    assert session.events.filter(message__icontains="ready").exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_id_is_still_running_is_not_run_twice(embedded):
    release = threading.Event()
    calls: list[int] = []

    def job(n: int) -> None:
        calls.append(n)
        release.wait(5)

    assert queueing.run_in_background(job, 1, job_id="same") is not None
    assert queueing.run_in_background(job, 2, job_id="same") is None
    release.set()
    queueing.wait_for_background_jobs()
    assert calls == [1]
    # Once finished, the same id may run again (a retried job).
    assert queueing.run_in_background(job, 3, job_id="same") is not None
    queueing.wait_for_background_jobs()
    assert calls == [1, 3]


@pytest.mark.django_db(transaction=True)
def test_a_failing_job_is_logged_and_the_pool_keeps_working(embedded, caplog):
    def broken() -> None:
        raise RuntimeError("boom")

    done = threading.Event()
    queueing.run_in_background(broken, job_id="broken")
    queueing.run_in_background(done.set)
    queueing.wait_for_background_jobs()
    assert done.is_set()
    assert "background job broken failed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_rq_job_options_are_not_passed_to_the_job_on_the_embedded_pool(embedded):
    seen: list[tuple] = []
    queueing.enqueue_now(lambda *args, **kwargs: seen.append((args, kwargs)), 7, job_id="opts", job_timeout=600,
                         queue="judge", colour="blue")
    queueing.wait_for_background_jobs()
    assert seen == [((7,), {"colour": "blue"})]


RECORDED: list[str] = []


def record(value: str) -> None:
    RECORDED.append(value)


def test_inline_mode_runs_the_job_inside_the_call(settings):
    settings.REDIS_URL = ""
    settings.LAB_EMBEDDED_JOBS = "inline"
    RECORDED.clear()
    queueing.enqueue_now(record, "now")
    assert RECORDED == ["now"]
