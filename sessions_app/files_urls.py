"""The editor's JSON endpoints, under /sessions/<uuid>/files/ (included by sessions_app.urls)."""

from django.urls import path

from sessions_app import files_views

app_name = "files"

urlpatterns = [
    path("", files_views.list_dir, name="list"),
    path("open/", files_views.open_file, name="open"),
    path("save/", files_views.save_file, name="save"),
    path("create/", files_views.create, name="create"),
    path("rename/", files_views.rename, name="rename"),
    path("delete/", files_views.delete, name="delete"),
]
