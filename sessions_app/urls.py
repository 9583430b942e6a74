from django.urls import path

from sessions_app import views

app_name = "sessions"

urlpatterns = [
    path("", views.my_sessions, name="list"),
    path("<uuid:pk>/", views.session_detail, name="detail"),
    path("<uuid:pk>/status/", views.session_status, name="status"),
    path("<uuid:pk>/stop/", views.stop, name="stop"),
    path("<uuid:pk>/extend/", views.extend, name="extend"),
    path("<uuid:pk>/heartbeat/", views.heartbeat, name="heartbeat"),
]
