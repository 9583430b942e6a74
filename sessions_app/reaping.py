"""Ending sessions by the clock: time limit, idle timeout, deleting old ended sessions, and
recovering sessions stuck between states (a worker killed mid-job, or a job lost because
Redis was down when it was queued).

Rows are claimed in small batches with row locks that skip rows another reaper holds, so two
reapers can run at once and thousands of rows never sit in memory together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labs.models import Lab
from labsite.queueing import enqueue_on_commit
from sessions_app.models import ENDED_STATES, EndReason, Session, SessionEvent, SessionQuerySet, State
from sessions_app.provisioning import remove_leftovers
from sessions_app.runners import get_runner
from sessions_app.runners.base import RunnerError

log = logging.getLogger(__name__)

BATCH = 200
# Added to LAB_START_TIMEOUT_SECONDS before a start counts as abandoned: a live worker gives up
# at the timeout itself and fails the session; the margin covers queueing and the job's own steps.
START_GRACE_SECONDS = 60
# A teardown takes seconds; one with no news for this long was lost and is queued again.
STOPPING_RETRY_SECONDS = 300


@dataclass
class ReapReport:
    expired: int = 0
    idle: int = 0
    deleted: int = 0
    start_failed: int = 0
    teardown_requeued: int = 0


def _stop_in_batches(queryset: SessionQuerySet, reason: str, message: str) -> int:
    from sessions_app import jobs

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
            for pk in ids:
                enqueue_on_commit(jobs.teardown_session, str(pk), job_id=f"teardown-{pk}")


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


def _quiet_since(cutoff: datetime) -> SessionQuerySet:
    """Sessions created before `cutoff` that have logged nothing since: no worker is moving them.

    Every step of a start or a stop logs an event, so a recent event means a job is alive.
    """
    recent = SessionEvent.objects.filter(session=OuterRef("pk"), created_at__gt=cutoff)
    return Session.objects.filter(created_at__lte=cutoff).exclude(Exists(recent))


def _claim_in_batches(queryset: SessionQuerySet, handle: Callable[[list[UUID]], int]) -> int:
    """Lock rows of `queryset` a batch at a time (skipping rows another reaper holds) and pass
    each batch's ids to `handle` inside the transaction; return the sum of what it returns.

    The primary-key cursor visits each row at most once per pass, even when `handle` leaves it
    matching the queryset.
    """
    total = 0
    after: UUID | None = None
    while True:
        with transaction.atomic():
            rows = queryset.order_by("pk")
            if after is not None:
                rows = rows.filter(pk__gt=after)
            ids = list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[:BATCH])
            if not ids:
                return total
            after = ids[-1]
            total += handle(ids)


def fail_stuck_starts(now: datetime) -> int:
    """Fail sessions that never got past requested/provisioning and queue removal of whatever
    their start left behind. A provision job that turns up later finds them failed and does nothing."""
    from sessions_app import jobs

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
                enqueue_on_commit(jobs.remove_environment, str(pk), job_id=f"remove-{pk}")
            return moved

        failed += _claim_in_batches(_quiet_since(now - timedelta(seconds=bound)).filter(state=state), fail)
    return failed


def requeue_stuck_teardowns(now: datetime) -> int:
    """Queue the teardown again for sessions stuck in `stopping` (teardown is idempotent)."""
    from sessions_app import jobs

    bound = STOPPING_RETRY_SECONDS
    # RQ refuses a job id whose record still exists (a lost job's record can stay for a year),
    # so each retry window gets its own id; two reapers in one window still queue it once.
    window = int(now.timestamp()) // bound

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
            enqueue_on_commit(jobs.teardown_session, str(pk), job_id=f"teardown-{pk}-retry-{window}")
        return len(ids)

    return _claim_in_batches(_quiet_since(now - timedelta(seconds=bound)).filter(state=State.STOPPING), requeue)


def remove_environment(session_id: str) -> None:
    """Remove what an ended session's runner still holds (after an abandoned start). Idempotent."""
    session = Session.objects.filter(pk=session_id).first()
    if session is None or not session.is_ended:
        return  # gone, or still live: a live session's own jobs own its environment
    try:
        runner = get_runner(session.runner_name)
        if session.runner_state:
            runner.stop(session.runner_state)
        removed = remove_leftovers(runner, str(session.pk))
    except RunnerError as exc:
        # The reconciler removes environments no live session owns, so this is retried there.
        log.warning("removing the environment of %s: %s", session.pk, exc)
        session.log(f"Could not remove the environment yet: {exc}", level=SessionEvent.Level.WARNING)
        return
    if session.runner_state or removed:
        session.log("Environment removed.")


def reap(now: datetime | None = None) -> ReapReport:
    now = now or timezone.now()
    return ReapReport(
        expired=stop_expired(now),
        idle=stop_idle(now),
        deleted=delete_old(now),
        start_failed=fail_stuck_starts(now),
        teardown_requeued=requeue_stuck_teardowns(now),
    )
