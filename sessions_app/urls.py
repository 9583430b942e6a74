from django.urls import include, path, re_path

from sessions_app import preview_views, views

app_name = "sessions"

urlpatterns = [
    path("", views.my_sessions, name="list"),
    path("<uuid:pk>/", views.session_detail, name="detail"),
    path("<uuid:pk>/status/", views.session_status, name="status"),
    path("<uuid:pk>/stop/", views.stop, name="stop"),
    path("<uuid:pk>/extend/", views.extend, name="extend"),
    path("<uuid:pk>/heartbeat/", views.heartbeat, name="heartbeat"),
    path("<uuid:pk>/shares/", include("sessions_app.share_urls")),
    path("snapshots/", include("sessions_app.snapshot_urls")),
    path("isos/", include("sessions_app.iso_urls")),
    path("<uuid:pk>/files/", include("sessions_app.files_urls")),
    path("recordings/", include("sessions_app.recording_views")),
    # Only with LAB_PREVIEW_HOST set: otherwise labsite/asgi.py sends these paths to the proxy.
    re_path(r"^(?P<pk>[0-9a-f-]{36})/preview/(?P<port>[0-9]{1,5})(?:/(?P<path>.*))?$", preview_views.open_preview,
            name="preview"),
]
