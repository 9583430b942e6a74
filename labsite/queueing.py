"""Enqueue jobs after the surrounding transaction commits.

With REDIS_URL set, jobs go to Redis for `manage.py rqworker` (or run inline on that Redis with
LAB_RQ_ASYNC=false, as the tests do). Without Redis (the embedded install), jobs run in a small
pool of background threads in the process that queued them: the page that started a session
or a check returns at once and shows progress, and no Redis server is needed. Set
LAB_EMBEDDED_JOBS=inline to run them inside the request instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import django_rq
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from rq import Queue
from rq.exceptions import DuplicateJobError

log = logging.getLogger(__name__)

EMBEDDED_WORKERS = 4
# Keyword arguments that Queue.enqueue keeps for itself; the embedded pool must not pass them on.
RQ_JOB_OPTIONS = frozenset({
    "job_timeout", "result_ttl", "ttl", "failure_ttl", "description", "depends_on", "at_front", "meta",
    "retry", "on_success", "on_failure", "on_stopped", "group_id",
})

_embedded_lock = threading.Lock()
_embedded_connection: Any = None
_executor: ThreadPoolExecutor | None = None
_running_ids: set[str] = set()


def _embedded_redis() -> Any:
    global _embedded_connection
    with _embedded_lock:
        if _embedded_connection is None:
            import fakeredis

            _embedded_connection = fakeredis.FakeRedis()
        return _embedded_connection


def get_queue(name: str = "default") -> Queue:
    if settings.REDIS_URL:
        return django_rq.get_queue(name)
    return django_rq.get_queue(name, is_async=False, connection=_embedded_redis())


def _embedded_executor() -> ThreadPoolExecutor:
    global _executor
    with _embedded_lock:
        if _executor is None:
            # Non-daemon threads: a one-shot management command waits for its jobs before exiting.
            _executor = ThreadPoolExecutor(max_workers=EMBEDDED_WORKERS, thread_name_prefix="labs-job")
        return _executor


def run_in_background(func: Callable[..., Any], *args: Any, job_id: str | None = None, **kwargs: Any) -> Future | None:
    """Run a job on the embedded thread pool; a job whose id is still running is not added twice."""
    with _embedded_lock:
        if job_id:
            if job_id in _running_ids:
                return None
            _running_ids.add(job_id)

    def call() -> None:
        close_old_connections()
        try:
            func(*args, **kwargs)
        except Exception:
            log.exception("background job %s failed", job_id or getattr(func, "__name__", func))
        finally:
            connections.close_all()  # each pool thread has its own connection; never leave it open
            if job_id:
                with _embedded_lock:
                    _running_ids.discard(job_id)

    return _embedded_executor().submit(call)


def wait_for_background_jobs() -> None:
    """Block until every job queued so far on the embedded pool has finished (tests, shutdown)."""
    global _executor
    with _embedded_lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True)


def enqueue_now(func: Callable[..., Any], *args: Any, job_id: str | None = None, queue: str = "default",
                **kwargs: Any) -> None:
    """Enqueue immediately; a job with the same id already queued or running is not added twice."""
    if not settings.REDIS_URL and settings.LAB_EMBEDDED_JOBS == "thread":
        job_kwargs = {key: value for key, value in kwargs.items() if key not in RQ_JOB_OPTIONS}
        run_in_background(func, *args, job_id=job_id, **job_kwargs)
        return
    q = get_queue(queue)
    try:
        q.enqueue(func, *args, job_id=job_id, unique=bool(job_id) and q.is_async, **kwargs)
    except DuplicateJobError:
        pass


def enqueue_on_commit(func: Callable[..., Any], *args: Any, job_id: str | None = None,
                      queue: str = "default", **kwargs: Any) -> None:
    """Enqueue once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: enqueue_now(func, *args, job_id=job_id, queue=queue, **kwargs))
