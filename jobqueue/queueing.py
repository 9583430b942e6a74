"""Enqueue jobs after the surrounding transaction commits.

With REDIS_URL set, jobs go to Redis for `manage.py run_worker` (jobqueue/worker.py), or run
inline on that Redis with LAB_RQ_ASYNC=false, as the tests do. Without Redis (the embedded install), jobs run in a small
pool of background threads in the process that queued them: the page that started a session
or a check returns at once and shows progress, and no Redis server is needed. Set
LAB_EMBEDDED_JOBS=inline to run them inside the request instead.

When Redis does not answer, verbs that queue a job call `require_queue` before they change
anything and refuse with QUEUE_UNAVAILABLE. If Redis goes away between that check and the
commit, the committed row keeps waiting for its job: `enqueue_on_commit` logs the failure
instead of raising, and the reaper's recovery pass (sessions_app/job_recovery.py,
judge/job_recovery.py) queues the job again once Redis answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast

import django_rq
import redis
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils.module_loading import import_string
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

log = logging.getLogger(__name__)

# A job is named by its dotted path where the caller may not import it (a lower app queueing a
# higher one's job); RQ stores and resolves such names itself.
JobFunction = Callable[..., Any] | str

EMBEDDED_WORKERS = 4
# Keyword arguments that Queue.enqueue keeps for itself; the embedded pool must not pass them on.
RQ_JOB_OPTIONS = frozenset({
    "job_timeout", "result_ttl", "ttl", "failure_ttl", "description", "depends_on", "at_front", "meta",
    "retry", "on_success", "on_failure", "on_stopped", "group_id",
})

QUEUE_UNAVAILABLE = "The job queue is unavailable; try again in a minute."
# What redis-py raises when the server is down, restarting (BusyLoadingError is a ConnectionError)
# or unreachable.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
PING_TIMEOUT_SECONDS = 2.0
# Runs that are over: a job id whose record is in one of these may be queued again.
FINISHED_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})


def retry_once() -> Retry:
    """For idempotent jobs: a run whose worker died (or that crashed) is run once more."""
    return Retry(max=1)


class QueueUnavailable(Exception):
    """Redis did not answer; the message is for the user, `detail` for the log."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(QUEUE_UNAVAILABLE)
        self.detail = detail


@contextmanager
def redis_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_DOWN as exc:
        raise QueueUnavailable(str(exc) or type(exc).__name__) from exc


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
        # Enqueue when asked: enqueue_on_commit already waits for the commit, and a failure must
        # surface here, not in a callback of django-rq's after the commit.
        return django_rq.get_queue(name, commit_mode="auto")
    return django_rq.get_queue(name, is_async=False, connection=_embedded_redis())


def _embedded_executor() -> ThreadPoolExecutor:
    global _executor
    with _embedded_lock:
        if _executor is None:
            # Non-daemon threads: a one-shot management command waits for its jobs before exiting.
            _executor = ThreadPoolExecutor(max_workers=EMBEDDED_WORKERS, thread_name_prefix="labs-job")
        return _executor


def run_in_background(func: JobFunction, *args: Any, job_id: str | None = None, **kwargs: Any) -> Future | None:
    """Run a job on the embedded thread pool; a job whose id is still running is not added twice."""
    target: Callable[..., Any] = import_string(func) if isinstance(func, str) else func
    with _embedded_lock:
        if job_id:
            if job_id in _running_ids:
                return None
            _running_ids.add(job_id)

    def call() -> None:
        close_old_connections()
        try:
            target(*args, **kwargs)
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


def uses_redis() -> bool:
    """Whether jobs go through Redis (False on the embedded install)."""
    return bool(settings.REDIS_URL)


def require_queue(name: str = "default") -> None:
    """Raise QueueUnavailable unless the queue's Redis answers a PING within a couple of seconds.

    Verbs call this before they change anything, so a learner whose action cannot be queued is
    told so and nothing is left half done. Without Redis (embedded jobs) there is nothing to check.
    """
    if not uses_redis():
        return
    client = redis.Redis.from_url(
        settings.RQ_QUEUES[name]["URL"],
        socket_connect_timeout=PING_TIMEOUT_SECONDS, socket_timeout=PING_TIMEOUT_SECONDS,
    )
    try:
        with redis_errors():
            client.ping()
    finally:
        client.close()


def enqueue_now(func: JobFunction, *args: Any, job_id: str | None = None, queue: str = "default",
                **kwargs: Any) -> bool:
    """Enqueue immediately unless a job with the same id is queued or running; return whether it
    was queued. A finished or failed run of that id is replaced (RQ would refuse the id while its
    record lasts, and a failed record lasts a year). QueueUnavailable if Redis does not answer."""
    if not uses_redis() and settings.LAB_EMBEDDED_JOBS == "thread":
        job_kwargs = {key: value for key, value in kwargs.items() if key not in RQ_JOB_OPTIONS}
        return run_in_background(func, *args, job_id=job_id, **job_kwargs) is not None
    q = get_queue(queue)
    with redis_errors():
        if job_id and q.is_async and not _forget_finished_run(q, job_id):
            return False
        try:
            # rq's TypeVar takes a callable or a dotted name, not their union.
            q.enqueue(cast(Any, func), *args, job_id=job_id, unique=bool(job_id) and q.is_async, **kwargs)
        except DuplicateJobError:
            return False  # queued by someone else meanwhile
    return True


def _forget_finished_run(q: Queue, job_id: str) -> bool:
    """Delete the record of a run of `job_id` that is over; False if one is still queued or running."""
    try:
        job = Job.fetch(job_id, connection=q.connection, serializer=q.serializer)
    except NoSuchJobError:
        return True
    if job.get_status(refresh=False) not in FINISHED_STATUSES:
        return False
    job.delete()
    return True


def enqueue_on_commit(func: JobFunction, *args: Any, job_id: str | None = None, queue: str = "default",
                      if_unavailable: Callable[[], object] | None = None, **kwargs: Any) -> None:
    """Enqueue once the current transaction commits (at once outside a transaction).

    The row that asked for the job is committed by then, so a queue that went away since
    `require_queue` cannot undo it: the failure is logged, `if_unavailable` runs (to tell the
    user), and the reaper's recovery pass queues the job again once Redis answers.
    """

    def send() -> None:
        try:
            enqueue_now(func, *args, job_id=job_id, queue=queue, **kwargs)
        except QueueUnavailable as exc:
            log.warning("could not queue %s (%s); the reaper queues it again once Redis answers",
                        job_id or getattr(func, "__name__", func), exc.detail)
            if if_unavailable is not None:
                if_unavailable()

    transaction.on_commit(send)


def job_statuses(job_ids: Sequence[str], queue: str = "default") -> dict[str, str | None]:
    """RQ's status of each job id (None: Redis holds no record of it), in one round trip."""
    q = get_queue(queue)
    with redis_errors():
        jobs = Job.fetch_many(job_ids, connection=q.connection, serializer=q.serializer)
    return {job_id: (None if job is None else JobStatus(job.get_status(refresh=False)).value)
            for job_id, job in zip(job_ids, jobs, strict=True)}


def queue_figures(stuck_after_seconds: float) -> dict[str, Any]:
    """What an uptime checker needs to see a stuck queue: workers alive (RQ drops a worker's key
    when its heartbeat lapses), jobs waiting per queue, how long the oldest has waited, and whether
    the queue is stuck (jobs waiting and no worker, or the oldest older than `stuck_after_seconds`).
    Raises redis-py's errors when Redis does not answer; only for REDIS_URL installs."""
    from datetime import UTC, datetime

    from rq import Worker

    connection = django_rq.get_connection("default")
    workers = Worker.count(connection=connection)
    queued: dict[str, int] = {}
    oldest: float | None = None
    now = datetime.now(UTC)
    for name in settings.RQ_QUEUES:
        queue = django_rq.get_queue(name)
        queued[name] = queue.count
        head = queue.get_job_ids(0, 1)
        job = queue.fetch_job(head[0]) if head else None
        if job is not None and job.enqueued_at is not None:
            enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
            waited = max(0.0, (now - enqueued).total_seconds())
            oldest = waited if oldest is None else max(oldest, waited)
    waiting = sum(queued.values())
    stuck = waiting > 0 and (workers == 0 or (oldest is not None and oldest > stuck_after_seconds))
    return {"workers": workers, "queued": queued,
            "oldest_queued_seconds": None if oldest is None else round(oldest, 1), "stuck": stuck}
