"""The site's URLs. Each app owns its patterns; they are composed here, so no app imports a
higher one to mount its pages. The session's pages from preview, vms and consoles join the
"sessions" namespace, so their names (sessions:shares:list, sessions:recording_replay…) stay."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path

import api.v1
import consoles.urls
import labs.urls
import metrics.views
import preview.urls
import sessions_app.urls
import vms.urls
from jobqueue import job_queue_pages
from labsite import health

job_queue_pages.register_admin(admin.site)  # before admin.site.urls below reads the registry

session_patterns: list[URLPattern | URLResolver] = [
    *sessions_app.urls.urlpatterns,
    path("<uuid:pk>/files/", include((sessions_app.urls.files_patterns, "files"))),
    path("<uuid:pk>/shares/", include((preview.urls.share_patterns, "shares"))),
    preview.urls.open_pattern,
    path("snapshots/", include((vms.urls.snapshot_patterns, "snapshots"))),
    path("isos/", include((vms.urls.iso_patterns, "isos"))),
    path("recordings/", include(consoles.urls.urlpatterns)),
]

lab_patterns: list[URLPattern | URLResolver] = [*labs.urls.urlpatterns, sessions_app.urls.start_pattern]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),  # liveness and readiness probes (labsite/health.py)
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.views.metrics, name="metrics"),  # Prometheus, machines only (metrics/access.py)
    path("admin/", admin.site.urls),
    path("api/v1/", api.v1.api.urls),  # the JSON API, its schema and docs page (api/v1.py)
    re_path(r"^api/", api.v1.unknown_path),  # anything else under /api/: a JSON 404, not the HTML page
    path("api-tokens/", include("api.urls")),  # a user's personal API tokens
    path("accounts/", include("accounts.github_login")),  # before allauth's: GitHub only when set up
    path("accounts/", include("allauth.urls")),
    path("rq/", include(job_queue_pages)),
    path("sessions/<uuid:pk>/hints/", include("judge.hints.urls")),
    path("sessions/<uuid:pk>/judge/", include("judge.urls")),
    path("sessions/", include((session_patterns, "sessions"))),
    path("attempts/", include("judge.history_urls")),
    path("", include((lab_patterns, "labs"))),
]

handler403 = "labsite.errors.permission_denied"
handler404 = "labsite.errors.page_not_found"
handler500 = "labsite.errors.server_error"
