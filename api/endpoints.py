"""The learner's endpoints: labs, my sessions, checks. The same verbs and access helper as the pages
(sessions_app.actions, sessions_app.access, judge.actions); their errors become JSON in api/v1.py."""

from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from ninja import Path, Router, Status
from ninja.pagination import paginate

from api import auth
from api.auth import ApiRequest
from api.paging import LARGEST_ID, PAGE_LIMIT, Paged
from api.schemas import (
    WRITE_ERRORS,
    AttemptOut,
    CheckIn,
    Error,
    LabDetailOut,
    LabOut,
    QuotaError,
    SessionOut,
    StartIn,
)
from audit.records import client_address
from judge import actions as judge_actions
from judge.models import Attempt
from labs.models import Lab, LabStep
from sessions_app import actions
from sessions_app.access import get_learners_session, get_session_for_user
from sessions_app.models import EndReason, Session

router = Router(tags=["learner"])


def startable_labs(user: User) -> QuerySet[Lab]:
    """What `user` may start, as start_session decides it: published labs, and every lab for staff."""
    labs = Lab.objects.all() if user.is_staff else Lab.objects.published()
    return labs.select_related("image").prefetch_related("tags")


def _sessions() -> QuerySet[Session]:
    return Session.objects.select_related("lab", "user")


def _attempts() -> QuerySet[Attempt]:
    return Attempt.objects.select_related("user", "lab", "step").defer("log")


@router.get("/labs", response=list[LabOut], auth=auth.READ, summary="Labs I may start")
@paginate(Paged, max_limit=PAGE_LIMIT)
def list_labs(request: ApiRequest) -> QuerySet[Lab]:
    return startable_labs(request.auth)


@router.get("/labs/{slug}", response={200: LabDetailOut, 404: Error}, auth=auth.READ, summary="A lab and its steps")
def get_lab(request: ApiRequest, slug: str) -> Lab:
    return get_object_or_404(startable_labs(request.auth).prefetch_related("steps"), slug=slug)


@router.get("/sessions", response=list[SessionOut], auth=auth.READ, summary="My sessions, newest first")
@paginate(Paged, max_limit=PAGE_LIMIT)
def list_sessions(request: ApiRequest) -> QuerySet[Session]:
    return _sessions().filter(user_id=request.auth.pk)


@router.post("/sessions", response={201: SessionOut, 404: Error, 409: QuotaError, 503: Error}, auth=auth.WRITE,
             summary="Start a lab",
             description="Queues the session's start, as the lab page's Start button does; poll the session "
                         "until its state is running. 409 when the quota is full (with the session that holds it), "
                         "503 when the job queue is away.")
def start_session(request: ApiRequest, payload: StartIn) -> Status[Session]:
    lab = get_object_or_404(startable_labs(request.auth), slug=payload.lab)
    session = actions.start_session(request.auth, lab, address=client_address(request))
    return Status(201, _sessions().get(pk=session.pk))


@router.get("/sessions/{session_id}", response={200: SessionOut, 404: Error}, auth=auth.READ,
            summary="A session of mine")
def get_session(request: ApiRequest, session_id: UUID) -> Session:
    return get_session_for_user(request.auth, session_id)


@router.post("/sessions/{session_id}/extend", response={200: SessionOut, **WRITE_ERRORS}, auth=auth.WRITE,
             summary="Push a running session's time limit back by the lab's extension")
def extend_session(request: ApiRequest, session_id: UUID) -> Session:
    session = get_session_for_user(request.auth, session_id)
    actions.extend_session(session, by_staff=request.auth.is_staff and not session.is_learner(request.auth),
                           actor=request.auth, address=client_address(request))
    return _sessions().get(pk=session.pk)


@router.post("/sessions/{session_id}/stop", response={200: SessionOut, **WRITE_ERRORS}, auth=auth.WRITE,
             summary="Stop a session (stopping twice is harmless)")
def stop_session(request: ApiRequest, session_id: UUID) -> Session:
    session = get_session_for_user(request.auth, session_id)
    reason = EndReason.LEARNER if session.is_learner(request.auth) else EndReason.STAFF
    actions.stop_session(session, reason=reason, asked_by="" if reason == EndReason.LEARNER
                         else f"{request.auth.get_username()}, API", actor=request.auth,
                         address=client_address(request), extra={"via": "api"})
    return _sessions().get(pk=session.pk)


@router.post("/sessions/{session_id}/checks", response={202: AttemptOut, **WRITE_ERRORS}, auth=auth.WRITE,
             summary="Run a check",
             description="Asks the judge to check a step (by its number) or the lab's final checks, as the "
                         "session page's Check button does. Only the session's learner may. Poll the attempt "
                         "until its status is done or error.")
def run_check(request: ApiRequest, session_id: UUID, payload: CheckIn) -> Status[Attempt]:
    session = get_learners_session(request.auth, session_id)
    step = None
    if payload.step is not None:
        step = get_object_or_404(LabStep, lab_id=session.lab_id, order=payload.step)
    attempt = judge_actions.request_check(session, step, request.auth)
    return Status(202, _attempts().get(pk=attempt.pk))


@router.get("/sessions/{session_id}/attempts", response={200: list[AttemptOut], 404: Error}, auth=auth.READ,
            summary="A session's check attempts, newest first")
@paginate(Paged, max_limit=PAGE_LIMIT)
def list_attempts(request: ApiRequest, session_id: UUID) -> QuerySet[Attempt]:
    session = get_session_for_user(request.auth, session_id)
    return _attempts().filter(session=session).order_by("-created_at", "-pk")


@router.get("/sessions/{session_id}/attempts/{attempt_id}", response={200: AttemptOut, 404: Error}, auth=auth.READ,
            summary="An attempt and its verdict")
def get_attempt(request: ApiRequest, session_id: UUID,
                attempt_id: int = Path(..., ge=1, le=LARGEST_ID)) -> Attempt:
    session = get_session_for_user(request.auth, session_id)
    return get_object_or_404(_attempts(), pk=attempt_id, session=session)
