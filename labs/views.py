from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from labs.models import Lab
from sessions_app import actions


@require_GET
def catalog(request: HttpRequest) -> HttpResponse:
    labs = Lab.objects.published().prefetch_related("tags")
    return render(request, "labs/catalog.html", {"labs": labs})


@require_GET
def lab_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_object_or_404(Lab.objects.prefetch_related("tags", "steps"), slug=slug)
    if not lab.published and not request.user.is_staff:
        return page_not_found(request, None)
    return render(request, "labs/detail.html", {"lab": lab})


@login_required
@require_POST
def start_lab(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_object_or_404(Lab, slug=slug)
    try:
        session = actions.start_session(request.user, lab)
    except actions.SessionActionError as exc:
        messages.error(request, str(exc))
        if exc.session is not None:
            return redirect(exc.session)
        return redirect(lab)
    return redirect(session)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/403.html", status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    return render(request, "errors/500.html", status=500)
