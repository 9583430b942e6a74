"""Asking the judge: create an Attempt and queue its job once the transaction commits."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from jobqueue.queueing import QUEUE_UNAVAILABLE, QueueUnavailable, enqueue_on_commit, require_queue
from judge import jobs
from judge.models import Attempt
from judge.progress import active_attempt, close_stale_attempts, locked_steps
from labs.models import LabStep
from sessions_app.models import Session, State


class JudgeActionError(Exception):
    """A check that cannot be asked for now; the message is for the learner."""


def request_check(session: Session, step: LabStep | None, user: Any) -> Attempt:
    """Queue a check of ``step`` (None: the lab's final checks) in ``session`` for ``user``.

    One check at a time per session (two builds at once in one engine would only slow both
    down): a second click on the same button returns the attempt already under way, a click
    on another button is refused until it finishes.
    """
    if not session.is_learner(user):
        raise JudgeActionError("Only the learner whose session this is can run its checks.")
    if step is not None and step.lab_id != session.lab_id:
        raise JudgeActionError("That step belongs to another lab.")
    checks = step.verify if step is not None else session.lab.judge
    if not checks:
        raise JudgeActionError("There is nothing to check here." if step is not None
                               else "This lab has no final check.")
    try:
        require_queue("judge")
    except QueueUnavailable as exc:
        raise JudgeActionError(str(exc)) from exc
    with transaction.atomic():
        # The row lock makes concurrent clicks queue one attempt, not two.
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if locked.state != State.RUNNING:
            raise JudgeActionError("Checks run in a running session: start the lab first.")
        close_stale_attempts(locked)
        running = active_attempt(locked)
        if running is not None:
            if running.step_id == (step.pk if step is not None else None):
                return running  # a second click on the same button
            raise JudgeActionError("Another check of this session is still running: wait for it to finish.")
        if step is not None and step.pk in locked_steps(locked):
            raise JudgeActionError("Pass the earlier steps first: this step is still locked.")
        attempt = Attempt.objects.create(user=user, session=locked, lab_id=locked.lab_id, step=step)
        enqueue_on_commit(jobs.run_attempt, attempt.pk, job_id=f"judge-attempt-{attempt.pk}", queue="judge",
                          if_unavailable=lambda: _not_queued(attempt))
    return attempt


def _not_queued(attempt: Attempt) -> None:
    """The queue went away between the check above and the commit: end the attempt with the reason."""
    Attempt.objects.filter(pk=attempt.pk, status=Attempt.Status.QUEUED).update(
        status=Attempt.Status.ERROR, finished_at=timezone.now(), result={"error": QUEUE_UNAVAILABLE}
    )
