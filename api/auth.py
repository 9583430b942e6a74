"""Who is calling the API: a personal token (`Authorization: Bearer labs_…`) or the browser's
session cookie, which must come with Django's CSRF token on anything but GET.

Both answer with the user, which ninja keeps as `request.auth`. A read token on an endpoint
that changes something is refused with 403 (not 401: the token is fine, its scope is not). An
expired token is refused with 401 and a message that says so (a script's owner must know to make
a new one, not hunt for a typo); a token past its rate limit with 429 (api/rate_limit.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from api import rate_limit
from api.models import ApiToken


class ApiRequest(HttpRequest):
    """A request past the API's auth: ninja sets `auth` to what the auth class answered, a user."""

    auth: User


READ_ONLY_REFUSAL = "This token is read-only: starting, stopping, extending and checking need a write token."


def expired_refusal(expired_at: datetime) -> str:
    return (f"This token expired on {expired_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC: make a new one on the "
            "API tokens page (/api-tokens/).")


class BearerToken(HttpBearer):
    """A personal API token; `write=True` for endpoints that change something."""

    def __init__(self, write: bool = False) -> None:
        self.write = write
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = ApiToken.objects.find(token)
        if found is None:
            return None
        if found.expires_at is not None and found.is_expired():
            raise HttpError(401, expired_refusal(found.expires_at))
        rate_limit.check(found)  # a read token hammering write endpoints counts too
        if self.write and not found.can_write:
            raise HttpError(403, READ_ONLY_REFUSAL)
        found.record_use()
        request.user = found.user
        return found.user


class SessionCookie(APIKeyCookie):
    """The signed-in browser. The CSRF check runs only when the session cookie is there, so a
    script with a wrong token hears 401, not a CSRF complaint."""

    param_name = "sessionid"  # the schema's name for it; the cookie read is SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if key and check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header.")
        return key

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if key and user is not None and user.is_authenticated:
            return user
        return None


READ = [BearerToken(), SessionCookie()]
WRITE = [BearerToken(write=True), SessionCookie()]
