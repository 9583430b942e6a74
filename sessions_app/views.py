from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from labsite.http import AuthenticatedHttpRequest, HtmxHttpRequest
from sessions_app import actions, share_views
from sessions_app.access import _get_session_for_user
from sessions_app.disk_usage import disk_report
from sessions_app.models import EndReason, Session


@login_required
@require_GET
def my_sessions(request: AuthenticatedHttpRequest) -> HttpResponse:
    sessions = Session.objects.filter(user_id=request.user.pk).select_related("lab")[:200]
    return render(request, "sessions_app/list.html", {"sessions": sessions})


def _warning_seconds() -> int:
    """How long before the time limit the page warns (the status region carries it for session.js)."""
    return settings.LAB_SESSION_WARNING_MINUTES * 60


@login_required
@require_GET
def session_detail(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    session = _get_session_for_user(request.user, pk)
    steps = list(session.lab.steps.all())
    events = list(session.events.order_by("-created_at", "-pk")[:50])[::-1]
    context: dict[str, object] = {
        "session": session, "steps": steps, "events": events, "warning_seconds": _warning_seconds(),
        "disk": disk_report(session),
    }
    if session.lab.exposed_ports:
        context.update(share_views.share_panel_context(request, session))  # renders without JavaScript too
    return render(request, "sessions_app/detail.html", context)


@login_required
@require_GET
def session_status(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The live region of the session page: state, progress log and time left (polled by HTMX)."""
    session = _get_session_for_user(request.user, pk)
    events = list(session.events.order_by("-created_at", "-pk")[:50])[::-1]
    return render(request, "sessions_app/detail.html#status",
                  {"session": session, "events": events, "warning_seconds": _warning_seconds(),
                   "disk": disk_report(session)})


@login_required
@require_POST
def stop(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Stop (or cancel) the session; back to the session page, or to "My sessions" when asked from there.

    No message says it is stopping: the state on either page says so, and a banner would stay
    "stopping" next to "Stopped" once the session page has refreshed its status.
    """
    session = _get_session_for_user(request.user, pk)
    reason = EndReason.LEARNER if session.user_id == request.user.pk else EndReason.STAFF
    try:
        actions.stop_session(session, reason=reason)
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
    if request.POST.get("return_to") == "list":
        return redirect("sessions:list")
    return redirect(session)


@login_required
@require_POST
def extend(request: HttpRequest, pk: UUID) -> HttpResponse:
    session = _get_session_for_user(request.user, pk)
    try:
        actions.extend_session(session, by_staff=request.user.is_staff and session.user_id != request.user.pk)
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Session extended.")
    return redirect(session)


@login_required
@require_POST
def heartbeat(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The page says the learner is still here; resets the idle countdown."""
    session = _get_session_for_user(request.user, pk)
    if session.user_id == request.user.pk:
        actions.record_activity(session)
    disk = disk_report(session)
    return JsonResponse({"state": session.state, "seconds_left": session.seconds_left(),
                         "disk": disk.as_json() if disk else None})
