"""Making the database and the runners agree after crashes, restarts or manual meddling.

- an environment a runner holds that no live session owns is removed;
- a running session whose environment vanished is marked failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction

from sessions_app.models import LIVE_STATES, EndReason, Session, State
from sessions_app.provisioning import remove_leftovers
from sessions_app.runners import all_runners
from sessions_app.runners.base import PollStatus, Runner, RunnerError

log = logging.getLogger(__name__)
CHUNK = 500


@dataclass
class ReconcileReport:
    orphans_removed: int = 0
    sessions_failed: int = 0
    errors: list[str] = field(default_factory=list)


def _live_ids(candidates: list[str]) -> set[str]:
    live: set[str] = set()
    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start:start + CHUNK]
        live.update(
            str(pk) for pk in Session.objects.filter(pk__in=chunk, state__in=LIVE_STATES).values_list("pk", flat=True)
        )
    return live


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def remove_orphans(runner: Runner, report: ReconcileReport) -> set[str]:
    """Remove environments without a live session; return the live sessions whose environment runs."""
    managed = runner.list_managed()
    ids = [env.session_id for env in managed if _is_uuid(env.session_id)]
    live = _live_ids(ids)
    present: set[str] = set()
    for env in managed:
        if env.session_id in live:
            if env.running:
                present.add(env.session_id)
            continue
        try:
            runner.remove_managed(env)
            report.orphans_removed += 1
        except RunnerError as exc:
            report.errors.append(f"{runner.name}: removing {env.ref}: {exc}")
    return present


def fail_vanished(runner: Runner, present: set[str], report: ReconcileReport) -> None:
    running = (
        Session.objects.filter(runner_name=runner.name, state=State.RUNNING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for pk in running.iterator(chunk_size=CHUNK):
        if str(pk) in present:
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
            session.transition(
                State.FAILED,
                end_reason=EndReason.VANISHED,
                error="The environment disappeared (removed outside the platform or crashed).",
                endpoints={},
            )
            session.log("Your environment disappeared; the session has ended.", level="error")
            report.sessions_failed += 1
        try:
            remove_leftovers(runner, str(pk))
        except RunnerError as exc:
            report.errors.append(f"{runner.name}: cleaning up after {pk}: {exc}")


def reconcile() -> ReconcileReport:
    report = ReconcileReport()
    for runner in all_runners():
        if not runner.available():
            continue
        try:
            present = remove_orphans(runner, report)
            fail_vanished(runner, present, report)
        except RunnerError as exc:
            report.errors.append(f"{runner.name}: {exc}")
    return report
