"""Channels consumers: terminal, graphical console (VNC) and web preview proxies."""
