from django.urls import path

from labs import views

app_name = "labs"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("labs/<slug:slug>/", views.lab_detail, name="detail"),
    path("labs/<slug:slug>/start/", views.start_lab, name="start"),
]
