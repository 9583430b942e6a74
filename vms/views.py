"""Snapshot and ISO pages: the learner's lists, the snapshot panel on the session page, and
create / upload / boot / delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from accounts.models import UserQuota
from audit.records import client_address
from labs import vm_images
from labs.models import Image, Lab
from sessions_app.access import get_session_for_user
from sessions_app.actions import SessionActionError
from sessions_app.models import Session
from vms import actions, isos, snapshots
from vms.models import Snapshot
from webserver.http import AuthenticatedHttpRequest


def _my_snapshot(request: AuthenticatedHttpRequest, pk: UUID) -> Snapshot:
    """The learner's own snapshot, or 404 (the same for someone else's and for none)."""
    return get_object_or_404(snapshots.visible_snapshots(request.user), pk=pk)


def _run_and_redirect(
    request: AuthenticatedHttpRequest,
    verb: Callable[[], Session | None],
    *,
    back: str,
    success: str = "",
    errors: tuple[type[Exception], ...] = (SessionActionError,),
) -> HttpResponse:
    """Run one button's verb and redirect. An expected error is shown to the learner, who is sent to
    the session it names (a boot refused because one is already running) or else to `back`; on
    success `success` is shown, and the learner goes to the session the verb started, or to `back`."""
    try:
        started = verb()
    except errors as exc:
        messages.error(request, str(exc))
        named = exc.session if isinstance(exc, SessionActionError) else None
        return redirect(named if named is not None else back)
    if success:
        messages.success(request, success)
    return redirect(started if started is not None else back)


def _panel_context(request: AuthenticatedHttpRequest, session: Session, **extra: Any) -> dict[str, Any]:
    return {
        "session": session,
        "panel_snapshots": list(session.snapshots.filter(owner_id=request.user.pk).order_by("-created_at")),
        "quota": UserQuota.for_user(request.user),
        **extra,
    }


def _render_panel(request: AuthenticatedHttpRequest, session: Session, **extra: Any) -> HttpResponse:
    return render(request, "vms/_snapshot_panel.html", _panel_context(request, session, **extra))


@login_required
@require_GET
def snapshot_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    mine = list(snapshots.visible_snapshots(request.user).order_by("-created_at"))
    return render(request, "vms/snapshots.html", {
        "snapshots": mine,
        "quota": UserQuota.for_user(request.user),
        "creating": any(s.status == Snapshot.Status.CREATING for s in mine),
    })


@login_required
@require_GET
def snapshot_panel(request: AuthenticatedHttpRequest, session_pk: UUID) -> HttpResponse:
    """The session page's snapshot panel, polled by HTMX while a snapshot is being taken."""
    session = get_session_for_user(request.user, session_pk)
    return _render_panel(request, session)


@login_required
@require_POST
def snapshot_create(request: AuthenticatedHttpRequest, session_pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, session_pk)
    error = ""
    try:
        snapshot = snapshots.create_snapshot(request.user, session, request.POST.get("name", "")[:100],
                                              address=client_address(request))
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
    address = client_address(request)
    return _run_and_redirect(request, lambda: actions.start_session_from_snapshot(request.user, snapshot,
                                                                                  address=address),
                             back="sessions:snapshots:list")


@login_required
@require_POST
def snapshot_delete(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    snapshot = _my_snapshot(request, pk)
    address = client_address(request)
    return _run_and_redirect(request, lambda: snapshots.delete_snapshot(request.user, snapshot, address=address),
                             back="sessions:snapshots:list", success=f"Deleted snapshot “{snapshot.name}”.",
                             errors=(snapshots.SnapshotError,))


# -- the learner's own ISOs ---------------------------------------------------------------------


def _my_iso(request: AuthenticatedHttpRequest, pk: int) -> Image:
    """The learner's own ISO, or 404 (the same for someone else's and for none)."""
    return get_object_or_404(isos.learner_isos(request.user), pk=pk)


@login_required
@require_GET
def iso_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    mine = list(isos.learner_isos(request.user).order_by("-created_at"))
    return render(request, "vms/isos.html", {
        "isos": mine,
        "vm_labs": snapshots.vm_labs_for(request.user),
        "max_bytes": settings.LAB_ISO_MAX_BYTES,
        "per_user": settings.LAB_ISO_PER_USER,
        "can_upload": len(mine) < settings.LAB_ISO_PER_USER,
    })


@csrf_exempt  # the streaming handler must be installed before the body is read; CSRF is checked below
@login_required
@require_POST
def iso_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    vm_images.install_upload_handler(request, max_bytes=settings.LAB_ISO_MAX_BYTES)
    return _iso_upload(request)


@csrf_protect
def _iso_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    upload = request.FILES.get("file")
    rejection = vm_images.upload_rejection(request)
    if rejection:
        messages.error(request, f"ISO refused: {rejection}")
    elif not isinstance(upload, UploadedFile):
        messages.error(request, "Choose an ISO file to upload.")
    else:
        try:
            iso = isos.store_learner_iso(request.user, upload, address=client_address(request))
        except vm_images.ImageRejected as exc:
            messages.error(request, f"ISO refused: {exc}")
        else:
            messages.success(request, f"Uploaded {iso.description} (sha256 {iso.sha256[:16]}…).")
    return redirect("sessions:isos:list")


@login_required
@require_POST
def iso_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    iso = _my_iso(request, pk)
    address = client_address(request)
    return _run_and_redirect(request, lambda: isos.delete_learner_iso(request.user, iso, address=address),
                             back="sessions:isos:list", success=f"Deleted {iso.description}.",
                             errors=(vm_images.ImageRejected,))


@login_required
@require_POST
def iso_boot(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    iso = _my_iso(request, pk)
    lab = get_object_or_404(snapshots.vm_labs_for(request.user), slug=request.POST.get("lab", ""))
    assert isinstance(lab, Lab)
    address = client_address(request)
    return _run_and_redirect(request, lambda: actions.start_session_from_iso(request.user, iso, lab, address=address),
                             back="sessions:isos:list")
