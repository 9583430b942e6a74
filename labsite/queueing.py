"""Enqueue RQ jobs after the surrounding transaction commits.

With REDIS_URL set, jobs go to Redis for `manage.py rqworker`. Without it, the queue is
django-rq's synchronous mode (`ASYNC: False`) on an in-process fakeredis, so jobs run
inline and the embedded install needs no Redis server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction
from rq import Queue
from rq.exceptions import DuplicateJobError

_embedded_lock = threading.Lock()
_embedded_connection: Any = None


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


def enqueue_now(func: Callable[..., Any], *args: Any, job_id: str | None = None, queue: str = "default",
                **kwargs: Any) -> None:
    """Enqueue immediately; a job with the same id already queued or running is not added twice."""
    q = get_queue(queue)
    try:
        q.enqueue(func, *args, job_id=job_id, unique=bool(job_id) and q.is_async, **kwargs)
    except DuplicateJobError:
        pass


def enqueue_on_commit(func: Callable[..., Any], *args: Any, job_id: str | None = None,
                      queue: str = "default", **kwargs: Any) -> None:
    """Enqueue once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: enqueue_now(func, *args, job_id=job_id, queue=queue, **kwargs))
