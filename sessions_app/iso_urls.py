from django.urls import path

from sessions_app import iso_views

app_name = "isos"

urlpatterns = [
    path("", iso_views.iso_list, name="list"),
    path("upload/", iso_views.iso_upload, name="upload"),
    path("<int:pk>/delete/", iso_views.iso_delete, name="delete"),
    path("<int:pk>/boot/", iso_views.iso_boot, name="boot"),
]
