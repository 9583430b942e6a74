"""A session's environment, in one place: brought up (provision), taken down when the session
stops (teardown), and removed after a start was abandoned (remove_environment). Driven by the
jobs in jobs.py. When a session is ready, `session_ready` tells the apps above (the judge starts
the first step's script)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labs.assets import prepare_environment
from runners import get_runner, resolve_alias
from runners.base import Runner, RunnerError, SessionSpec
from sessions_app import admission
from sessions_app.models import EndReason, Session, SessionEvent, StaleTransition, State
from sessions_app.signals import session_ready
from sessions_app.specs import spec_for

log = logging.getLogger(__name__)

# A temporary runner error (an engine restarting, a timeout talking to it) gets another try while
# the start budget lasts; runners adopt what a failed try left, so a retry never doubles anything.
START_ATTEMPTS = 3
RETRY_DELAY_SECONDS = 2.0


def _load(session_id: str) -> Session | None:
    return Session.objects.select_related("lab", "lab__image", "user").filter(pk=session_id).first()


def _fail(session: Session, message: str) -> None:
    session.log(message, level="error")
    try:
        session.transition(State.FAILED, error=message, end_reason=EndReason.ERROR, endpoints={})
    except StaleTransition:
        log.info("session %s changed state while failing: now %s", session.pk, session.state)
        return
    admission.admit(session.runner_name)  # its slot is free


def _remove(runner: Runner, session: Session) -> bool:
    """Stop what the session's state names and anything else the runner holds for it; whether
    there was anything. RunnerError if the runner cannot."""
    if session.runner_state:
        runner.stop(session.runner_state)
    return remove_leftovers(runner, str(session.pk)) > 0 or bool(session.runner_state)


def remove_leftovers(runner: Runner, session_id: str) -> int:
    """Remove whatever a runner holds for a session (used when its state was never saved)."""
    removed = 0
    for env in runner.list_managed_for(session_id):
        runner.remove_managed(env)
        removed += 1
    return removed


def provision(session_id: str) -> None:
    """Start the environment of a queued session. Safe to run twice: the second run does nothing,
    and a run retried after a crash adopts the environment the first one created."""
    session = _load(session_id)
    if session is None:
        return
    if session.state == State.REQUESTED:
        try:
            session.transition(State.PROVISIONING)
        except StaleTransition:
            return
    elif session.state != State.PROVISIONING:
        return

    spec = spec_for(session)
    try:
        alias = resolve_alias(session.runner_name, spec.image_kind)
        runner = get_runner(alias)
    except RunnerError as exc:
        _fail(session, f"Cannot start: {exc}")
        return
    if alias != session.runner_name:
        Session.objects.filter(pk=session.pk).update(runner_name=alias)
        session.runner_name = alias

    if not spec.image:
        _fail(session, f"Cannot start: the image {session.lab.image.name} has no file or reference yet.")
        return
    session.log(f"Provisioning on the {alias} runner.")

    def progress(message: str) -> None:
        session.log(message)

    deadline = time.monotonic() + settings.LAB_START_TIMEOUT_SECONDS
    try:
        result = _start_with_retries(session, runner, spec, progress, deadline)
    except RunnerError as exc:
        try:
            remove_leftovers(runner, spec.session_id)
        except RunnerError:
            log.exception("cleanup after failed start of %s", session.pk)
        _fail(session, f"Could not start your environment: {exc}")
        return
    except Exception as exc:
        log.exception("unexpected error starting session %s", session.pk)
        try:
            remove_leftovers(runner, spec.session_id)
        except Exception:
            log.exception("cleanup after failed start of %s", session.pk)
        _fail(session, f"Could not start your environment (internal error: {type(exc).__name__}).")
        return

    try:
        # The lab's files (assets, Killercoda's /root) are in place before the learner gets in.
        prepare_environment(session, runner, result.state, progress)
    except (RunnerError, OSError) as exc:
        _discard(runner, result.state, spec.session_id)
        _fail(session, f"Could not set up the lab in your environment: {exc}")
        return

    now = timezone.now()
    try:
        session.transition(
            State.RUNNING,
            runner_state=result.state,
            endpoints=result.endpoints,
            started_at=now,
            expires_at=now + timedelta(minutes=session.lab.ttl_minutes),
            last_active_at=now,
        )
    except StaleTransition:
        # Stopped while we were starting: keep the state so teardown can find it, and remove it.
        Session.objects.filter(pk=session.pk).update(runner_state=result.state)
        try:
            runner.stop(result.state)
        except RunnerError:
            log.exception("removing environment of session %s stopped during start", session.pk)
        return
    session.log("Ready.")
    for receiver, error in session_ready.send_robust(sender=Session, session=session):
        if error is not None:  # the session is ready whatever a listener's trouble
            log.error("session %s ready: %s failed", session.pk, receiver, exc_info=error)


def _start_with_retries(session: Session, runner: Runner, spec: SessionSpec, progress: Any, deadline: float) -> Any:
    attempt = 1
    while True:
        try:
            return runner.start(spec, progress=progress, timeout=max(1.0, deadline - time.monotonic()))
        except RunnerError as exc:
            left = deadline - time.monotonic()
            if exc.permanent or attempt >= START_ATTEMPTS or left < RETRY_DELAY_SECONDS * 2:
                raise
            session.log(f"Temporary problem: {exc}. Trying again.", level="warning")
            attempt += 1
            time.sleep(RETRY_DELAY_SECONDS)


def _discard(runner: Runner, state: dict[str, Any], session_id: str) -> None:
    try:
        runner.stop(state)
        remove_leftovers(runner, session_id)
    except RunnerError:
        log.exception("cleanup after failed setup of %s", session_id)


def teardown(session_id: str) -> None:
    """Remove a stopping session's environment and record how it ended. Idempotent."""
    session = _load(session_id)
    if session is None or session.state != State.STOPPING:
        return
    try:
        _remove(session.runner(), session)
    except RunnerError as exc:
        _fail(session, f"Could not remove the environment cleanly: {exc}")
        return
    final = State.EXPIRED if session.end_reason in (EndReason.EXPIRED, EndReason.IDLE) else State.STOPPED
    try:
        with transaction.atomic():  # seen together: a page whose stream ends at the new state has the line
            session.transition(final, endpoints={})
            session.log("Environment removed.")
    except StaleTransition:
        return
    admission.admit(session.runner_name)  # its slot is free


def remove_environment(session_id: str) -> None:
    """Remove what an ended session's runner still holds (after an abandoned start). Idempotent."""
    session = Session.objects.filter(pk=session_id).first()
    if session is None or not session.is_ended:
        return  # gone, or still live: a live session's own jobs own its environment
    try:
        removed = _remove(session.runner(), session)
    except RunnerError as exc:
        # The reconciler removes environments no live session owns, so this is retried there.
        log.warning("removing the environment of %s: %s", session.pk, exc)
        session.log(f"Could not remove the environment yet: {exc}", level=SessionEvent.Level.WARNING)
        return
    if removed:
        session.log("Environment removed.")
