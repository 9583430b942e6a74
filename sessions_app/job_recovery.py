"""Sessions waiting for a job that will never come, repaired on the reaper's next pass.

A job is lost when Redis goes away between a verb's commit and its enqueue, or restarts
without its data; it fails when its worker died and its retry is used up (or it crashed).
Each pass looks up, in one round trip per batch, the job of every session that has logged
nothing for RECOVER_AFTER_SECONDS (time enough for a commit's own enqueue):

- `requested` with no provision job: queued again (no job can be running yet: provisioning's
  first step leaves `requested`);
- `requested` or `provisioning` whose provision job failed: failed with the reason, and what
  the start left behind is removed;
- `stopping` with no teardown job, when its teardown could not be queued (the verb logged
  TEARDOWN_NOT_QUEUED) or after LOST_STOP_AFTER_SECONDS (a teardown logs nothing until it is
  done, so a shorter wait could start a second one beside a running one): queued again.

A `provisioning` session whose job record vanished (Redis restarted empty) may still be
provisioning in a worker; it is left to the reaper's start timeout. Other apps' jobs are repaired
by what they `register()`: snapshots in vms/job_recovery.py, checks and hints in
judge/job_recovery.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db.models import OuterRef, Q, Subquery

from jobqueue.queueing import job_statuses, uses_redis
from sessions_app.job_requests import TEARDOWN_NOT_QUEUED, queue_provision, queue_removal, queue_teardown
from sessions_app.models import EndReason, Session, SessionEvent, State
from sessions_app.row_claims import claim_in_batches, quiet_since

RECOVER_AFTER_SECONDS = 10
LOST_STOP_AFTER_SECONDS = 60
START_LOST = "The job queue lost this start (Redis was unavailable): queued it again."
START_ABANDONED = ("Your environment's start was interrupted: the worker preparing it stopped. "
                   "Start the lab again.")
STOP_LOST = "The job queue lost this stop (Redis was unavailable): queued it again."


@dataclass
class Recovered:
    requeued: int = 0
    failed: int = 0

    def __add__(self, other: Recovered) -> Recovered:
        return Recovered(self.requeued + other.requeued, self.failed + other.failed)


def statuses_by_pk(ids: list[Any], job_id: Callable[[Any], str], queue: str = "default") -> dict[Any, str | None]:
    """The RQ status of each row's job (None: Redis has no record of it)."""
    found = job_statuses([job_id(pk) for pk in ids], queue)
    return {pk: found[job_id(pk)] for pk in ids}


def _log_all(ids: list[UUID], message: str, level: str) -> None:
    SessionEvent.objects.bulk_create([SessionEvent(session_id=pk, message=message, level=level) for pk in ids])


def recover_starts(now: datetime) -> Recovered:
    done = Recovered()

    def repair(ids: list[UUID]) -> int:
        statuses = statuses_by_pk(ids, lambda pk: f"provision-{pk}")
        requested = set(Session.objects.filter(pk__in=ids, state=State.REQUESTED).values_list("pk", flat=True))
        lost = [pk for pk in ids if statuses[pk] is None and pk in requested]
        _log_all(lost, START_LOST, SessionEvent.Level.WARNING)
        for pk in lost:
            queue_provision(pk)
        abandoned = [pk for pk in ids if statuses[pk] == "failed"]
        failed = sum(
            Session.objects.filter(pk__in=abandoned).transition_all(
                state, State.FAILED, end_reason=EndReason.ERROR, error=START_ABANDONED, endpoints={}
            )
            for state in (State.REQUESTED, State.PROVISIONING)
        )
        _log_all(abandoned, START_ABANDONED, SessionEvent.Level.ERROR)
        for pk in abandoned:
            queue_removal(pk)
        done.requeued += len(lost)
        done.failed += failed
        return len(lost) + failed

    cutoff = now - timedelta(seconds=RECOVER_AFTER_SECONDS)
    claim_in_batches(quiet_since(cutoff).filter(state__in=[State.REQUESTED, State.PROVISIONING]), repair)
    return done


def recover_stops(now: datetime) -> Recovered:
    latest = SessionEvent.objects.filter(session=OuterRef("pk")).order_by("-created_at", "-pk").values("message")[:1]
    never_queued = (
        quiet_since(now - timedelta(seconds=RECOVER_AFTER_SECONDS))
        .annotate(latest_message=Subquery(latest))
        .filter(latest_message=TEARDOWN_NOT_QUEUED)
    )
    long_quiet = quiet_since(now - timedelta(seconds=LOST_STOP_AFTER_SECONDS))
    waiting = Session.objects.filter(state=State.STOPPING).filter(
        Q(pk__in=never_queued.values("pk")) | Q(pk__in=long_quiet.values("pk"))
    )

    def repair(ids: list[UUID]) -> int:
        statuses = statuses_by_pk(ids, lambda pk: f"teardown-{pk}")
        lost = [pk for pk in ids if statuses[pk] is None]
        _log_all(lost, STOP_LOST, SessionEvent.Level.WARNING)
        for pk in lost:
            queue_teardown(pk)
        return len(lost)

    return Recovered(requeued=claim_in_batches(waiting, repair))


Recoverer = Callable[[datetime], Recovered]
_recoverers: list[Recoverer] = []


def register(recoverer: Recoverer) -> Recoverer:
    """Add a higher app's repair to every pass (vms and judge register theirs in AppConfig.ready)."""
    if recoverer not in _recoverers:
        _recoverers.append(recoverer)
    return recoverer


def recover(now: datetime) -> Recovered:
    """Every repair above, and those registered by other apps. QueueUnavailable if Redis does not answer.

    Only with Redis: embedded jobs live in the memory of the process that queued them, where
    no other process can look them up.
    """
    if not uses_redis():
        return Recovered()
    done = recover_starts(now) + recover_stops(now)
    for recoverer in _recoverers:
        done += recoverer(now)
    return done
