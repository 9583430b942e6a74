"""Serving HTTP safely: daphne with per-route body limits that refuse before reading (serve.py,
limited_http.py, body_limits.py, request_body.py), bounded JSON, the Content-Security-Policy and
405 middleware, the typed requests views use (http.py), and Django for responses that stay open
without a thread each (long_lived.py). Imports nothing of ours."""
