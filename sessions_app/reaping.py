"""Ending sessions by the clock: time limit, idle timeout, and deleting old ended sessions.

Rows are claimed in small batches with row locks that skip rows another reaper holds, so two
reapers can run at once and thousands of rows never sit in memory together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from labs.models import Lab
from labsite.queueing import enqueue_on_commit
from sessions_app.models import ENDED_STATES, EndReason, Session, SessionEvent, SessionQuerySet, State

BATCH = 200


@dataclass
class ReapReport:
    expired: int = 0
    idle: int = 0
    deleted: int = 0


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


def reap(now: datetime | None = None) -> ReapReport:
    now = now or timezone.now()
    return ReapReport(expired=stop_expired(now), idle=stop_idle(now), deleted=delete_old(now))
