"""Serving HTTP safely: daphne with per-route body limits that refuse before reading (serve.py,
limited_http.py, body_limits.py, request_body.py), bounded JSON, the Content-Security-Policy and
405 middleware, and the typed requests views use (http.py). Imports nothing of ours."""
