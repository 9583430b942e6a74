"""ASGI entry point.

HTTP goes to Django, except the web preview (`/sessions/<id>/preview/<port>/...`), which a
streaming Channels consumer proxies. WebSockets (terminal, VNC, preview upgrades) go through
Channels with the session cookie authenticated, opened only from the platform's own origin
(labsite/origin_check.py); anything else is refused before any consumer runs.

With LAB_PREVIEW_HOST set (preview/origin.py), requests to that host reach only the
preview (HTTP and WebSocket, authorized by its own grant cookie, never by the platform's session)
and everything else there is 404; on the platform's host, preview paths go to Django, which
redirects them to the preview host, and the preview WebSocket is refused.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware  # noqa: E402
from django.urls import re_path  # noqa: E402

from consoles.routing import websocket_urlpatterns as console_websockets  # noqa: E402
from labsite import hosts  # noqa: E402
from preview.consumers import PREVIEW_PATH, PreviewHttpConsumer, PreviewWebSocketConsumer  # noqa: E402
from webserver.long_lived import get_long_lived_application  # noqa: E402

# The session page's live streams (sessions_app/streams.py) stay open for hours: Django with one
# shared thread for them, not a thread (and a database connection) per open stream.
STREAM_PATH = r"^sessions/[0-9a-f-]{36}/(?:output/)?stream/$"

# The platform's host. The preview route is skipped (left to Django's redirect) when a preview host is set.
platform_http = URLRouter(
    [
        re_path(PREVIEW_PATH, AuthMiddlewareStack(PreviewHttpConsumer.as_asgi())),
        re_path(STREAM_PATH, get_long_lived_application()),  # type: ignore[arg-type]
        re_path(r"", django_asgi_app),  # type: ignore[arg-type]  # Channels routes to ASGI apps
    ]
)


# The preview host: preview routes only, with cookies parsed but no platform session or user.
preview_http = hosts.https_only(
    URLRouter(
        [
            re_path(PREVIEW_PATH, CookieMiddleware(PreviewHttpConsumer.as_asgi())),
            re_path(r"", hosts.not_found),  # type: ignore[arg-type]
        ]
    )
)
preview_websocket = hosts.preview_origin_validator(
    CookieMiddleware(
        URLRouter(
            [
                re_path(PREVIEW_PATH, PreviewWebSocketConsumer.as_asgi()),
                re_path(r"", hosts.deny_websocket),
            ]
        )
    )
)

application = ProtocolTypeRouter(
    {
        "http": hosts.by_host(
            hosts.unless_preview_host(platform_http, django_asgi_app),  # type: ignore[arg-type]  # an ASGI app
            preview_http,
        ),
        "websocket": hosts.by_host(
            hosts.platform_origin_validator(AuthMiddlewareStack(URLRouter(
                [
                    *console_websockets,
                    re_path(PREVIEW_PATH, PreviewWebSocketConsumer.as_asgi()),
                    re_path(r"", hosts.deny_websocket),  # unknown paths: refused, not an error
                ]
            ))),
            preview_websocket,
        ),
    }
)
