from django.urls import path, re_path

from sessions_app.consumers.preview import PREVIEW_PATH, PreviewWebSocketConsumer
from sessions_app.consumers.terminal import TerminalConsumer
from sessions_app.consumers.vnc import VncConsumer

websocket_urlpatterns = [
    path("ws/sessions/<uuid:pk>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/sessions/<uuid:pk>/vnc/", VncConsumer.as_asgi()),
    re_path(PREVIEW_PATH, PreviewWebSocketConsumer.as_asgi()),
]
