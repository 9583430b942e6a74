"""Hint endpoints under /sessions/<uuid>/hints/ (included by labsite.urls before the sessions URLs)."""

from django.urls import path

from judge.hints import views

app_name = "hints"

urlpatterns = [
    path("", views.hint_list, name="list"),
    path("ask/", views.ask, name="ask"),
]
