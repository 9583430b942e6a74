"""The project: settings (all from environment variables), and the composition of every room:
urls.py, asgi.py, host routing (hosts.py, origin_check.py) and the site error pages. Only
these compose; no room imports labsite."""
