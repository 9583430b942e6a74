"""Which pages may open a WebSocket: exactly the origin the upgrade request was made to.

Browsers send a page's cookies with every WebSocket upgrade it asks for, whichever site the page
is on; only the Origin header tells the platform's own pages from any other page the viewer has
open, including other local origins (another port or scheme of the same host). So the Origin
must equal the origin of the request itself, decided as Django decides it for its CSRF check:

- the scheme: ws → http, wss → https, or the proxy's X-Forwarded-Proto where
  DJANGO_BEHIND_PROXY (SECURE_PROXY_SSL_HEADER) says to trust it;
- the Host header, port included (on the platform it must be in ALLOWED_HOSTS);

or, on the platform, be one of DJANGO_CSRF_TRUSTED_ORIGINS (wildcards as Django reads them). The
preview origin never opens a platform socket. Without an Origin nothing opens: every browser
sends one, and a cookie alone must never be enough.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain

from preview.origin import is_preview_origin


def handshake_request(scope: dict[str, Any]) -> ASGIRequest:
    """The upgrade request as a Django request, so that scheme and host are Django's own answer."""
    secure = scope.get("scheme") in ("wss", "https")
    http_scope = {**scope, "type": "http", "method": "GET", "scheme": "https" if secure else "http"}
    return ASGIRequest(http_scope, io.BytesIO())


def _origin_header(request: ASGIRequest) -> str | None:
    # Repeated headers arrive joined with commas, which no real origin contains.
    origin = request.META.get("HTTP_ORIGIN")
    return origin if origin and "," not in origin else None


def own_origin(request: ASGIRequest, *, check_allowed_hosts: bool = True) -> str | None:
    """scheme://host[:port] the request was sent to; None without a Host header (or, when
    `check_allowed_hosts`, with one outside ALLOWED_HOSTS)."""
    if "HTTP_HOST" not in request.META:
        return None
    if not check_allowed_hosts:
        return f"{request.scheme}://{request.META['HTTP_HOST'].lower()}"
    try:
        return f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        return None


def is_trusted_origin(origin: str) -> bool:
    """Whether DJANGO_CSRF_TRUSTED_ORIGINS names `origin` (exactly, or by a `*.` wildcard)."""
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in (entry for entry in trusted if "*" not in entry):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        urlsplit(entry).scheme == parsed.scheme and is_same_domain(parsed.netloc, urlsplit(entry).netloc.lstrip("*"))
        for entry in trusted if "*" in entry
    )


def platform_page_opened(scope: dict[str, Any]) -> bool:
    """Whether a platform WebSocket comes from one of the platform's own pages."""
    request = handshake_request(scope)
    origin = _origin_header(request)
    if origin is None or is_preview_origin(origin):
        return False
    return origin == own_origin(request) or is_trusted_origin(origin)


def preview_page_opened(scope: dict[str, Any]) -> bool:
    """Whether a WebSocket to the preview host comes from a page of the preview host itself (its
    scheme and port too). The host need not be in ALLOWED_HOSTS: asgi.py routed it here by name."""
    request = handshake_request(scope)
    origin = _origin_header(request)
    return origin is not None and is_preview_origin(origin) and origin == own_origin(
        request, check_allowed_hosts=False)
