"""The consoles' WebSocket routes (labsite/asgi.py mounts them behind the platform's origin check)."""

from django.urls import path

from consoles.consumers import TerminalConsumer, VncConsumer

websocket_urlpatterns = [
    path("ws/sessions/<uuid:pk>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/sessions/<uuid:pk>/vnc/", VncConsumer.as_asgi()),
]
