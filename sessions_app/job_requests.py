"""Asking for a session's jobs: provision, teardown and removal are queued by dotted name once the
transaction commits, each with one job id per session so it is never doubled. A module of its own
so that both the verbs (actions.py) and admission to the line (admission.py) can queue a start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobqueue.queueing import enqueue_on_commit, retry_once
from sessions_app.models import SessionEvent

# Logged when the queue went away between `_require_queue` and the commit; the reaper's recovery
# pass (sessions_app/job_recovery.py) queues the job once Redis is back.
PROVISION_NOT_QUEUED = "The job queue is unavailable: your environment will be prepared as soon as it is back."
TEARDOWN_NOT_QUEUED = "The job queue is unavailable: your environment will be removed as soon as it is back."


def _log_later(session_id: Any, message: str) -> Callable[[], object]:
    return lambda: SessionEvent.objects.create(session_id=session_id, message=message,
                                               level=SessionEvent.Level.WARNING)


def queue_provision(session_id: Any) -> None:
    """Queue the session's start once the transaction commits (idempotent, retried once if its worker dies)."""
    enqueue_on_commit("sessions_app.jobs.provision_session", str(session_id), job_id=f"provision-{session_id}",
                      retry=retry_once(), if_unavailable=_log_later(session_id, PROVISION_NOT_QUEUED))


def queue_teardown(session_id: Any) -> None:
    """Queue the session's teardown once the transaction commits (one job id per session, never doubled)."""
    enqueue_on_commit("sessions_app.jobs.teardown_session", str(session_id), job_id=f"teardown-{session_id}",
                      retry=retry_once(), if_unavailable=_log_later(session_id, TEARDOWN_NOT_QUEUED))


def queue_removal(session_id: Any) -> None:
    """Queue removal of what a failed session's start left behind (the reconciler's job if this is lost)."""
    enqueue_on_commit("sessions_app.jobs.remove_environment", str(session_id), job_id=f"remove-{session_id}",
                      retry=retry_once())
