from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import get_object_or_404, redirect, render
from django.template import loader
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods

from labs.models import Lab, Tag
from labsite.http import HtmxHttpRequest
from sessions_app import actions
from sessions_app.models import Session


@require_GET
def catalog(request: HtmxHttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:100]
    difficulty = request.GET.get("difficulty", "")
    difficulty = difficulty if difficulty in Lab.Difficulty.values else ""
    tag = request.GET.get("tag", "").strip()[:40]
    labs = Lab.objects.published().search(q, difficulty, tag).select_related("image").prefetch_related("tags")
    context = {
        "labs": labs,
        "q": q,
        "difficulty": difficulty,
        "tag": tag,
        "filtered": bool(q or difficulty or tag),
        "difficulties": Lab.Difficulty.choices,
        "tags": Tag.objects.filter(labs__published=True).distinct(),
    }
    # The search form swaps only the results; a history restore needs the whole page.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "labs/catalog.html#results" if partial else "labs/catalog.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request", "HX-History-Restore-Request"])
    return response


@require_GET
def lab_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_object_or_404(Lab.objects.select_related("image").prefetch_related("tags", "steps"), slug=slug)
    if not lab.published and not request.user.is_staff:
        raise Http404("No such lab")
    live_session = None
    if request.user.is_authenticated:
        live_session = Session.objects.live().filter(user=request.user, lab=lab).first()
    return render(request, "labs/detail.html", {"lab": lab, "live_session": live_session})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def start_lab(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_object_or_404(Lab, slug=slug)
    if request.method != "POST":
        # Opened as a link, or where signing in led back to: the lab page has the Start button.
        messages.info(request, "To start this lab, press Start lab.")
        return redirect(lab)
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
    # No request context: the context processors touch the database, which may be what failed.
    # The nonce lets the page's own <style> past the Content-Security-Policy.
    return HttpResponseServerError(loader.get_template("errors/500.html").render(
        {"csp_nonce": getattr(request, "csp_nonce", "")}))
