"""The web preview's address on the platform's host when previews have a host of their own.

With LAB_PREVIEW_HOST unset, labsite/asgi.py hands preview paths to the proxy and this view is
never reached. With it set, the platform host only points the browser to the preview host
(sessions_app.preview_origin.platform_redirect decides where, and with which token).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_safe

from sessions_app import preview_origin


@require_safe
def open_preview(request: HttpRequest, pk: str, port: str, path: str | None = None) -> HttpResponse:
    response = HttpResponseRedirect(preview_origin.platform_redirect(request, pk, int(port)))
    response["Cache-Control"] = "no-store"  # the address carries a one-minute token
    response["Referrer-Policy"] = "no-referrer"
    return response
