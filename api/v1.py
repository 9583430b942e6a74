"""The JSON API at /api/v1/: its ninja instance, its routers, and how the verbs' errors answer.

A learner can fix a refusal (a full quota, a session that is not running, a locked step): 409
with the verbs' own message. The job queue away: 503 with Retry-After. Someone else's session:
404, as on the pages. Never a 500 for a request the pages would refuse.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.parser import Parser

from api import auth, endpoints, staff
from api.rate_limit import RateLimited
from jobqueue.queueing import QueueUnavailable
from judge.actions import JudgeActionError
from sessions_app.actions import JobQueueUnavailable, QuotaExceeded, SessionActionError
from webserver import bounded_json

RETRY_AFTER_SECONDS = "60"
MAX_BODY_DEPTH = 8  # the API takes flat objects; anything deeper is not a request of ours


class BoundedJSONParser(Parser):
    """Request bodies through webserver.bounded_json: a nesting limit and errors that say where."""

    def parse_body(self, request: HttpRequest) -> Any:
        return bounded_json.loads(request.body, max_depth=MAX_BODY_DEPTH)


api = NinjaAPI(
    title="Browser Labs API",
    version="1",
    description="Labs, your sessions and checks, for scripts and other systems. Authenticate with a "
                "personal API token (`Authorization: Bearer labs_…`, made on the API tokens page; read or "
                "write scope) or, from the platform's own pages, the session cookie with the CSRF token in "
                "`X-CSRFToken`.",
    urls_namespace="api",
    auth=auth.READ,  # each endpoint names its own; this one also tells the docs page to send the CSRF token
    parser=BoundedJSONParser(),
)
api.add_router("/", endpoints.router)
api.add_router("/staff/", staff.router)


def _error(request: HttpRequest, status: int, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "Not found.")


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, bounded_json.JSONInputError):  # ninja says "Cannot parse request body"; say why
        return _error(request, 400, f"The request body must be JSON: {cause.message}.")
    return _error(request, exc.status_code, str(exc.message))


@api.exception_handler(RateLimited)
def rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = _error(request, 429, str(exc.message))
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(SessionActionError)
def session_refused(request: HttpRequest, exc: SessionActionError) -> HttpResponse:
    if isinstance(exc, JobQueueUnavailable):
        return _queue_unavailable(request, str(exc))
    if isinstance(exc, QuotaExceeded):
        return _error(request, 409, str(exc), session=str(exc.session.pk) if exc.session else None)
    return _error(request, 409, str(exc))


@api.exception_handler(JudgeActionError)
def check_refused(request: HttpRequest, exc: JudgeActionError) -> HttpResponse:
    if isinstance(exc.__cause__, QueueUnavailable):
        return _queue_unavailable(request, str(exc))
    return _error(request, 409, str(exc))


def _queue_unavailable(request: HttpRequest, detail: str) -> HttpResponse:
    response = _error(request, 503, detail)
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


UNKNOWN_PATH = "No such API endpoint. The API is at /api/v1/; its schema at /api/v1/openapi.json."


@csrf_exempt  # it changes nothing, and a script's POST to a wrong address should hear 404, not a CSRF page
def unknown_path(request: HttpRequest) -> HttpResponse:
    """Every other address under /api/ (another version, a typo, a wrong method's path): the API's
    JSON 404, not the site's HTML page. Mounted after the API by labsite/urls.py."""
    response = JsonResponse({"detail": UNKNOWN_PATH}, status=404)
    response["Cache-Control"] = "no-store"
    return response
