"""Jobs on the embedded install (no Redis): they run in background threads, never in the request."""

from __future__ import annotations

import threading
import time

import pytest

from jobqueue import queueing
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


# ---- with Redis: a Redis of the test's own (tests/redis_server.py), where jobs wait ----------------


@pytest.mark.django_db
def test_a_job_whose_queue_went_away_before_the_commit_is_logged_and_reported_not_raised(
    queues_on_own_redis, caplog, django_capture_on_commit_callbacks
):
    told: list[str] = []
    with django_capture_on_commit_callbacks(execute=True):
        queueing.require_queue()  # it answered when the verb checked
        queueing.enqueue_on_commit(record, "x", job_id="lost-1", if_unavailable=lambda: told.append("told"))
        queues_on_own_redis.kill()
    assert told == ["told"]
    assert "could not queue lost-1" in caplog.text


def test_require_queue_says_the_queue_is_unavailable_when_redis_does_not_answer(queue_down):
    with pytest.raises(queueing.QueueUnavailable) as refused:
        queueing.require_queue()
    assert str(refused.value) == "The job queue is unavailable; try again in a minute."


def test_require_queue_has_nothing_to_check_without_redis(settings):
    settings.REDIS_URL = ""
    queueing.require_queue()


def test_a_job_still_queued_is_not_queued_twice_but_a_finished_one_is_replaced(queues_on_own_redis):
    queue = queueing.get_queue("default")
    assert queueing.enqueue_now(record, "a", job_id="same") is True
    assert queueing.enqueue_now(record, "b", job_id="same") is False
    assert queue.job_ids == ["same"]
    job = queue.fetch_job("same")
    queue.remove(job)
    job.set_status("finished")  # as a worker leaves it; RQ alone would refuse the id for its result's lifetime
    assert queueing.enqueue_now(record, "c", job_id="same") is True
    assert queue.job_ids == ["same"]
    assert queue.fetch_job("same").args == ("c",)
