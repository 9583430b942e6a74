"""ASGI routing by host for a separate preview origin (LAB_PREVIEW_HOST; preview/origin.py).

labsite/asgi.py builds the platform's routers and the preview host's, and `by_host` picks one per
connection. The setting is read per connection, so tests can change it; unset, every request
takes the platform's router, which is exactly the single-origin behaviour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.security.websocket import WebsocketDenier

from labsite import origin_check
from preview import origin, proxy

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]



class RefusedWebSocket(WebsocketDenier):
    """Refuses the handshake (HTTP 403), with no channel layer: nothing ever messages it, and with
    Redis the layer's blocking receive, cancelled a moment after it starts when the refusal ends
    the connection, could fail 5 s later with a Redis TimeoutError traceback in the log."""

    channel_layer_alias = None


deny_websocket = RefusedWebSocket.as_asgi()


def by_host(platform: ASGIApp, preview_host: ASGIApp) -> ASGIApp:
    """Requests to the preview host go to `preview_host`, all others to `platform`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        target = preview_host if origin.is_preview_host(scope) else platform
        await target(scope, receive, send)

    return app


def unless_preview_host(single_origin: ASGIApp, with_preview_host: ASGIApp) -> ASGIApp:
    """The platform host's HTTP: `single_origin` (which proxies preview paths itself) unless a
    preview host is set; then `with_preview_host` (Django, which redirects preview paths there)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        target = with_preview_host if origin.configured_host() else single_origin
        await target(scope, receive, send)

    return app


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The preview host's answer to anything but a preview: a plain 404, never a platform page."""
    status, headers, body = proxy.message_page(404, "Not found", "There is nothing here.",
                                                 frame_ancestors=origin.MESSAGE_FRAME_ANCESTORS)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def https_only(app: ASGIApp) -> ASGIApp:
    """DJANGO_SECURE_SSL_REDIRECT for the preview host, which Django's middleware never sees."""
    from django.conf import settings

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and settings.SECURE_SSL_REDIRECT and proxy.public_scheme(scope) == "http":
            host = origin.configured_host() or ""
            raw = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            location = b"https://" + host.encode() + raw + (b"?" + query if query else b"")
            await send({"type": "http.response.start", "status": 301, "headers": [(b"location", location)]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return wrapped


def _only_if(allowed: Callable[[Scope], bool], app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await (app if allowed(scope) else deny_websocket)(scope, receive, send)

    return wrapped


def platform_origin_validator(app: ASGIApp) -> ASGIApp:
    """The platform's WebSocket origin check: only the platform's own pages, never the preview
    origin (labsite/origin_check.py)."""
    return _only_if(origin_check.platform_page_opened, app)


def preview_origin_validator(app: ASGIApp) -> ASGIApp:
    """The preview host's WebSocket origin check: only pages of the preview origin itself, its
    scheme and port included."""
    return _only_if(origin_check.preview_page_opened, app)
