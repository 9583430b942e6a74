"""A learner's progress through a lab's steps in one session, and which steps are open.

A step counts as passed once any of its attempts in the session passed: breaking it again
later while working on the next step does not lock that step again.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from judge.models import Attempt
from labs.models import LabStep
from sessions_app.models import Session


def step_progress(session: Session) -> dict[int, bool | None]:
    """For each step id of the session's lab: True (passed), False (checked, not passed), None (not checked)."""
    progress: dict[int, bool | None] = {step_id: None for step_id in
                                        session.lab.steps.values_list("pk", flat=True)}
    finished = Attempt.objects.filter(session=session, step__isnull=False, status=Attempt.Status.DONE)
    for step_id, passed in finished.values_list("step_id", "passed"):
        if step_id in progress and progress[step_id] is not True:
            progress[step_id] = bool(passed)
    return progress


def final_passed(session: Session) -> bool | None:
    """Whether the lab's final check passed in this session (None: never run)."""
    finished = Attempt.objects.filter(session=session, step__isnull=True, status=Attempt.Status.DONE)
    if finished.filter(passed=True).exists():
        return True
    return False if finished.exists() else None


def locked_steps(session: Session, progress: dict[int, bool | None] | None = None) -> set[int]:
    """Ids of the steps not open yet: with ``unlock_steps_in_order``, a step opens once every
    earlier step that has checks has passed (steps without checks never hold anything back)."""
    lab = session.lab
    if not lab.unlock_steps_in_order:
        return set()
    progress = step_progress(session) if progress is None else progress
    locked: set[int] = set()
    blocked = False
    for step in LabStep.objects.filter(lab=lab).order_by("order"):
        if blocked:
            locked.add(step.pk)
        elif step.verify and progress.get(step.pk) is not True:
            blocked = True
    return locked


# An attempt still "running" after this long lost its worker (the job's own limit is 15 minutes).
STALE_AFTER = timedelta(minutes=20)


def active_attempt(session: Session) -> Attempt | None:
    """The session's attempt still queued or running, if any (one at a time per session)."""
    cutoff = timezone.now() - STALE_AFTER
    return (Attempt.objects.filter(session=session, created_at__gte=cutoff)
            .filter(Q(status=Attempt.Status.QUEUED) | Q(status=Attempt.Status.RUNNING))
            .order_by("-created_at").first())


def close_stale_attempts(session: Session) -> int:
    """Mark attempts whose worker died as errors, so they stop looking busy; returns how many."""
    now = timezone.now()
    return (Attempt.objects.filter(session=session, created_at__lt=now - STALE_AFTER)
            .filter(Q(status=Attempt.Status.QUEUED) | Q(status=Attempt.Status.RUNNING))
            .update(status=Attempt.Status.ERROR, finished_at=now,
                    result={"error": "The check was interrupted before it finished; run it again."}))
