"""Who may read /metrics: machines, never learners.

A request may scrape when it carries `Authorization: Bearer <LAB_METRICS_TOKEN>` (compared in
constant time), or when it comes straight from loopback or from a network in LAB_METRICS_NETWORKS.
Being signed in counts for nothing, staff included: the figures are for Prometheus, not for pages.

A request that names a bearer token is judged by the token alone: a wrong one is refused even from
loopback, so a misconfigured scraper hears 403 instead of passing by its address. A request that
came through a proxy (X-Forwarded-For, Forwarded or X-Real-IP present) is judged by the token
alone too: behind a reverse proxy on the same host every request arrives from 127.0.0.1, and the
address rules must not open /metrics to whoever the proxy serves.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest

FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
_BEARER = "bearer "


def _client_address(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.7 is 10.0.0.7
    return address


def _address_allowed(request: HttpRequest) -> bool:
    if any(header in request.headers for header in FORWARDING_HEADERS):
        return False
    address = _client_address(request)
    if address is None:
        return False
    if address.is_loopback:
        return True
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.LAB_METRICS_NETWORKS)


def may_scrape(request: HttpRequest) -> bool:
    """Whether `request` may read /metrics (see the module's docstring)."""
    authorization = request.headers.get("Authorization", "")
    if authorization[: len(_BEARER)].lower() == _BEARER:
        token = settings.LAB_METRICS_TOKEN
        offered = authorization[len(_BEARER):].strip()
        return bool(token) and hmac.compare_digest(offered.encode(), token.encode())
    return _address_allowed(request)
