"""A page for "405 Method Not Allowed": Django answers it with an empty body, a blank page in a
browser (a POST-only address such as Stop or Extend opened by its link)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string


class MethodNotAllowedPageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or response.content or "text/html" not in request.headers.get("Accept", ""):
            return response  # an API client asked: the bare answer with its Allow header serves it best
        response.content = render_to_string("errors/405.html", request=request).encode()
        response["Content-Type"] = "text/html; charset=utf-8"
        return response
