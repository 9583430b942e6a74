"""Job-queue figures from Redis: queued, started and failed jobs per queue; left out, never a 500,
when there is no Redis, and `labs_job_queue_up 0` when the configured one does not answer."""

from __future__ import annotations

import pytest
from rq import Queue, SimpleWorker

from metrics.tests.conftest import scrape

pytestmark = pytest.mark.django_db


def explode() -> None:
    raise RuntimeError("this job fails on purpose")


def test_queued_and_failed_jobs_are_counted_per_queue(queues_on_own_redis):
    connection = queues_on_own_redis.client()
    judge = Queue("judge", connection=connection)
    judge.enqueue(explode)
    SimpleWorker([judge], connection=connection).work(burst=True)  # a real run that fails
    default = Queue("default", connection=connection)
    default.enqueue("metrics.tests.test_job_queue_figures.explode")
    default.enqueue("metrics.tests.test_job_queue_figures.explode")
    judge.enqueue("metrics.tests.test_job_queue_figures.explode")

    result = scrape()
    assert result.value("labs_job_queue_up") == 1
    assert result.series("labs_jobs_queued") == {frozenset({("queue", "default")}): 2,
                                                 frozenset({("queue", "judge")}): 1}
    assert result.series("labs_jobs_failed") == {frozenset({("queue", "default")}): 0,
                                                 frozenset({("queue", "judge")}): 1}
    assert result.series("labs_jobs_started") == {frozenset({("queue", "default")}): 0,
                                                  frozenset({("queue", "judge")}): 0}


def test_without_redis_the_queue_figures_are_left_out(settings, sessions):
    settings.REDIS_URL = ""
    result = scrape()
    assert result.status == 200
    assert not {name for name in result.sample_names() if "job" in name and "judge" not in name}
    assert result.value("labs_sessions", state="running") == 3  # the rest is all there


def test_a_redis_that_does_not_answer_shows_as_down(queue_down, sessions):
    result = scrape()
    assert result.status == 200
    assert result.value("labs_job_queue_up") == 0
    assert "labs_jobs_queued" not in result.sample_names()
    assert result.value("labs_sessions", state="running") == 3
