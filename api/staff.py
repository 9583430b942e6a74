"""Staff endpoints: every session, stopping any of them, and everyone's attempts. Refused (403) to
anyone who is not staff, whatever their token."""

from uuid import UUID

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from ninja import Query, Router
from ninja.errors import HttpError
from ninja.pagination import paginate

from api import auth
from api.auth import ApiRequest
from api.paging import PAGE_LIMIT, Paged
from api.schemas import WRITE_ERRORS, AttemptOut, SessionOut
from audit.records import client_address
from judge.models import Attempt
from sessions_app import actions
from sessions_app.access import get_session_for_user
from sessions_app.models import EndReason, Session, State

router = Router(tags=["staff"])

STAFF_ONLY = "Staff only."


def _require_staff(request: ApiRequest) -> None:
    if not request.auth.is_staff:
        raise HttpError(403, STAFF_ONLY)


@router.get("/sessions", response=list[SessionOut], auth=auth.READ, summary="Every session, newest first")
@paginate(Paged, max_limit=PAGE_LIMIT)
def all_sessions(request: ApiRequest, state: State | None = None,
                 lab: str = Query("", pattern=r"^[-a-zA-Z0-9_]*$", description="a lab's slug"),
                 user: str = Query("", pattern=r"^[\w.@+-]*$", description="a username"),
                 live: bool = False) -> QuerySet[Session]:
    _require_staff(request)
    found = Session.objects.select_related("lab", "user").order_by("-created_at", "-pk")
    if live:
        found = found.live()
    if state:
        found = found.filter(state=state)
    if lab:
        found = found.filter(lab__slug=lab)
    if user:
        found = found.filter(user__username=user)
    return found


@router.post("/sessions/{session_id}/stop", response={200: SessionOut, **WRITE_ERRORS}, auth=auth.WRITE,
             summary="Stop anyone's session")
def stop_any_session(request: ApiRequest, session_id: UUID) -> Session:
    _require_staff(request)
    session = get_session_for_user(request.auth, session_id)
    actions.stop_session(session, reason=EndReason.STAFF, asked_by=f"{request.auth.get_username()}, API",
                         actor=request.auth, address=client_address(request), extra={"via": "api"})
    return get_object_or_404(Session.objects.select_related("lab", "user"), pk=session.pk)


@router.get("/attempts", response=list[AttemptOut], auth=auth.READ, summary="Everyone's check attempts, newest first")
@paginate(Paged, max_limit=PAGE_LIMIT)
def all_attempts(request: ApiRequest, user: str = "", lab: str = "", passed: bool | None = None) -> QuerySet[Attempt]:
    _require_staff(request)
    found = Attempt.objects.select_related("user", "lab", "step").defer("log").order_by("-created_at", "-pk")
    if user:
        found = found.filter(user__username=user)
    if lab:
        found = found.filter(lab__slug=lab)
    if passed is not None:
        found = found.filter(passed=passed)
    return found
