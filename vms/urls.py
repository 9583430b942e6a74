"""Snapshot and ISO pages, mounted by labsite/urls.py under /sessions/snapshots/ and /sessions/isos/."""

from django.urls import path

from vms import views

snapshot_patterns = [
    path("", views.snapshot_list, name="list"),
    path("create/<uuid:session_pk>/", views.snapshot_create, name="create"),
    path("panel/<uuid:session_pk>/", views.snapshot_panel, name="panel"),
    path("<uuid:pk>/boot/", views.snapshot_boot, name="boot"),
    path("<uuid:pk>/delete/", views.snapshot_delete, name="delete"),
]

iso_patterns = [
    path("", views.iso_list, name="list"),
    path("upload/", views.iso_upload, name="upload"),
    path("<int:pk>/delete/", views.iso_delete, name="delete"),
    path("<int:pk>/boot/", views.iso_boot, name="boot"),
]
