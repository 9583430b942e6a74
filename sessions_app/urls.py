from django.urls import path

from sessions_app import streams, views

# Mounted under /sessions/ by labsite/urls.py, which adds the preview, VM and recording pages
# to the same "sessions" namespace.
urlpatterns = [
    path("", views.my_sessions, name="list"),
    path("<uuid:pk>/", views.session_detail, name="detail"),
    path("<uuid:pk>/status/", views.session_status, name="status"),
    path("<uuid:pk>/stop/", views.stop, name="stop"),
    path("<uuid:pk>/extend/", views.extend, name="extend"),
    path("<uuid:pk>/heartbeat/", views.heartbeat, name="heartbeat"),
    # Server-Sent Events (sessions_app/streams.py); labsite/asgi.py serves them with a shared thread.
    path("<uuid:pk>/stream/", streams.session_stream, name="stream"),
    path("<uuid:pk>/output/stream/", streams.output_stream, name="output_stream"),
]

# The editor's JSON endpoints, under /sessions/<uuid>/files/.
files_patterns = [
    path("", views.list_dir, name="list"),
    path("open/", views.open_file, name="open"),
    path("save/", views.save_file, name="save"),
    path("create/", views.create_file, name="create"),
    path("rename/", views.rename_file, name="rename"),
    path("delete/", views.delete_file, name="delete"),
]

start_pattern = path("labs/<slug:slug>/start/", views.start_lab, name="start")
