"""A learner's own ISOs: upload (streamed, size- and count-limited), list, delete, boot a VM lab from one."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from labs import vm_images
from labs.models import Image, Lab
from labsite.http import AuthenticatedHttpRequest
from sessions_app import actions, snapshots


def _my_iso(request: AuthenticatedHttpRequest, pk: int) -> Image:
    """The learner's own ISO, or 404 (the same for someone else's and for none)."""
    return get_object_or_404(vm_images.learner_isos(request.user), pk=pk)


@login_required
@require_GET
def iso_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    isos = list(vm_images.learner_isos(request.user).order_by("-created_at"))
    return render(request, "sessions_app/isos.html", {
        "isos": isos,
        "vm_labs": snapshots.vm_labs_for(request.user),
        "max_bytes": settings.LAB_ISO_MAX_BYTES,
        "per_user": settings.LAB_ISO_PER_USER,
        "can_upload": len(isos) < settings.LAB_ISO_PER_USER,
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
            iso = vm_images.store_learner_iso(request.user, upload)
        except vm_images.ImageRejected as exc:
            messages.error(request, f"ISO refused: {exc}")
        else:
            messages.success(request, f"Uploaded {iso.description} (sha256 {iso.sha256[:16]}…).")
    return redirect("sessions:isos:list")


@login_required
@require_POST
def iso_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    iso = _my_iso(request, pk)
    try:
        vm_images.delete_learner_iso(request.user, iso)
    except vm_images.ImageRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted {iso.description}.")
    return redirect("sessions:isos:list")


@login_required
@require_POST
def iso_boot(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    iso = _my_iso(request, pk)
    lab = get_object_or_404(snapshots.vm_labs_for(request.user), slug=request.POST.get("lab", ""))
    assert isinstance(lab, Lab)
    try:
        session = snapshots.start_session_from_iso(request.user, iso, lab)
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
        if exc.session is not None:
            return redirect(exc.session)
        return redirect("sessions:isos:list")
    return redirect(session)
