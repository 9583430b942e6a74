"""Share links for the web preview, under /sessions/<uuid>/shares/ (included by sessions_app.urls)."""

from django.urls import path

from sessions_app import share_views

app_name = "shares"

urlpatterns = [
    path("", share_views.share_list, name="list"),
    path("create/", share_views.create, name="create"),
    path("<uuid:share_id>/revoke/", share_views.revoke, name="revoke"),
]
