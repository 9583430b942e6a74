"""django-rq's staff pages (/rq/ and the admin's "Django RQ" dashboard) only where they can work.

Without REDIS_URL jobs run in background threads of the web process (jobqueue/queueing.py): there
is no queue to show, so the admin lists no RQ link and the pages explain that instead of failing
to reach a Redis that does not exist. With Redis configured but not answering, they say so (503)
instead of a 500. A queue index past the configured queues, or the scheduler pages without
rq-scheduler installed, are a 404 rather than django-rq's IndexError or ImproperlyConfigured.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard
from django_rq.settings import get_queues_list
from django_rq.urls import urlpatterns as rq_urlpatterns

from jobqueue.queueing import REDIS_DOWN, uses_redis

log = logging.getLogger(__name__)
TEMPLATE = "admin/job_queue_unavailable.html"


@staff_member_required
def _embedded_page(request: HttpRequest) -> HttpResponse:
    return render(request, TEMPLATE, {**admin.site.each_context(request), "title": "Job queue", "embedded": True,
                                      "embedded_mode": settings.LAB_EMBEDDED_JOBS})


@staff_member_required
def _no_such_page(request: HttpRequest, reason: str) -> HttpResponse:
    raise Http404(reason)


def _missing_part(kwargs: dict[str, object]) -> str:
    """What the URL names that this install does not have, or ""."""
    queues = len(get_queues_list())
    for name in ("queue_index", "scheduler_index"):
        if name in kwargs and int(str(kwargs[name])) >= queues:
            return f"there are {queues} job queues"
    if "scheduler_index" in kwargs and importlib.util.find_spec("rq_scheduler") is None:
        return "rq-scheduler is not installed"
    return ""


def queue_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A django-rq view that explains, rather than fails, when there is no Redis to show."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not uses_redis():
            return _embedded_page(request)
        if missing := _missing_part(kwargs):
            return _no_such_page(request, missing)
        try:
            return view(request, *args, **kwargs)
        except REDIS_DOWN as exc:
            log.warning("job queue page %s: Redis does not answer: %s", request.path, exc)
            context = {**admin.site.each_context(request), "title": "Job queue", "embedded": False}
            return render(request, TEMPLATE, context, status=503)

    return guarded


def _guarded(patterns: list[URLPattern]) -> list[URLPattern]:
    return [URLPattern(p.pattern, queue_page(p.callback), p.default_args, p.name) for p in patterns]


# /rq/ (labsite/urls.py includes these under django-rq's own app name).
urlpatterns = _guarded(rq_urlpatterns)
app_name = "django_rq"


class JobQueueAdmin(QueueAdmin):
    """django-rq's dashboard in the admin, listed only when jobs go through Redis."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return uses_redis() and super().has_module_permission(request)

    def get_urls(self) -> list[URLPattern]:
        return _guarded(super().get_urls())


def register_admin(site: admin.AdminSite) -> None:
    """Put JobQueueAdmin in place of the ModelAdmin django-rq registers for its dashboard."""
    if site.is_registered(Dashboard):
        site.unregister(Dashboard)
    site.register(Dashboard, JobQueueAdmin)
