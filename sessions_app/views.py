"""The session pages (my sessions, the session page and its live region), Start / Stop /
Extend, and the editor's JSON endpoints."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.records import client_address
from labs.models import IdleSignal, Lab
from runners.base import FileEntry
from sessions_app import actions, admission
from sessions_app.access import get_session_for_user
from sessions_app.disk_usage import disk_report
from sessions_app.models import EndReason, Session
from sessions_app.workspace import SaveConflict, TooLarge, Workspace, WorkspaceError, max_bytes, version_of
from webserver import bounded_json
from webserver.http import AuthenticatedHttpRequest, HtmxHttpRequest


@login_required
@require_GET
def my_sessions(request: AuthenticatedHttpRequest) -> HttpResponse:
    sessions = Session.objects.filter(user_id=request.user.pk).select_related("lab")[:200]
    return render(request, "sessions_app/list.html", {"sessions": sessions})


# Progress lines the page and its status region show (the newest); the live stream adds later ones.
STATUS_EVENTS = 50


def _warning_seconds() -> int:
    """How long before the time limit the page warns (the status region carries it for session.js)."""
    return settings.LAB_SESSION_WARNING_MINUTES * 60


@login_required
@require_GET
def session_detail(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    steps = list(session.lab.steps.all())
    events = list(session.events.order_by("-created_at", "-pk")[:STATUS_EVENTS])[::-1]
    context: dict[str, object] = {
        "session": session, "steps": steps, "events": events, "warning_seconds": _warning_seconds(),
        "disk": disk_report(session), "place": admission.place_in_line(session),
    }
    return render(request, "sessions_app/detail.html", context)


def status_context(session: Session) -> dict[str, object]:
    """What the status region ("status" partial) shows: also rendered into the live stream
    (sessions_app/streams.py) when the state changes."""
    events = list(session.events.order_by("-created_at", "-pk")[:STATUS_EVENTS])[::-1]
    return {"session": session, "events": events, "warning_seconds": _warning_seconds(),
            "disk": disk_report(session), "place": admission.place_in_line(session)}


@login_required
@require_GET
def session_status(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The live region of the session page: state, progress log and time left. The page asks for it
    when its live stream is unavailable, and when time is up."""
    session = get_session_for_user(request.user, pk)
    return render(request, "sessions_app/detail.html#status", status_context(session))


@login_required
@require_POST
def stop(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Stop (or cancel) the session; back to the session page, or to "My sessions" when asked from there.

    No message says it is stopping: the state on either page says so, and a banner would stay
    "stopping" next to "Stopped" once the session page has refreshed its status.
    """
    session = get_session_for_user(request.user, pk)
    reason = EndReason.LEARNER if session.is_learner(request.user) else EndReason.STAFF
    try:
        actions.stop_session(session, reason=reason, actor=request.user, address=client_address(request))
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
    if request.POST.get("return_to") == "list":
        return redirect("sessions:list")
    return redirect(session)


@login_required
@require_POST
def extend(request: HttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    try:
        actions.extend_session(session, by_staff=request.user.is_staff and not session.is_learner(request.user),
                               actor=request.user, address=client_address(request))
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Session extended.")
    return redirect(session)


@login_required
@require_POST
def heartbeat(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The learner is using the page (activity if the lab counts the page, IdleSignal.PAGE), or answered
    the idle warning (`answer=1`: always activity). Says when the server last saw activity, from any
    signal (CPU work included), so the page warns of an idle stop only when one is coming."""
    session = get_session_for_user(request.user, pk)
    if session.is_learner(request.user):
        actions.mark_active(session, actions.ANSWER if request.POST.get("answer") == "1" else IdleSignal.PAGE)
    disk = disk_report(session)
    return JsonResponse({"state": session.state, "seconds_left": session.seconds_left(),
                         "last_active": session.last_active_at.isoformat(),
                         "disk": disk.as_json() if disk else None})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def start_lab(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_object_or_404(Lab, slug=slug)
    if request.method != "POST":
        # Opened as a link, or where signing in led back to: the lab page has the Start button.
        messages.info(request, "To start this lab, press Start lab.")
        return redirect(lab)
    try:
        session = actions.start_session(request.user, lab, address=client_address(request))
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
        if exc.session is not None:
            return redirect(exc.session)
        return redirect(lab)
    return redirect(session)


# -- the editor's JSON endpoints -------------------------------------------------------------
# JSON endpoints for the in-browser editor (static/js/editor.js); the work is in sessions_app.workspace.
#
# Only the session's owner and staff reach them (anyone else gets a 404, as for the session
# page). Every change is a POST with a JSON body and Django's CSRF token in the X-CSRFToken
# header. Errors come back as {"error": "<message for the learner>"} with a fitting status;
# a save conflict (409) also carries what is on disk now.

View = Callable[..., JsonResponse]


def _entry(entry: FileEntry) -> dict[str, Any]:
    return {
        "name": posixpath.basename(entry.path),
        "path": entry.path,
        "is_dir": entry.is_dir,
        "size": entry.size,
        "mtime": entry.mtime,
    }


def _error_response(exc: WorkspaceError) -> JsonResponse:
    body: dict[str, Any] = {"error": exc.message}
    if isinstance(exc, SaveConflict):
        body.update(
            conflict=True,
            path=exc.path,
            disk_version=exc.disk_version,
            disk_exists=exc.disk_version != "",
            disk_content=exc.disk.text if exc.disk is not None else None,
        )
    return JsonResponse(body, status=exc.status)


def _workspace_view(view: View) -> View:
    """Load the session (owner or staff, else 404) and turn workspace errors into JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, pk: UUID) -> JsonResponse:
        session = get_session_for_user(request.user, pk)
        try:
            return view(request, Workspace(session))
        except WorkspaceError as exc:
            return _error_response(exc)

    return never_cache(wrapper)


class _BadRequest(WorkspaceError):
    status = 400


# The editor sends a flat object of strings; anything nested deeper is not from the editor.
_MAX_BODY_DEPTH = 8


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = bounded_json.loads(request.body or b"{}", max_depth=_MAX_BODY_DEPTH)
    except RequestDataTooBig:
        raise TooLarge("The request is larger than the server accepts (DATA_UPLOAD_MAX_MEMORY_SIZE).") from None
    except bounded_json.JSONInputError as exc:
        raise _BadRequest(f"The request body must be JSON: {exc.message}.") from None
    if not isinstance(data, dict):
        raise _BadRequest("The request body must be a JSON object.")
    return data


def _touch(request: HttpRequest, workspace: Workspace) -> None:
    """Editing is activity: it keeps the idle timeout away, like typing in the terminal."""
    if workspace.session.is_learner(request.user):
        actions.mark_active(workspace.session, IdleSignal.EDITOR)


@require_GET
@_workspace_view
def list_dir(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    path = request.GET.get("path", "")
    entries = workspace.list_dir(path)
    return JsonResponse({"path": workspace.clean(path, allow_root=True), "entries": [_entry(e) for e in entries]})


@require_GET
@_workspace_view
def open_file(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    opened = workspace.open(request.GET.get("path", ""))
    return JsonResponse(
        {"path": opened.path, "content": opened.text, "version": opened.version, "size": opened.size,
         "max_bytes": max_bytes()}
    )


@require_POST
@_workspace_view
def save_file(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    path = workspace.clean(data.get("path"))
    version = workspace.save(path, data.get("content"), data.get("version"))
    _touch(request, workspace)
    return JsonResponse({"path": path, "version": version})


@require_POST
@_workspace_view
def create_file(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    entry = workspace.create(data.get("path"), data.get("kind", "file"))
    _touch(request, workspace)
    # A new file is empty: its version lets the editor open it without another request.
    return JsonResponse({"entry": _entry(entry), "version": "" if entry.is_dir else version_of(b"")}, status=201)


@require_POST
@_workspace_view
def rename_file(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    path, new_path = workspace.clean(data.get("path")), workspace.clean(data.get("new_path"))
    workspace.rename(path, new_path)
    _touch(request, workspace)
    return JsonResponse({"path": path, "new_path": new_path})


@require_POST
@_workspace_view
def delete_file(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    path = workspace.clean(data.get("path"))
    workspace.delete(path)
    _touch(request, workspace)
    return JsonResponse({"path": path, "deleted": True})
