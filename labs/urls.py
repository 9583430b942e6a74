from django.urls import path

from labs import views

# Mounted by labsite/urls.py as the "labs" namespace, with sessions_app's Start (labs:start).

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("labs/<slug:slug>/", views.lab_detail, name="detail"),
]
