"""Hint endpoints under /sessions/<uuid>/hints/ (included by labsite.urls before the sessions URLs)."""

from django.urls import path

from judge import hint_views

app_name = "hints"

urlpatterns = [
    path("", hint_views.hint_list, name="list"),
    path("ask/", hint_views.ask, name="ask"),
]
