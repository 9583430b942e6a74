from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from labs.models import Lab, Tag
from webserver.http import HtmxHttpRequest


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
        live_session = lab.sessions.live().filter(user=request.user).first()
    return render(request, "labs/detail.html", {"lab": lab, "live_session": live_session})
