"""GET /metrics: the platform's figures in the Prometheus text format (metrics/collector.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from metrics.access import may_scrape
from metrics.collector import PlatformCollector
from metrics.watchdog_figures import WatchdogCollector


@require_http_methods(["GET", "HEAD"])
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        response = HttpResponse("Metrics are for the platform's monitoring only.\n", status=403,
                                content_type="text/plain; charset=utf-8")
    else:
        # A registry per scrape, holding only our collectors: nothing is kept between scrapes, and
        # no process-local figures (which would differ from replica to replica) are mixed in.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PlatformCollector())
        registry.register(WatchdogCollector())
        # The classic text format, or OpenMetrics when the scraper asks for it (as Prometheus does).
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = HttpResponse(encode(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
