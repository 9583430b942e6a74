from django.contrib import admin
from django.urls import include, path

from labsite import job_queue_pages

job_queue_pages.register_admin(admin.site)  # before admin.site.urls below reads the registry

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.github_login")),  # before allauth's: GitHub only when set up
    path("accounts/", include("allauth.urls")),
    path("rq/", include(job_queue_pages)),
    path("sessions/<uuid:pk>/hints/", include("judge.hint_urls")),
    path("sessions/<uuid:pk>/judge/", include("judge.urls")),
    path("sessions/", include("sessions_app.urls")),
    path("attempts/", include("judge.history_urls")),
    path("", include("labs.urls")),
]

handler403 = "labs.views.permission_denied"
handler404 = "labs.views.page_not_found"
handler500 = "labs.views.server_error"
