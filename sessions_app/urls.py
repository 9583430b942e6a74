from django.urls import include, path

from sessions_app import views

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
]
