"""Making the database and the runners agree after crashes, restarts or manual meddling.

- an environment a runner holds that no live session owns is removed;
- a running session whose environment vanished is marked failed;
- a running session whose environment stopped from inside (a VM powered off) is stopped.

Two passes at once (two `reconcile_runners` processes) are safe: on PostgreSQL a pass takes an
advisory lock per runner and skips a runner another pass is reconciling, so an orphan is removed,
and counted, once; failing a session takes its row lock with SKIP LOCKED. A completed pass writes a
HousekeepingPass row (its duration, the orphans it removed, the sessions it failed or stopped) for
/metrics.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from runners import all_runners
from runners.base import ManagedEnvironment, PollStatus, Runner, RunnerError
from sessions_app import actions
from sessions_app.models import LIVE_STATES, EndReason, HousekeepingPass, Session, State

log = logging.getLogger(__name__)
CHUNK = 500


@dataclass
class ReconcileReport:
    orphans_removed: int = 0
    sessions_failed: int = 0
    sessions_stopped: int = 0
    errors: list[str] = field(default_factory=list)


def _live_ids(candidates: list[str]) -> set[str]:
    live: set[str] = set()
    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start:start + CHUNK]
        # order_by(): the model's default ordering would only add a sort.
        rows = Session.objects.filter(pk__in=chunk, state__in=LIVE_STATES).order_by().values_list("pk", flat=True)
        live.update(str(pk) for pk in rows)
    return live


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass
class LiveEnvironments:
    """What one listing found for live sessions: those with a running environment, and every
    environment of each live session (removed from this list, not a new one, if it has vanished)."""

    present: set[str] = field(default_factory=set)
    by_session: dict[str, list[ManagedEnvironment]] = field(default_factory=dict)


def remove_orphans(runner: Runner, report: ReconcileReport) -> LiveEnvironments:
    """Remove environments without a live session; return what the live sessions have."""
    managed = runner.list_managed()
    ids = [env.session_id for env in managed if _is_uuid(env.session_id)]
    live = _live_ids(ids)
    found = LiveEnvironments()
    for env in managed:
        if env.session_id in live:
            found.by_session.setdefault(env.session_id, []).append(env)
            if env.running:
                found.present.add(env.session_id)
            continue
        try:
            runner.remove_managed(env)
            report.orphans_removed += 1
        except RunnerError as exc:
            report.errors.append(f"{runner.name}: removing {env.ref}: {exc}")
    return found


def fail_vanished(runner: Runner, found: LiveEnvironments, report: ReconcileReport) -> None:
    running = (
        Session.objects.filter(runner_name=runner.name, state=State.RUNNING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for pk in running.iterator(chunk_size=CHUNK):
        if str(pk) in found.present:
            continue
        with transaction.atomic():
            session = Session.objects.select_for_update(skip_locked=True).filter(pk=pk, state=State.RUNNING).first()
            if session is None:
                continue
            try:
                status = runner.poll(session.runner_state)
            except RunnerError as exc:
                report.errors.append(f"{runner.name}: polling {pk}: {exc}")
                continue
            if status is PollStatus.RUNNING:
                continue
            if status is PollStatus.STOPPED:
                # Still there but stopped from inside (a VM powered off, the main process ended): the
                # learner's own doing, not a crash. It ends as a stop does, its teardown queued.
                session.transition(State.STOPPING, end_reason=EndReason.LEARNER)
                session.log("Your environment stopped from inside (a VM powered off, or its main process "
                            "ended); the session has ended.", level="warning")
                actions.queue_teardown(session.pk)
                report.sessions_stopped += 1
                continue
            session.transition(
                State.FAILED,
                end_reason=EndReason.VANISHED,
                error="The environment disappeared (removed outside the platform or crashed).",
                endpoints={},
            )
            session.log("Your environment disappeared; the session has ended.", level="error")
            report.sessions_failed += 1
        # What is left of it (a stopped container, a network, a volume) was in the pass's one
        # listing: listing again per session would make a pass over n vanished sessions cost n².
        for env in found.by_session.get(str(pk), []):
            try:
                runner.remove_managed(env)
            except RunnerError as exc:
                report.errors.append(f"{runner.name}: cleaning up after {pk}: {exc}")


def _lock_key(runner: Runner) -> int:
    digest = hashlib.blake2b(f"labs:reconcile:{runner.name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # PostgreSQL advisory keys are bigint


@contextmanager
def _runner_claim(runner: Runner) -> Iterator[bool]:
    """Yield whether this pass may reconcile `runner` now.

    On PostgreSQL a session-level advisory lock (held across the pass's own transactions) keeps a
    second pass off the runner while one is at work: both would otherwise list the same orphans
    and remove, and count, each twice. Other databases serve one process and need no claim.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    key = _lock_key(runner)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        claimed = bool(cursor.fetchone()[0])
    try:
        yield claimed
    finally:
        if claimed:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:
                log.warning("could not release the reconcile lock of %s (a lost connection releases it)",
                            runner.name)


def reconcile() -> ReconcileReport:
    """One pass over every available runner; recorded as a HousekeepingPass (for /metrics)."""
    started_at, began = timezone.now(), time.monotonic()
    report = ReconcileReport()
    for runner in all_runners():
        if not runner.available():
            continue
        with _runner_claim(runner) as claimed:
            if not claimed:
                log.info("another reconcile pass is at work on %s; skipping it this time", runner.name)
                continue
            try:
                found = remove_orphans(runner, report)
                fail_vanished(runner, found, report)
            except RunnerError as exc:
                report.errors.append(f"{runner.name}: {exc}")
    HousekeepingPass.record(HousekeepingPass.Kind.RECONCILE, started_at, time.monotonic() - began,
                            orphans_removed=report.orphans_removed,
                            sessions_handled=report.sessions_failed + report.sessions_stopped)
    return report
