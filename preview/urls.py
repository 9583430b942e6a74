"""The preview's pages, mounted by labsite/urls.py in the "sessions" namespace."""

from django.urls import path, re_path

from preview import views

# Share links, under /sessions/<uuid>/shares/ (namespace "shares").
share_patterns = [
    path("", views.share_list, name="list"),
    path("create/", views.create, name="create"),
    path("<uuid:share_id>/revoke/", views.revoke, name="revoke"),
]

# Only reached with LAB_PREVIEW_HOST set: otherwise labsite/asgi.py sends these paths to the proxy.
open_pattern = re_path(r"^(?P<pk>[0-9a-f-]{36})/preview/(?P<port>[0-9]{1,5})(?:/(?P<path>.*))?$",
                       views.open_preview, name="preview")
