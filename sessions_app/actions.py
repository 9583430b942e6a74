"""Verbs that change sessions. Views, the admin, jobs and commands all call these."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import UserQuota
from audit.records import record
from jobqueue.queueing import QueueUnavailable, require_queue
from labs.models import IdleSignal, Lab
from sessions_app import admission
from sessions_app.job_requests import PROVISION_NOT_QUEUED as PROVISION_NOT_QUEUED
from sessions_app.job_requests import TEARDOWN_NOT_QUEUED as TEARDOWN_NOT_QUEUED
from sessions_app.job_requests import queue_provision, queue_teardown
from sessions_app.models import EndReason, Session, StaleTransition, State


class SessionActionError(Exception):
    """A request the learner can fix; the message is shown to them."""

    def __init__(self, message: str, session: Session | None = None) -> None:
        super().__init__(message)
        self.session = session


class QuotaExceeded(SessionActionError):
    pass


class JobQueueUnavailable(SessionActionError):
    """Redis does not answer: nothing was changed, and asking again in a minute may work."""


def _require_queue() -> None:
    """Refuse before changing anything when the job queue is away (see jobqueue/queueing.py)."""
    try:
        require_queue()
    except QueueUnavailable as exc:
        raise JobQueueUnavailable(str(exc)) from exc


def start_session(user: Any, lab: Lab, *, address: str = "") -> Session:
    """Create a session for `user` on `lab` and queue its provisioning.

    The user's quota row is locked for the check-and-create, so two simultaneous requests
    cannot both pass the concurrent-session limit. `address` is the client's, for the audit log.
    """
    if not lab.published and not user.is_staff:
        raise SessionActionError("This lab is not published.")
    if not lab.image.active:
        raise SessionActionError(f"The image {lab.image.name} is disabled; ask staff to enable it.")
    _require_queue()
    UserQuota.for_user(user)
    with transaction.atomic():
        quota = UserQuota.objects.select_for_update().get(user=user)
        live = list(Session.objects.live().filter(user=user).select_related("lab")[: quota.max_concurrent_sessions])
        if len(live) >= quota.max_concurrent_sessions:
            running = live[0]
            raise QuotaExceeded(
                f"You already have {len(live)} running session(s) (limit {quota.max_concurrent_sessions}): "
                f"“{running.lab.title}”. Stop it before starting another.",
                session=running,
            )
        runner_name = admission.runner_of_start(lab.runner or settings.LAB_DEFAULT_RUNNER, lab.image.kind)
        # Locked after the quota row (admission never takes quota rows), so no deadlock.
        waits = admission.must_wait(admission.locked_capacity(runner_name))
        session = Session.objects.create(
            user=user,
            lab=lab,
            runner_name=runner_name,
            state=State.WAITING if waits else State.REQUESTED,
        )
        if waits:
            session.log("In line: every slot on this runner is taken; your session starts by itself when one frees.")
        else:
            session.log("Queued: waiting for a worker to provision your environment.")
        record("session.start", actor=user, target=session, address=address,
               extra={"lab": lab.slug, "runner": session.runner_name, "waiting": waits})
        if not waits:
            queue_provision(session.pk)
    return session


def stop_session(session: Session, reason: str = EndReason.LEARNER, asked_by: str = "", *,
                 actor: Any = None, address: str = "", extra: dict[str, Any] | None = None) -> Session:
    """Ask for the session to stop; the teardown runs as a job. Stopping twice is harmless.
    `asked_by` names who asked, for the session's log (staff stops). The audit log records
    `actor` (by default the learner for a learner's stop, else whoever `asked_by` names, else the
    system), `address` and `extra`; a stop that changes nothing is not recorded.

    SessionActionError, with nothing changed, when the job queue is unavailable.
    """
    session.refresh_from_db()
    if session.is_ended or session.state == State.STOPPING:
        return session
    if session.state == State.WAITING:
        return _leave_line(session, reason, asked_by, actor=actor, address=address, extra=extra)
    _require_queue()
    try:
        session.transition(State.STOPPING, end_reason=reason)
    except StaleTransition:
        return session
    who = f": {asked_by}" if asked_by else ""
    session.log(f"Stopping ({EndReason(reason).label.lower()}{who}).")
    if actor is None and reason == EndReason.LEARNER:
        actor = session.user
    record("session.stop", actor=actor, actor_name=asked_by, target=session, address=address,
           extra={"reason": str(reason), **(extra or {})})
    queue_teardown(session.pk)
    return session


def _leave_line(session: Session, reason: str, asked_by: str, *, actor: Any, address: str,
                extra: dict[str, Any] | None) -> Session:
    """Stop a session still waiting in line: it holds no environment, so it ends at once (no teardown)."""
    try:
        session.transition(State.STOPPED, end_reason=reason)
    except StaleTransition:
        # Admitted meanwhile: stop it the usual way.
        return stop_session(session, reason, asked_by, actor=actor, address=address, extra=extra)
    who = f": {asked_by}" if asked_by else ""
    session.log(f"Left the line ({EndReason(reason).label.lower()}{who}).")
    if actor is None and reason == EndReason.LEARNER:
        actor = session.user
    record("session.stop", actor=actor, actor_name=asked_by, target=session, address=address,
           extra={"reason": str(reason), "waiting": True, **(extra or {})})
    admission.announce_line(session.runner_name)  # those behind it moved up
    return session


def sessions_to_stop(lab: Lab | None = None, runner: str = "") -> QuerySet[Session]:
    """The sessions staff's "stop all" would stop: every one not ended or already stopping, of one
    lab, of one runner, or everywhere."""
    found = Session.objects.live().exclude(state=State.STOPPING)
    if lab is not None:
        found = found.filter(lab=lab)
    if runner:
        found = found.filter(runner_name=runner)
    return found


def stop_all(asked_by: str, lab: Lab | None = None, runner: str = "", *, actor: Any = None,
             address: str = "") -> int:
    """Stop every session `sessions_to_stop` finds, each logged with who asked; how many stopped.
    JobQueueUnavailable, with nothing changed, when the job queue is away. The audit log gets
    one "session.stop_all" entry with the scope and count, and one "session.stop" per session."""
    _require_queue()
    stopped = 0
    scope = {"lab": lab.slug} if lab is not None else {"runner": runner} if runner else {"site": True}
    for session in sessions_to_stop(lab, runner).select_related("lab", "user").iterator(chunk_size=200):
        before = session.state
        result = stop_session(session, reason=EndReason.STAFF, asked_by=f"{asked_by}, stop all", actor=actor,
                              address=address, extra={"stop_all": True})
        stopped += before != State.STOPPING and (
            result.state == State.STOPPING or (before == State.WAITING and result.state == State.STOPPED))
    record("session.stop_all", actor=actor, actor_name=asked_by, target=lab, address=address,
           label="" if lab is not None else f"runner {runner}" if runner else "the whole site",
           extra={**scope, "stopped": stopped})
    return stopped


def extend_session(session: Session, by_staff: bool = False, *, actor: Any = None, address: str = "") -> Session:
    """Push the deadline back by the lab's extension; learners get the lab's number of extensions.
    The audit log records `actor` (by default the session's learner, unless `by_staff`) and `address`."""
    with transaction.atomic():
        locked = Session.objects.select_for_update().select_related("lab").get(pk=session.pk)
        if locked.state != State.RUNNING or locked.expires_at is None:
            raise SessionActionError("Only a running session can be extended.")
        if not by_staff and locked.extensions_used >= locked.lab.max_extensions:
            raise SessionActionError(
                f"No extensions left: this lab allows {locked.lab.max_extensions}."
            )
        locked.expires_at = locked.expires_at + timedelta(minutes=locked.lab.extension_minutes)
        locked.extensions_used += 1
        locked.save(update_fields=["expires_at", "extensions_used"])
        locked.log(f"Extended by {locked.lab.extension_minutes} minutes.")
        if actor is None and not by_staff:
            actor = locked.user
        record("session.extend", actor=actor, target=locked, address=address,
               extra={"minutes": locked.lab.extension_minutes, "by_staff": by_staff,
                      "expires_at": locked.expires_at.isoformat()})
    return locked


# The page's "I'm still here" answer to the idle warning: the learner at the keyboard on purpose, so it
# counts whatever the lab's idle signals (without it the warning would offer a button that does nothing).
ANSWER = "answer"
SIGNALS = frozenset(IdleSignal.values) | {ANSWER}
# This process's last activity write per session (time.monotonic()): within the interval the next
# signal costs no query at all. Bounded: past this many sessions, the ones not marked lately are dropped.
_MARKED_LIMIT = 10_000
_marked: dict[str, float] = {}
_marked_lock = threading.Lock()  # consumers mark from a pool of threads


def _claim_mark(session_id: str, interval: float, *, peek: bool = False) -> bool:
    """Whether this process may try an activity write for the session now (and, unless `peek`,
    note that it does)."""
    now = time.monotonic()
    with _marked_lock:
        last = _marked.get(session_id)
        if last is not None and now - last < interval:
            return False
        if peek:
            return True
        if len(_marked) >= _MARKED_LIMIT:
            stale = [key for key, at in _marked.items() if now - at >= interval]
            for key in stale or list(_marked):  # all of them recent: start afresh, the database still throttles
                del _marked[key]
        _marked[session_id] = now
    return True


def _write_interval(signal: str) -> float:
    """Seconds between two activity writes for one session. CPU work is marked once per watchdog pass:
    with a window as long as the pass interval (both 30 s by default), a pass a moment early would
    skip its write and leave last_active_at two passes old; half the window never skips one."""
    interval = float(settings.LAB_ACTIVITY_WRITE_SECONDS)
    return interval / 2 if signal == IdleSignal.CPU else interval


def forget_activity_marks() -> None:
    """Forget this process's throttle (tests that move last_active_at back in time)."""
    with _marked_lock:
        _marked.clear()


def mark_active(session_or_id: Session | UUID | str, signal: str) -> bool:
    """Mark a running session active because of `signal` (a labs.models.IdleSignal value, or ANSWER),
    if its lab counts that signal (Lab.idle_signals); returns whether last_active_at was written.

    Every source of activity goes through here: terminal and VNC input (consoles), editor saves and
    the page's heartbeat (views), preview traffic (preview), CPU work (the watchdog). Cheap on hot
    paths: at most one write per session per LAB_ACTIVITY_WRITE_SECONDS, by a conditional UPDATE
    (another process's recent write is not repeated), and within that interval this process does not
    even query. A Session passed with its lab loaded needs no query to learn the lab's signals.
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown activity signal {signal!r}: one of {', '.join(sorted(SIGNALS))}")
    session = session_or_id if isinstance(session_or_id, Session) else None
    session_id = str(session.pk if session is not None else session_or_id)
    interval = _write_interval(signal)
    if not _claim_mark(session_id, interval, peek=True):
        return False
    if signal != ANSWER:
        if session is not None:
            counted = session.lab.idle_signals
        else:
            try:
                counted = Lab.objects.filter(sessions__pk=session_id).values_list("idle_signals", flat=True).first()
            except ValidationError:
                raise ValueError(f"not a session id: {session_id!r}") from None
        if signal not in (counted or ()):
            return False
    _claim_mark(session_id, interval)
    now = timezone.now()
    updated = Session.objects.filter(
        pk=session_id, state=State.RUNNING, last_active_at__lt=now - timedelta(seconds=interval)
    ).update(last_active_at=now)
    if updated and session is not None:
        session.last_active_at = now
    return bool(updated)


async def amark_active(session: Session, signal: str) -> bool:
    """mark_active for consumers: no thread hop while this process marked the session within the
    interval, so a burst of frames or requests costs nothing."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown activity signal {signal!r}")
    if not _claim_mark(str(session.pk), _write_interval(signal), peek=True):
        return False
    return await database_sync_to_async(mark_active)(session, signal)
