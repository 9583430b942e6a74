"""Consoles: terminals, the VNC bridge, WebSocket flow control, their consumers and routing,
terminal recordings. May import sessions_app and below."""
