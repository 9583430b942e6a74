from django.urls import path

from sessions_app import snapshot_views

app_name = "snapshots"

urlpatterns = [
    path("", snapshot_views.snapshot_list, name="list"),
    path("create/<uuid:session_pk>/", snapshot_views.snapshot_create, name="create"),
    path("panel/<uuid:session_pk>/", snapshot_views.snapshot_panel, name="panel"),
    path("<uuid:pk>/boot/", snapshot_views.snapshot_boot, name="boot"),
    path("<uuid:pk>/delete/", snapshot_views.snapshot_delete, name="delete"),
]
