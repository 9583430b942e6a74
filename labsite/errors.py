"""The site's own 403, 404 and 500 pages (handler403/404/500 in labsite/urls.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/403.html", status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # No request context: the context processors touch the database, which may be what failed.
    # The nonce lets the page's own <style> past the Content-Security-Policy.
    return HttpResponseServerError(loader.get_template("errors/500.html").render(
        {"csp_nonce": getattr(request, "csp_nonce", "")}))
