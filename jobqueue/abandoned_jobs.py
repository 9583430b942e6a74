"""Jobs whose worker died: found in RQ's started-job registries by their stale heartbeats.

A worker renews the heartbeat of the job it runs every few seconds (jobqueue/worker.py); a
worker killed mid-job (SIGKILL, out of memory, a host that went down) stops doing so, and its
job's entry in the started-job registry expires ABANDONED_AFTER_SECONDS later. RQ itself looks
there only every ten minutes; the reaper calls `sweep_abandoned_jobs` on every pass, so RQ runs
such a job again if it was queued with a retry (jobqueue.queueing.retry_once) and fails it
otherwise, for the recovery passes to settle the rows that waited for it.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rq.registry import StartedJobRegistry

from jobqueue.queueing import get_queue, job_statuses, redis_errors, uses_redis
from jobqueue.worker import ABANDONED_AFTER_SECONDS, JOB_MONITORING_SECONDS

log = logging.getLogger(__name__)

# A Redis that has just restarted holds the heartbeats of before the outage, all stale: the
# workers that are still alive get this long to renew theirs before any job counts as abandoned.
RESTART_GRACE_SECONDS = ABANDONED_AFTER_SECONDS + JOB_MONITORING_SECONDS + 10


def sweep_abandoned_jobs() -> list[str]:
    """Retry or fail the jobs whose worker stopped renewing their heartbeat; return their ids.

    QueueUnavailable if Redis does not answer. Nothing to do without workers (embedded or inline jobs).
    """
    if not uses_redis() or not settings.RQ_ASYNC:
        return []
    found: list[str] = []
    for name in settings.RQ_QUEUES:
        queue = get_queue(name)
        with redis_errors():
            uptime = int(queue.connection.info("server")["uptime_in_seconds"])
            if uptime < RESTART_GRACE_SECONDS:
                log.info("Redis restarted %s s ago: leaving the workers time to renew their heartbeats", uptime)
                return found
            registry = StartedJobRegistry(queue=queue)
            expired = registry.get_expired_job_ids()
            if not expired:
                continue
            running = [job_id for job_id, status in job_statuses(expired, name).items() if status == "started"]
            registry.cleanup()  # RQ's own handling: retry if the job has retries left, else fail it
            after = job_statuses(running, name)
        for job_id in running:
            outcome = "queued again" if after[job_id] == "queued" else after[job_id] or "gone"
            log.warning("job %s on %s lost its worker (no heartbeat for %s s): %s",
                        job_id, name, ABANDONED_AFTER_SECONDS, outcome)
        found.extend(running)
    return found
