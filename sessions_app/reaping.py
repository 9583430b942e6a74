"""Ending sessions by the clock: time limit, idle timeout, deleting old ended sessions, and
recovering rows stuck between states (a worker killed mid-job, or a job lost because Redis was
down when it was queued).

Each pass first lets RQ retry or fail the jobs whose worker died (jobqueue/abandoned_jobs.py),
then repairs the rows waiting for a job Redis lost or failed (sessions_app/job_recovery.py,
judge/job_recovery.py) at once; the bounds below are the slower backstops. Rows are claimed in
small batches with row locks that skip rows another reaper holds (sessions_app/row_claims.py),
so two reapers can run at once and thousands of rows never sit in memory together. A completed
pass writes a HousekeepingPass row (its duration and the sessions it handled) for /metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.records import record_many
from jobqueue.abandoned_jobs import sweep_abandoned_jobs
from jobqueue.queueing import QueueUnavailable, require_queue
from labs.models import Lab
from sessions_app import admission, job_recovery
from sessions_app.job_requests import queue_removal, queue_teardown
from sessions_app.models import (
    ENDED_STATES,
    EndReason,
    HousekeepingPass,
    Session,
    SessionEvent,
    SessionQuerySet,
    State,
)
from sessions_app.row_claims import claim_in_batches, quiet_since

log = logging.getLogger(__name__)

BATCH = 200
# Added to LAB_START_TIMEOUT_SECONDS before a start counts as abandoned: a live worker gives up
# at the timeout itself and fails the session; the margin covers queueing and the job's own steps.
START_GRACE_SECONDS = 60
# A teardown takes seconds; one with no news for this long failed or was lost and is queued again.
STOPPING_RETRY_SECONDS = 300


@dataclass
class ReapReport:
    expired: int = 0
    idle: int = 0
    deleted: int = 0
    start_failed: int = 0
    teardown_requeued: int = 0
    abandoned_jobs: int = 0  # jobs whose worker died, retried or failed by RQ
    jobs_requeued: int = 0  # jobs Redis lost, queued again
    jobs_failed: int = 0  # sessions, checks and snapshots failed because their job failed
    queue_unavailable: bool = False  # Redis did not answer: what needs it waits for the next pass

    @property
    def sessions_handled(self) -> int:
        """Sessions this pass stopped, deleted, failed or whose teardown it queued again."""
        return self.expired + self.idle + self.deleted + self.start_failed + self.teardown_requeued

    def summary(self) -> str:
        return (
            f"expired={self.expired} idle={self.idle} deleted={self.deleted} start_failed={self.start_failed} "
            f"teardown_requeued={self.teardown_requeued} abandoned_jobs={self.abandoned_jobs} "
            f"jobs_requeued={self.jobs_requeued} jobs_failed={self.jobs_failed}"
            + (" queue=unavailable" if self.queue_unavailable else "")
        )


def _stop_in_batches(queryset: SessionQuerySet, reason: str, message: str) -> int:
    stopped = 0
    while True:
        with transaction.atomic():
            ids = list(
                queryset.filter(state=State.RUNNING)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:BATCH]
            )
            if not ids:
                return stopped
            moved = Session.objects.filter(pk__in=ids).transition_all(
                State.RUNNING, State.STOPPING, end_reason=reason
            )
            stopped += moved
            SessionEvent.objects.bulk_create(
                [SessionEvent(session_id=pk, message=message, level=SessionEvent.Level.WARNING) for pk in ids]
            )
            record_many("session.stop", Session.objects.filter(pk__in=ids).select_related("lab", "user"),
                        extra={"reason": str(reason)})
            for pk in ids:
                queue_teardown(pk)


def stop_expired(now: datetime) -> int:
    return _stop_in_batches(
        Session.objects.filter(expires_at__lte=now), EndReason.EXPIRED, "Time limit reached: stopping."
    )


def stop_idle(now: datetime) -> int:
    total = 0
    for lab_id, minutes in Lab.objects.filter(idle_timeout_minutes__gt=0).values_list("pk", "idle_timeout_minutes"):
        idle_since = now - timedelta(minutes=minutes)
        total += _stop_in_batches(
            Session.objects.filter(lab_id=lab_id, last_active_at__lte=idle_since),
            EndReason.IDLE,
            f"No activity for {minutes} minutes: stopping.",
        )
    return total


def delete_old(now: datetime) -> int:
    total = 0
    for lab_id, minutes in Lab.objects.values_list("pk", "auto_delete_minutes"):
        cutoff = now - timedelta(minutes=minutes)
        while True:
            with transaction.atomic():
                ids = list(
                    Session.objects.filter(lab_id=lab_id, state__in=ENDED_STATES, ended_at__lte=cutoff)
                    .order_by("pk")
                    .select_for_update(skip_locked=True)
                    .values_list("pk", flat=True)[:BATCH]
                )
                if not ids:
                    break
                Session.objects.filter(pk__in=ids).delete()
                total += len(ids)
    return total


def fail_stuck_starts(now: datetime) -> int:
    """Fail sessions that never got past requested/provisioning and queue removal of whatever
    their start left behind. A provision job that turns up later finds them failed and does nothing."""
    bound = settings.LAB_START_TIMEOUT_SECONDS + START_GRACE_SECONDS
    message = f"Your environment did not start within {bound} seconds (the start was lost or hung)."
    failed = 0
    for state in (State.REQUESTED, State.PROVISIONING):

        def fail(ids: list[UUID], state: str = state) -> int:
            # The rows are locked, so none can have moved since they were selected.
            moved = Session.objects.filter(pk__in=ids).transition_all(
                state, State.FAILED, end_reason=EndReason.ERROR, error=message, endpoints={}
            )
            SessionEvent.objects.bulk_create(
                [SessionEvent(session_id=pk, message=message, level=SessionEvent.Level.ERROR) for pk in ids]
            )
            for pk in ids:
                queue_removal(pk)
            return moved

        failed += claim_in_batches(quiet_since(now - timedelta(seconds=bound)).filter(state=state), fail, BATCH)
    return failed


def requeue_stuck_teardowns(now: datetime) -> int:
    """Queue the teardown again for sessions stuck in `stopping` (teardown is idempotent).

    One job id per session: a teardown still queued or running is never doubled, and a failed
    or lost one is replaced.
    """
    def requeue(ids: list[UUID]) -> int:
        # The event also restarts the clock, so a session is re-queued at most once per bound.
        SessionEvent.objects.bulk_create(
            [
                SessionEvent(session_id=pk, message="Still stopping: cleaning up again.",
                             level=SessionEvent.Level.WARNING)
                for pk in ids
            ]
        )
        for pk in ids:
            queue_teardown(pk)
        return len(ids)

    cutoff = now - timedelta(seconds=STOPPING_RETRY_SECONDS)
    return claim_in_batches(quiet_since(cutoff).filter(state=State.STOPPING), requeue, BATCH)


def reap(now: datetime | None = None) -> ReapReport:
    """One pass; recorded as a HousekeepingPass (for /metrics) when it completes."""
    started_at, began = timezone.now(), time.monotonic()
    report = _reap(now or started_at)
    HousekeepingPass.record(HousekeepingPass.Kind.REAP, started_at, time.monotonic() - began,
                            sessions_handled=report.sessions_handled)
    return report


def _reap(now: datetime) -> ReapReport:
    report = ReapReport(deleted=delete_old(now), start_failed=fail_stuck_starts(now))
    try:
        # Stops wait while Redis is away rather than leave sessions in `stopping` with no teardown.
        require_queue()
        report.abandoned_jobs = len(sweep_abandoned_jobs())
        report.expired = stop_expired(now)
        report.idle = stop_idle(now)
        report.teardown_requeued = requeue_stuck_teardowns(now)
        recovered = job_recovery.recover(now)
        # Safety net for slots freed where no admission runs (bulk fails, the reconciler, a raised capacity).
        admission.admit_all()
    except QueueUnavailable as exc:
        log.warning("the job queue is unavailable (%s): stops and job recovery wait for the next pass", exc.detail)
        report.queue_unavailable = True
        return report
    report.jobs_requeued, report.jobs_failed = recovered.requeued, recovered.failed
    return report
