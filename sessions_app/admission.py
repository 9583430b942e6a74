"""The line for a runner's slots: a Start past the runner's capacity (RunnerCapacity) waits in
State.WAITING, and `admit` lets the oldest waiting sessions in as slots free.

Every count-and-change runs with the runner's RunnerCapacity row locked (select_for_update), so on
PostgreSQL concurrent Starts and admissions are serialised per runner: never more than
max_sessions in SLOT_STATES, and waiting sessions admitted strictly by creation time. A runner
without a row is unlimited: nothing waits there."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from runners import resolve_alias
from runners.base import RunnerError
from sessions_app import live
from sessions_app.job_requests import queue_provision
from sessions_app.models import SLOT_STATES, RunnerCapacity, Session, StaleTransition, State


def runner_of_start(name: str, image_kind: str) -> str:
    """The runner a new session will run on, as its capacity is kept: the concrete alias, not
    "default" (provisioning records the concrete one, and the slots are counted by it). Resolved
    only when some runner has a capacity, since "default" asks the Docker engine whether it is up;
    a name that does not resolve is kept as it is (provisioning then fails the session, saying why)."""
    if not RunnerCapacity.objects.exists():
        return name
    try:
        return resolve_alias(name, image_kind)
    except RunnerError:
        return name


def locked_capacity(runner: str) -> RunnerCapacity | None:
    """The runner's capacity row, locked until the transaction ends; None when unlimited.
    Call inside transaction.atomic()."""
    return RunnerCapacity.objects.select_for_update().filter(runner=runner).first()


def must_wait(capacity: RunnerCapacity | None) -> bool:
    """Whether a new session on `capacity`'s runner must wait in line: the slots are full, or
    others already wait (first come, first served). Call with the row locked (locked_capacity)."""
    if capacity is None:
        return False
    sessions = Session.objects.filter(runner_name=capacity.runner)
    return (sessions.filter(state=State.WAITING).exists()
            or sessions.filter(state__in=SLOT_STATES).count() >= capacity.max_sessions)


def admit(runner: str) -> list[Session]:
    """Admit the oldest waiting sessions of `runner` into its free slots: each moves to
    `requested` and its provision job is queued on commit. Returns the admitted sessions. The
    sessions still waiting hear that the line moved. Safe to call at any time, from anywhere."""
    admitted: list[Session] = []
    with transaction.atomic():
        capacity = locked_capacity(runner)
        sessions = Session.objects.filter(runner_name=runner)
        waiting = sessions.filter(state=State.WAITING).order_by("created_at", "pk")
        if capacity is None:
            free = None  # the limit was removed: everyone waiting goes in
        else:
            free = max(0, capacity.max_sessions - sessions.filter(state__in=SLOT_STATES).count())
            if free == 0 or not waiting.exists():
                return []
        for session in waiting[:free] if free is not None else waiting:
            try:
                session.transition(State.REQUESTED)
            except StaleTransition:
                continue  # cancelled meanwhile; its slot stays free for the next pass
            session.log("Your turn: waiting for a worker to provision your environment.")
            queue_provision(session.pk)
            admitted.append(session)
    if admitted:
        announce_line(runner)
    return admitted


def admit_all() -> int:
    """`admit` on every runner that has sessions waiting (the reaper's safety net); how many went in."""
    runners = (Session.objects.filter(state=State.WAITING).order_by()
               .values_list("runner_name", flat=True).distinct())
    return sum(len(admit(runner)) for runner in list(runners))


def announce_line(runner: str) -> None:
    """Tell the open pages of every session waiting on `runner` to show their new place."""
    ids = list(Session.objects.filter(runner_name=runner, state=State.WAITING).values_list("pk", flat=True))
    for session_id in ids:
        transaction.on_commit(partial(live.publish, session_id, status=True))


@dataclass(frozen=True)
class Place:
    """Where a waiting session stands: `position` 1 is next; `eta` is when a slot should free for it
    (the position-th soonest deadline of the sessions holding slots), None when unknown."""

    position: int
    eta: datetime | None

    @property
    def eta_minutes(self) -> int | None:
        if self.eta is None:
            return None
        return max(1, math.ceil((self.eta - timezone.now()).total_seconds() / 60))  # never promise too soon


def place_in_line(session: Session) -> Place | None:
    """The waiting session's place in its runner's line; None when it is not waiting."""
    if session.state != State.WAITING:
        return None
    sessions = Session.objects.filter(runner_name=session.runner_name)
    ahead = sessions.filter(state=State.WAITING).filter(
        _before(session.created_at, session.pk)).count()
    position = ahead + 1
    deadlines = list(sessions.filter(state__in=SLOT_STATES, expires_at__isnull=False)
                     .order_by("expires_at").values_list("expires_at", flat=True)[position - 1:position])
    return Place(position=position, eta=deadlines[0] if deadlines else None)


def _before(created_at: datetime, pk: Any) -> Q:
    return Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk)
