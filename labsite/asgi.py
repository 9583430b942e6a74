"""ASGI entry point.

HTTP goes to Django, except the web preview (`/sessions/<id>/preview/<port>/...`), which a
streaming Channels consumer proxies. WebSockets (terminal, VNC, preview upgrades) go through
Channels with the session cookie authenticated and the Origin checked against ALLOWED_HOSTS.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from sessions_app.consumers.preview import PREVIEW_PATH, PreviewHttpConsumer  # noqa: E402
from sessions_app.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                re_path(PREVIEW_PATH, AuthMiddlewareStack(PreviewHttpConsumer.as_asgi())),
                re_path(r"", django_asgi_app),  # type: ignore[arg-type]  # Channels routes to ASGI apps
            ]
        ),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
