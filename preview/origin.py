"""The web preview on an origin of its own (setting LAB_PREVIEW_HOST).

On the platform's origin a learner's app, framed in a staff member's page, could read platform
pages with the viewer's session (same-origin fetch, CSRF tokens in HTML). With LAB_PREVIEW_HOST
set, previews are served only there: the platform's cookies are host-only, so they never reach
that host, and the browser's same-origin policy keeps the app's script out of the platform.

How the owner or staff get in (share links work as before, see preview.proxy):

1. The page frames `/sessions/<id>/preview/<port>/` on the platform; the platform (signed-in
   viewer, a same-origin request) redirects to the preview host with `?lab-preview-token=`: a
   signed token bound to session, user, port and the platform's origin, valid EMBED_MAX_AGE s.
2. The preview host checks it, sets the grant cookie (a re-signed grant, scoped to that port's
   path, never forwarded to the app) and redirects to the clean address.
3. Every later request and WebSocket upgrade is authorized by the grant cookie, checked against
   the database each time: session running, user active and still owner or staff, password
   unchanged. Stopping the session or taking staff status away ends access at once.

Routing by host (labsite/asgi.py, labsite/hosts.py): on the preview host only
preview routes exist (anything else is 404), WebSockets must come from the preview origin and
platform sessions are never read; on the platform host, preview paths redirect here (HTTP) or
are refused (WebSocket), and the terminal and VNC WebSockets refuse the preview origin.

`deploy/scripts/run.sh` sets LAB_PREVIEW_HOST=localhost:<port> (the platform on 127.0.0.1): another
host name, because cookies are scoped by host name, not port. Without LAB_PREVIEW_HOST nothing here
applies: previews stay on the platform's origin, sandboxed (preview.proxy.SANDBOX_POLICY).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.http import Http404, HttpRequest
from django.utils.crypto import constant_time_compare
from django.utils.encoding import escape_uri_path

from preview import access, proxy
from preview.access import GRANT_COOKIE, PreviewGrant, PreviewNotFound
from sessions_app.access import get_session_for_user

EMBED_PARAM = "lab-preview-token"
EMBED_SALT = "sessions_app.preview_origin.embed"
GRANT_SALT = "sessions_app.preview_origin.grant"
EMBED_MAX_AGE = 60  # seconds: the token only has to survive one redirect
GRANT_MAX_AGE = 12 * 3600  # a reload through the platform page mints a new one
# Our own pages (404, "not running") carry nothing worth clickjacking; framing them anywhere lets the
# platform page show them even when no grant names its origin (yet).
MESSAGE_FRAME_ANCESTORS = "*"
_ORIGIN = re.compile(r"^https?://[a-z0-9.\-\[\]:]+$")
# Fetch metadata of a request the platform page itself made (its iframe, its "open in new tab"
# link) or the viewer typed; anything else must not mint a grant (see platform_redirect).
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


# ---- which host -----------------------------------------------------------------------------


def configured_host() -> str | None:
    """LAB_PREVIEW_HOST (lower-cased), or None when previews share the platform's origin."""
    return str(settings.LAB_PREVIEW_HOST or "").lower() or None


def frame_sandbox() -> str:
    """The `sandbox` attribute of the session page's preview iframe.

    On the platform's origin the same tokens as the preview's policy, so the frame is sandboxed
    even before its first response. On a preview host allow-same-origin too: that origin is the
    app's own (its cookies, its storage, its grant), and the sandbox still keeps it from
    navigating the platform's page.
    """
    tokens = proxy.SANDBOX_TOKENS if configured_host() is None else (*proxy.SANDBOX_TOKENS, "allow-same-origin")
    return " ".join(tokens)


def _matches(netloc: str, scheme: str) -> bool:
    """Whether `netloc` (a Host header or an Origin's host[:port]) names the preview host.

    Without a port in LAB_PREVIEW_HOST any port matches (the host name is what sets it apart);
    with one, the port must match too, the scheme's default standing in for a missing one."""
    host = configured_host()
    if host is None or not netloc:
        return False
    try:
        wanted = urlsplit("//" + host)
        given = urlsplit("//" + netloc.strip().lower())
        wanted_port, given_port = wanted.port, given.port
    except ValueError:
        return False
    if given.hostname != wanted.hostname:
        return False
    if wanted_port is None:
        return True
    default = 443 if scheme in ("https", "wss") else 80
    return (given_port or default) == wanted_port


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def is_preview_host(scope: dict[str, Any]) -> bool:
    """Whether an ASGI request was made to the preview host."""
    return _matches(_header(scope, b"host") or "", proxy.public_scheme(scope))


def is_preview_origin(origin: str | bytes | None) -> bool:
    """Whether an Origin header names the preview host (so: a learner's app wrote the request)."""
    if isinstance(origin, bytes):
        origin = origin.decode("latin-1")
    if not origin:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and _matches(parts.netloc, parts.scheme)


def _secure_context(scope: dict[str, Any]) -> bool:
    """Whether browsers accept a Secure cookie from this request: HTTPS, or a loopback host
    (which browsers treat as secure even over plain HTTP)."""
    if settings.SESSION_COOKIE_SECURE or proxy.public_scheme(scope) == "https":
        return True
    hostname = urlsplit("//" + (_header(scope, b"host") or "")).hostname or ""
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# ---- tokens and grants ----------------------------------------------------------------------


def _claims_for(session_id: UUID | str, user: Any, port: int, platform_origin: str) -> dict[str, Any]:
    # The auth hash changes with the password: a changed password ends the grants made before.
    return {"s": str(session_id), "u": user.pk, "p": int(port), "o": platform_origin,
            "h": user.get_session_auth_hash()}


def embed_token(session_id: UUID | str, user: Any, port: int, platform_origin: str) -> str:
    """The short-lived token the platform puts in the preview host's address."""
    return signing.dumps(_claims_for(session_id, user, port, platform_origin), salt=EMBED_SALT)


def _load(token: str, salt: str, max_age: int, pk: UUID | str, port: int) -> dict[str, Any] | None:
    """The claims of a genuine, unexpired token for exactly this session and port."""
    try:
        claims = signing.loads(token, salt=salt, max_age=max_age)
    except (signing.BadSignature, ValueError):  # SignatureExpired is a BadSignature
        return None
    if not isinstance(claims, dict) or claims.get("s") != str(pk) or claims.get("p") != int(port):
        return None
    if not isinstance(claims.get("o"), str) or not _ORIGIN.match(claims["o"]):
        return None
    return claims


def _user_for(claims: dict[str, Any]) -> Any | None:
    """The grant's user if still active and with the password the grant was made under."""
    user_id = claims.get("u")
    if not isinstance(user_id, (int, str)):
        return None
    try:
        user = get_user_model().objects.get(pk=user_id)
    except (get_user_model().DoesNotExist, ValueError, TypeError):
        return None
    if not user.is_active or not constant_time_compare(str(claims.get("h", "")), user.get_session_auth_hash()):
        return None
    return user


def authorize(
    pk: UUID | str,
    port: int,
    *,
    embed: str | None,
    grant_cookie: str | None,
    query_token: str | None,
    cookie_token: str | None,
) -> PreviewGrant:
    """Decide a request on the preview host; blocking (ORM), run it in a thread.

    Owner or staff by an embed token (first request) or the grant cookie, re-checked against
    the database; else a share link, exactly as on the platform (`preview.authorize`). Raises
    like `preview.authorize`; a bad or expired token simply counts for nothing.
    """
    claims = _load(embed, EMBED_SALT, EMBED_MAX_AGE, pk, port) if embed else None
    fresh = claims is not None
    if claims is None and grant_cookie:
        claims = _load(grant_cookie, GRANT_SALT, GRANT_MAX_AGE, pk, port)
    user = _user_for(claims) if claims is not None else None
    grant = access.authorize(user, pk, port, query_token=query_token, cookie_token=cookie_token)
    if grant.share is not None or claims is None:
        # Share viewers open the preview at the top; nobody may frame it.
        return replace(grant, frame_ancestors="'none'")
    new = signing.dumps(claims, salt=GRANT_SALT) if fresh else None
    return replace(grant, new_host_grant=new, frame_ancestors=claims["o"])


def grant_cookie_header(grant: PreviewGrant, scope: dict[str, Any]) -> str:
    """Set-Cookie for a new grant: this port's preview only, never JavaScript.

    The preview is framed by the platform, usually another site (127.0.0.1 and localhost, or a
    separate domain): browsers send neither SameSite=Lax cookies nor unpartitioned third-party
    ones to such a frame. A partitioned cookie is kept per top-level site, so it works in the
    platform's frame and nowhere else. Partitioned needs Secure, which browsers accept only over
    HTTPS or on loopback; elsewhere (plain HTTP) SameSite=Lax, which works when the preview host
    is a subdomain of the platform's site.
    """
    assert grant.new_host_grant is not None
    parts = [f"{GRANT_COOKIE}={grant.new_host_grant}", f"Path={grant.prefix}/", f"Max-Age={GRANT_MAX_AGE}",
             "HttpOnly"]
    if _secure_context(scope):
        parts += ["Secure", "SameSite=None", "Partitioned"]
    else:
        parts.append("SameSite=Lax")
    return "; ".join(parts)


# ---- the platform side ----------------------------------------------------------------------


def public_url(request: HttpRequest, path: str) -> str:
    """An absolute URL for a preview path: on the preview host when there is one."""
    host = configured_host()
    if host is None:
        return request.build_absolute_uri(path)
    return f"{request.scheme}://{host}{path}"


def platform_redirect(request: HttpRequest, pk: UUID | str, port: int) -> str:
    """Where a preview address on the platform's host sends the browser (LAB_PREVIEW_HOST set).

    The owner and staff go to the preview host with a fresh embed token, if the platform page
    itself asked (fetch metadata): a learner's app must not get a viewer's browser to mint a
    grant for another session's preview. Otherwise they go to the session page. A share link
    made before the preview host existed goes there unchanged. Anyone else gets a 404.
    """
    host = configured_host()
    if host is None:
        raise Http404("Previews are served by the proxy")  # labsite/asgi.py routes them; never here
    path = escape_uri_path(request.path)
    prefix = access.preview_prefix(pk, port)
    if path == prefix:
        path += "/"
    query = request.META.get("QUERY_STRING", "")
    try:
        session = get_session_for_user(request.user, pk)
    except Http404:
        session = None
    if session is not None and port in access.declared_ports(session):
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in _OWN_FETCH_SITES:
            return session.get_absolute_url()
        origin = f"{request.scheme}://{request.get_host()}"
        token = embed_token(session.pk, request.user, port, origin.lower())
        query = "&".join(filter(None, [query, urlencode({EMBED_PARAM: token})]))
    elif access.SHARE_PARAM not in request.GET:
        raise PreviewNotFound("No such preview")
    return f"{request.scheme}://{host}{path}" + (f"?{query}" if query else "")
