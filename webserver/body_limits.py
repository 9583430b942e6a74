"""How large a request body each route accepts, and who may send that much.

webserver/serve.py asks before it reads a single byte of a body, from the request line and
headers alone: small by default (`LAB_MAX_BODY_BYTES`, forms), sized from the setting of the
thing uploaded for the few routes that take more. A limit above the default is given only to
the audience the route is for (a signed-in user for an ISO or an editor save, staff for a VM
image in the admin), decided from the session cookie against the real session store and user;
anyone else, a forged or expired cookie included, gets the default. The web preview's limit
applies to everyone: its body goes to the learner's app as it arrives, never held here, and the
preview authorizes by its own grants.
"""

from __future__ import annotations

import enum
import html
import json
import logging
from dataclasses import dataclass
from importlib import import_module
from urllib.parse import unquote

from django.conf import settings
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.template.defaultfilters import filesizeformat
from django.urls import Resolver404, resolve

log = logging.getLogger(__name__)

# Multipart framing around an uploaded file: boundaries, part headers and the CSRF field.
MULTIPART_ALLOWANCE = 64 * 1024
# The editor sends JSON: a byte of text can take up to six (a control character as \u00XX).
JSON_ESCAPE_FACTOR = 6
LOGO_MAX_BYTES = 5 * 1024 * 1024  # the site logo staff upload in the admin (site appearance)


class Audience(enum.IntEnum):
    ANYONE = 0
    SIGNED_IN = 1
    STAFF = 2


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    audience: Audience
    refusal: str  # what the client is told when its body is larger


def _size(value: int) -> str:
    return filesizeformat(value).replace("\xa0", " ")


def default_limit() -> BodyLimit:
    limit = int(settings.LAB_MAX_BODY_BYTES)
    return BodyLimit(limit, Audience.ANYONE, f"This request is larger than the server accepts ({_size(limit)}).")


def _route_limits() -> dict[str, BodyLimit]:
    iso, image, editor = settings.LAB_ISO_MAX_BYTES, settings.LAB_VM_IMAGE_MAX_BYTES, settings.LAB_EDITOR_MAX_BYTES
    image_limit = BodyLimit(image + MULTIPART_ALLOWANCE, Audience.STAFF,
                            f"VM images uploaded here may be at most {_size(image)}; register larger ones on the "
                            "server with manage.py register_image.")
    logo_limit = BodyLimit(LOGO_MAX_BYTES + MULTIPART_ALLOWANCE, Audience.STAFF,
                           f"A site logo may be at most {_size(LOGO_MAX_BYTES)}.")
    return {
        "admin:accounts_siteappearance_add": logo_limit,
        "admin:accounts_siteappearance_change": logo_limit,
        "sessions:isos:upload": BodyLimit(iso + MULTIPART_ALLOWANCE, Audience.SIGNED_IN,
                                          f"ISO images may be at most {_size(iso)}."),
        "admin:labs_image_add": image_limit,
        "admin:labs_image_change": image_limit,
        "sessions:files:save": BodyLimit(JSON_ESCAPE_FACTOR * editor + MULTIPART_ALLOWANCE, Audience.SIGNED_IN,
                                         f"The editor saves files of at most {_size(editor)}."),
        "sessions:preview": BodyLimit(settings.LAB_PREVIEW_MAX_BODY_BYTES, Audience.ANYONE,
                                      "This request is larger than the web preview passes on "
                                      f"({_size(settings.LAB_PREVIEW_MAX_BODY_BYTES)})."),
    }


def route_limit(path: bytes, root_path: str = "") -> BodyLimit:
    """The limit of the route `path` (the request target without its query) resolves to, as Django would."""
    try:
        decoded = path.decode("ascii")
    except UnicodeDecodeError:
        return default_limit()  # daphne answers 400 to such a path
    decoded = unquote(decoded)
    if root_path and decoded.startswith(root_path):
        decoded = decoded[len(root_path):] or "/"
    try:
        match = resolve(decoded)
    except Resolver404:
        return default_limit()
    return _route_limits().get(match.view_name, default_limit())


def needs_audience(route: BodyLimit, length: int | None) -> bool:
    """Whether the answer depends on who sends it: the route allows more than the default only
    to some, and the body (chunked: of unknown length) may need more than the default."""
    default = default_limit().max_bytes
    return route.audience > Audience.ANYONE and route.max_bytes > default and (length is None or length > default)


def limit_for(route: BodyLimit, audience: Audience) -> BodyLimit:
    """The route's limit if the sender is of its audience (or it is no larger than the default), else the default."""
    default = default_limit()
    if route.max_bytes <= default.max_bytes or audience >= route.audience:
        return route
    who = "staff" if route.audience is Audience.STAFF else "signed-in users"
    return BodyLimit(default.max_bytes, Audience.ANYONE,
                     f"This request is larger than the server accepts ({_size(default.max_bytes)}); larger ones "
                     f"here are only for {who}. {route.refusal}")


def session_key(cookie_headers: list[bytes]) -> str:
    """The session cookie's value in the request's Cookie headers ("" if none), parsed as Django does."""
    cookies = parse_cookie("; ".join(header.decode("latin-1") for header in cookie_headers))
    return cookies.get(settings.SESSION_COOKIE_NAME, "")


def audience_of(key: str) -> Audience:
    """Who holds the session `key`: checked against the session store and the user, as Django's
    authentication does (hash of the password, active account). Blocking: run it in a thread."""
    from django.contrib.auth import get_user
    from django.db import close_old_connections

    close_old_connections()
    try:
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
        user = get_user(request)
        if not user.is_authenticated or not user.is_active:
            return Audience.ANYONE
        return Audience.STAFF if user.is_staff else Audience.SIGNED_IN
    finally:
        close_old_connections()


def wants_json(accept: bytes, content_type: bytes) -> bool:
    return b"application/json" in accept.lower() or content_type.lower().startswith(b"application/json")


def error_response(status: int, title: str, message: str, as_json: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the server's own short answer; the connection closes after it."""
    if as_json:
        body = json.dumps({"error": message}).encode()
        content_type = b"application/json"
    else:
        body = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    return headers, body
