"""The web preview: the proxy, who may see it, the preview host, share links, consumers and
views. May import consoles (flow control), sessions_app and below."""
