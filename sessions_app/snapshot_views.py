"""Snapshot pages: the learner's list, the panel on the session page, create / boot / delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import UserQuota
from labsite.http import AuthenticatedHttpRequest
from sessions_app import snapshots
from sessions_app.access import _get_session_for_user
from sessions_app.models import Session, Snapshot


def _my_snapshot(request: AuthenticatedHttpRequest, pk: UUID) -> Snapshot:
    """The learner's own snapshot, or 404 (the same for someone else's and for none)."""
    return get_object_or_404(snapshots.visible_snapshots(request.user), pk=pk)


def _panel_context(request: AuthenticatedHttpRequest, session: Session, **extra: Any) -> dict[str, Any]:
    return {
        "session": session,
        "panel_snapshots": list(session.snapshots.filter(owner_id=request.user.pk).order_by("-created_at")),
        "quota": UserQuota.for_user(request.user),
        **extra,
    }


def _render_panel(request: AuthenticatedHttpRequest, session: Session, **extra: Any) -> HttpResponse:
    return render(request, "sessions_app/_snapshot_panel.html", _panel_context(request, session, **extra))


@login_required
@require_GET
def snapshot_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    mine = list(snapshots.visible_snapshots(request.user).order_by("-created_at"))
    return render(request, "sessions_app/snapshots.html", {
        "snapshots": mine,
        "quota": UserQuota.for_user(request.user),
        "creating": any(s.status == Snapshot.Status.CREATING for s in mine),
    })


@login_required
@require_GET
def snapshot_panel(request: AuthenticatedHttpRequest, session_pk: UUID) -> HttpResponse:
    """The session page's snapshot panel, polled by HTMX while a snapshot is being taken."""
    session = _get_session_for_user(request.user, session_pk)
    return _render_panel(request, session)


@login_required
@require_POST
def snapshot_create(request: AuthenticatedHttpRequest, session_pk: UUID) -> HttpResponse:
    session = _get_session_for_user(request.user, session_pk)
    error = ""
    try:
        snapshot = snapshots.create_snapshot(request.user, session, request.POST.get("name", "")[:100])
    except snapshots.SnapshotError as exc:
        error = str(exc)
    if getattr(request, "htmx", False):
        return _render_panel(request, session, panel_error=error)
    if error:
        messages.error(request, error)
        return redirect(session)
    snapshot.refresh_from_db()  # without a worker the job has already run
    if snapshot.status == Snapshot.Status.FAILED:
        messages.error(request, snapshot.error or "The snapshot failed.")
    elif snapshot.status == Snapshot.Status.READY:
        messages.success(request, f"Snapshot “{snapshot.name}” saved.")
    else:
        messages.success(request, f"Snapshot “{snapshot.name}” is being saved.")
    return redirect(session)


@login_required
@require_POST
def snapshot_boot(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    snapshot = _my_snapshot(request, pk)
    try:
        session = snapshots.start_session_from_snapshot(request.user, snapshot)
    except snapshots.SnapshotError as exc:
        messages.error(request, str(exc))
        return redirect("sessions:snapshots:list")
    except snapshots.actions.SessionActionError as exc:
        messages.error(request, str(exc))
        return redirect(exc.session) if exc.session is not None else redirect("sessions:snapshots:list")
    return redirect(session)


@login_required
@require_POST
def snapshot_delete(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    snapshot = _my_snapshot(request, pk)
    try:
        snapshots.delete_snapshot(request.user, snapshot)
    except snapshots.SnapshotError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted snapshot “{snapshot.name}”.")
    return redirect("sessions:snapshots:list")
