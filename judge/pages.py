"""What the judge's partials show: the context for a step's Check box, the final check and an attempt.

Shared by the views (which re-render a partial after a click or a poll) and by the template
tags the session page uses, so both always show the same thing.
"""

from __future__ import annotations

from typing import Any

from judge.models import Attempt
from judge.progress import final_passed, locked_steps, step_progress
from judge.results import JudgeResult
from judge.steps import lab_complete
from labs.models import LabStep
from sessions_app.models import Session, State

LOG_TAIL = 6000  # characters of a running attempt's log shown while it streams

ACTIVE = (Attempt.Status.QUEUED, Attempt.Status.RUNNING)


def _cached(session: Session, name: str, compute: Any) -> Any:
    # One page shows every step: compute the session's progress once per page, not per step.
    cache = session.__dict__.setdefault("_judge_cache", {})
    if name not in cache:
        cache[name] = compute()
    return cache[name]


def progress_of(session: Session) -> dict[int, bool | None]:
    return _cached(session, "progress", lambda: step_progress(session))  # type: ignore[no-any-return]


def locked_of(session: Session) -> set[int]:
    return _cached(session, "locked", lambda: locked_steps(session, progress_of(session)))  # type: ignore[no-any-return]


def attempt_context(attempt: Attempt, *, poll: bool = True) -> dict[str, Any]:
    active = attempt.status in ACTIVE
    result = None
    error = ""
    if attempt.status == Attempt.Status.DONE:
        result = JudgeResult.from_dict(attempt.result or {})
    elif attempt.status == Attempt.Status.ERROR:
        error = str((attempt.result or {}).get("error") or "The check could not run.")
    log_tail = attempt.log[-LOG_TAIL:] if attempt.log else ""
    return {
        "attempt": attempt,
        "active": active,
        "poll": poll and active,
        "result": result,
        "error": error,
        "metrics": metric_rows(result.metrics) if result else [],
        "duration": _duration(attempt.duration_ms),
        "log_tail": log_tail,
        "log_cut": len(attempt.log or "") > LOG_TAIL,
        "target": f"Step {attempt.step.order}: {attempt.step.title}" if attempt.step_id and attempt.step
        else "Final check",
    }


def history_row(attempt: Attempt) -> dict[str, Any]:
    """One line of a learner's history across labs (judge.views.my_attempts annotates ``failure_list``)."""
    failures = getattr(attempt, "failure_list", None) or []
    codes = [str(f.get("code", "")) for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []
    if attempt.status == Attempt.Status.DONE:
        verdict = "passed" if attempt.passed else "not passed"
    elif attempt.status == Attempt.Status.ERROR:
        verdict = "could not run"
    else:
        verdict = attempt.get_status_display().lower()
    return {
        "attempt": attempt,
        "verdict": verdict,
        "codes": codes,
        "target": f"Step {attempt.step.order}: {attempt.step.title}" if attempt.step_id and attempt.step
        else "Final check",
        "duration": _duration(attempt.duration_ms),
    }


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


# How the metrics checks record are shown: label and unit.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "image_size_mb": ("Image size", "MB"),
    "build.elapsed_seconds": ("Build time", "s"),
    "http.latency_ms": ("Response time", "ms"),
    "http.status": ("HTTP status", ""),
    "container.health": ("Container health", ""),
    "dockerfile.stages": ("Dockerfile stages", ""),
    "command.exit_code": ("Exit status", ""),
    "script.exit_code": ("Script exit status", ""),
}


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        label, unit = METRIC_LABELS.get(key, (key, ""))
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        rows.append((label, f"{shown} {unit}".strip()))
    return rows


def step_context(session: Session, step: LabStep, user: Any, *, message: str = "") -> dict[str, Any]:
    progress = progress_of(session)
    locked = step.pk in locked_of(session)
    last = Attempt.objects.filter(session=session, step=step).select_related("step").order_by("-created_at").first()
    owner = session.is_learner(user)
    return {
        "session": session,
        "step": step,
        "has_checks": bool(step.verify),
        "passed": progress.get(step.pk),
        "locked": locked,
        "owner": owner,
        "can_check": owner and session.state == State.RUNNING and bool(step.verify) and not locked,
        "last": attempt_context(last) if last else None,
        "message": message,
    }


def final_context(session: Session, user: Any, *, message: str = "") -> dict[str, Any]:
    lab = session.lab
    progress = progress_of(session)
    checked_steps = [step for step in lab.steps.all() if step.verify]
    last = Attempt.objects.filter(session=session, step__isnull=True).order_by("-created_at").first()
    owner = session.is_learner(user)
    complete = lab_complete(session, progress)
    return {
        "session": session,
        "has_checks": bool(lab.judge),
        "steps_total": len(checked_steps),
        "steps_passed": sum(1 for step in checked_steps if progress.get(step.pk) is True),
        "final_passed": final_passed(session),
        "complete": complete and bool(checked_steps or lab.judge),
        # Killercoda's finish page: the lab's finish text once every step (and the final check) passed.
        "show_finish": bool(lab.finish_text) and complete,
        "owner": owner,
        "can_check": owner and session.state == State.RUNNING and bool(lab.judge),
        "last": attempt_context(last) if last else None,
        "message": message,
    }
