"""JSON endpoints for the in-browser editor (static/js/editor.js); the work is in sessions_app.workspace.

Only the session's owner and staff reach them (anyone else gets a 404, as for the session
page). Every change is a POST with a JSON body and Django's CSRF token in the X-CSRFToken
header. Errors come back as {"error": "<message for the learner>"} with a fitting status;
a save conflict (409) also carries what is on disk now.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from labsite import bounded_json
from runners.base import FileEntry
from sessions_app import actions
from sessions_app.access import _get_session_for_user
from sessions_app.workspace import SaveConflict, TooLarge, Workspace, WorkspaceError, max_bytes, version_of

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
        session = _get_session_for_user(request.user, pk)
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
    if workspace.session.user_id == request.user.pk:
        actions.record_activity(workspace.session)


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
def create(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    entry = workspace.create(data.get("path"), data.get("kind", "file"))
    _touch(request, workspace)
    # A new file is empty: its version lets the editor open it without another request.
    return JsonResponse({"entry": _entry(entry), "version": "" if entry.is_dir else version_of(b"")}, status=201)


@require_POST
@_workspace_view
def rename(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    path, new_path = workspace.clean(data.get("path")), workspace.clean(data.get("new_path"))
    workspace.rename(path, new_path)
    _touch(request, workspace)
    return JsonResponse({"path": path, "new_path": new_path})


@require_POST
@_workspace_view
def delete(request: HttpRequest, workspace: Workspace) -> JsonResponse:
    data = _body(request)
    path = workspace.clean(data.get("path"))
    workspace.delete(path)
    _touch(request, workspace)
    return JsonResponse({"path": path, "deleted": True})
