"""The web preview's traffic: where a session's app is, and how requests and answers are rewritten.

`/sessions/<id>/preview/<port>/<path>` reaches `<path>` of the app a session runs on one of
its lab's declared ports (`lab.exposed_ports`). Who may look is preview/access.py; the
consumers in preview/consumers.py do the I/O; this module holds the decisions about the bytes:

- the target: asked of the session's runner, never chosen by the client;
- rewriting, so the app works under a path prefix inside an iframe on our origin and never
  sees the platform's credentials (see `upstream_request_headers` and
  `rewrite_response_headers`);
- isolation: on the platform's origin (no LAB_PREVIEW_HOST) every answer is sandboxed
  (SANDBOX_POLICY), so the app's script never runs as the platform; with a preview host the app
  has that origin to itself (preview/origin.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from django.conf import settings
from django.utils.html import escape

from preview.access import GRANT_COOKIE, SHARE_COOKIE, FrameAncestors
from runners.base import Endpoint
from sessions_app.models import Session

# App cookies whose names the platform uses (or that a path prefix would break) are stored in the
# browser under this prefix and renamed back on the way in, so both sides keep their own cookie.
MANGLED_COOKIE_PREFIX = "labpreview-"

# Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Client-supplied forwarding headers are not trusted; the proxy writes its own. `Expect:
# 100-continue` was already answered by our server, which has the body in hand.
_NOT_FORWARDED = frozenset({"forwarded", "x-real-ip", "expect"})
# Response headers that would let a learner's app set policy for the whole platform origin
# (HSTS, wiping the viewer's platform cookies, widening a service worker's scope beyond the
# prefix, alternative services, error reporting of platform pages to the learner).
_ORIGIN_WIDE_RESPONSE_HEADERS = frozenset(
    {
        "strict-transport-security",
        "clear-site-data",
        "service-worker-allowed",
        "alt-svc",
        "nel",
        "report-to",
        "x-frame-options",
    }
)
FRAME_OPTIONS = "SAMEORIGIN"
FRAME_POLICY = "frame-ancestors 'self'"
# Without a preview host of its own (LAB_PREVIEW_HOST), every preview response carries this policy:
# the app's documents get an opaque origin, so their script cannot use the viewer's platform session
# (fetch, WebSockets and cookies are cross-origin and cookie-less for it). Never allow-same-origin
# (the app would be the platform), allow-top-navigation* (a framed app could replace the platform's
# page) or allow-popups-to-escape-sandbox (its windows would run on the platform's origin). A
# policy of the app's own or a <meta> can only add restrictions: browsers enforce every policy.
SANDBOX_TOKENS = ("allow-scripts", "allow-forms", "allow-popups", "allow-modals", "allow-downloads")
SANDBOX_POLICY = "sandbox " + " ".join(SANDBOX_TOKENS)












# ---- access ----------------------------------------------------------------------------------






# ---- share links -----------------------------------------------------------------------------






















# ---- the target ------------------------------------------------------------------------------

_ENDPOINT_TTL = 5.0
_endpoints: dict[tuple[str, int], tuple[float, Endpoint]] = {}
_endpoints_lock = threading.Lock()


def resolve_endpoint(session: Session, port: int) -> Endpoint:
    """Where the session's `port` is reachable, from its runner; blocking, run it in a thread.

    Cached for a few seconds: one page load fetches many assets, and asking Docker each
    time would cost a container inspect per request.
    """
    key = (str(session.pk), int(port))
    now = time.monotonic()
    with _endpoints_lock:
        cached = _endpoints.get(key)
        if cached and cached[0] > now:
            return cached[1]
    endpoint = session.runner().endpoint(session.runner_state, int(port))
    with _endpoints_lock:
        _endpoints[key] = (now + _ENDPOINT_TTL, endpoint)
    return endpoint


def forget_endpoint(session_id: UUID | str, port: int) -> None:
    """Drop a cached endpoint (the app did not answer there; ask the runner again next time)."""
    with _endpoints_lock:
        _endpoints.pop((str(session_id), int(port)), None)


def upstream_host(port: int) -> str:
    """The Host header the app sees: itself on localhost, which dev servers accept by default
    (Django's DEBUG hosts, Vite and webpack host checks) and which is true inside the session."""
    return f"localhost:{int(port)}"


def app_netlocs(endpoint: Endpoint, port: int) -> frozenset[str]:
    """Host[:port] forms under which the app may name itself in absolute URLs."""
    hosts = {"localhost", "127.0.0.1", "[::1]", "0.0.0.0"}  # noqa: S104 - a name to recognise, not to bind
    if endpoint.host:
        hosts.add(f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host)
    forms = {f"{host}:{port}" for host in hosts}
    if port in (80, 443):
        forms |= hosts
    return frozenset(form.lower() for form in forms)


# ---- request rewriting -----------------------------------------------------------------------


def platform_cookie_names() -> frozenset[str]:
    """Cookies that belong to the platform: never forwarded to a learner's app."""
    return frozenset(
        {
            settings.SESSION_COOKIE_NAME,
            settings.CSRF_COOKIE_NAME,
            settings.LANGUAGE_COOKIE_NAME,
            "messages",
            SHARE_COOKIE,
            GRANT_COOKIE,
        }
    )


def _needs_mangling(name: str, platform: frozenset[str]) -> bool:
    # `__Host-` cookies must have Path=/, which a prefixed path cannot be.
    return name in platform or name.startswith("__Host-")


def parse_cookie_pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    """(name, value) pairs of Cookie headers, in order, duplicates kept."""
    pairs = []
    for value in values:
        for piece in value.split(";"):
            piece = piece.strip()
            if not piece:
                continue
            name, _, rest = piece.partition("=")
            pairs.append((name.strip(), rest.strip()))
    return pairs


def app_cookie_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The app's own cookies: the platform's removed, the app's renamed ones given their names back."""
    platform = platform_cookie_names()
    kept = []
    for name, value in pairs:
        if name in platform:
            continue
        if name.startswith(MANGLED_COOKIE_PREFIX):
            original = name[len(MANGLED_COOKIE_PREFIX):]
            if _needs_mangling(original, platform):
                name = original
        kept.append((name, value))
    return kept


def _csrf_header_name() -> str:
    name = settings.CSRF_HEADER_NAME  # e.g. HTTP_X_CSRFTOKEN
    return name.removeprefix("HTTP_").replace("_", "-").lower()


@dataclass
class ForwardContext:
    """What the request rewriting needs to know about the incoming connection."""

    prefix: str
    port: int
    client_ip: str | None
    scheme: str  # "http" or "https", as the browser sees us
    public_host: str | None  # the Host the browser used
    websocket: bool = False

    @property
    def public_origin(self) -> str | None:
        return f"{self.scheme}://{self.public_host}" if self.public_host else None


def public_scheme(scope: dict[str, Any]) -> str:
    """http or https as the browser sees it; a proxy's X-Forwarded-Proto only when configured."""
    scheme = scope.get("scheme") or "http"
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        header, secure_value = proxy_header
        wanted = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
        for name, value in scope.get("headers", []):
            if name.lower() == wanted:
                return "https" if value.decode("latin-1").split(",")[0].strip() == secure_value else "http"
    return scheme


def upstream_request_headers(headers: Iterable[tuple[bytes, bytes]], ctx: ForwardContext) -> list[tuple[str, str]]:
    """The headers the learner's app receives for one request.

    Removed: hop-by-hop headers (and any the Connection header names), the client's own
    forwarding headers, the platform's cookies (session, CSRF, messages, language, share) and
    the platform's CSRF token header. Kept: everything else, including Authorization (the
    platform never uses it, so it can only be meant for the app, e.g. HTTP basic auth in a
    lab). Rewritten: Host (the app on localhost), Origin when it is our own origin (so the
    app's same-origin checks pass), renamed app cookies back to their names. Added:
    X-Forwarded-For/-Proto/-Host/-Prefix.
    """
    raw = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in headers]
    connection_listed = {
        token.strip().lower() for name, value in raw if name == "connection" for token in value.split(",")
    }
    csrf_header = _csrf_header_name()
    cookie_pairs = parse_cookie_pairs(value for name, value in raw if name == "cookie")
    platform_csrf = next((v for n, v in cookie_pairs if n == settings.CSRF_COOKIE_NAME), None)
    app_pairs = app_cookie_pairs(cookie_pairs)
    app_csrf = next((v for n, v in reversed(app_pairs) if n == settings.CSRF_COOKIE_NAME), None)

    out: list[tuple[str, str]] = [("host", upstream_host(ctx.port))]
    for name, value in raw:
        if name in HOP_BY_HOP or name in connection_listed or name in _NOT_FORWARDED or name.startswith("x-forwarded-"):
            continue
        if name in ("host", "cookie"):
            continue
        if ctx.websocket and (name.startswith("sec-websocket-") or name == "content-length"):
            continue
        if name == csrf_header:
            # The app's script read "csrftoken" from document.cookie and got the platform's
            # (its own is stored renamed): never forward the platform's; send the app's instead.
            if platform_csrf is not None and value == platform_csrf:
                if app_csrf is None:
                    continue
                value = app_csrf
        elif name == "origin" and ctx.public_origin and value.lower() == ctx.public_origin.lower():
            value = f"http://{upstream_host(ctx.port)}"
        out.append((name, value))
    if app_pairs:
        out.append(("cookie", "; ".join(f"{n}={v}" for n, v in app_pairs)))
    if ctx.client_ip:
        out.append(("x-forwarded-for", ctx.client_ip))
    out.append(("x-forwarded-proto", ctx.scheme))
    if ctx.public_host:
        out.append(("x-forwarded-host", ctx.public_host))
    out.append(("x-forwarded-prefix", ctx.prefix))
    return out


# ---- response rewriting ----------------------------------------------------------------------


def _under_prefix(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def rewrite_location(value: str, prefix: str, app_hosts: frozenset[str], public_host: str | None) -> str:
    """Point a redirect (or Content-Location) that means the app back under the preview prefix.

    `http://localhost:8080/x` (the app naming itself) and `/x` (root-relative) become
    `<prefix>/x`; so does `https://<our host>/x` from an app that honours X-Forwarded-Host
    but not the prefix. Relative URLs, URLs already under the prefix and other sites are left.
    """
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return value
    netloc = parts.netloc.rpartition("@")[2].lower()
    if parts.scheme or parts.netloc:
        if parts.scheme and parts.scheme.lower() not in ("http", "https"):
            return value
        ours = public_host is not None and netloc == public_host.lower()
        if netloc not in app_hosts and not ours:
            return value
        path = parts.path or "/"
    elif parts.path.startswith("/"):
        path = parts.path
    else:
        return value
    if _under_prefix(path, prefix):
        return urlunsplit(("", "", path, parts.query, parts.fragment))
    return urlunsplit(("", "", prefix + path, parts.query, parts.fragment))


def _default_cookie_path(request_path: str) -> str:
    # RFC 6265 §5.1.4, for the path the app saw.
    if not request_path.startswith("/") or request_path.count("/") <= 1:
        return "/"
    return request_path[: request_path.rfind("/")]


def rewrite_set_cookie(value: str, prefix: str, app_request_path: str) -> str:
    """Keep an app cookie inside the preview: its Path moved under the prefix, no Domain, and a
    name the platform uses stored renamed (see MANGLED_COOKIE_PREFIX)."""
    first, *attributes = value.split(";")
    name, sep, cookie_value = first.partition("=")
    name = name.strip()
    if _needs_mangling(name, platform_cookie_names()):
        name = MANGLED_COOKIE_PREFIX + name
    kept = []
    path = None
    for attribute in attributes:
        key, _, attr_value = attribute.strip().partition("=")
        lowered = key.strip().lower()
        if lowered == "domain":
            continue  # host-only: the cookie belongs to our host, and to nothing else
        if lowered == "path":
            path = attr_value.strip()
            continue
        if attribute.strip():
            kept.append(attribute.strip())
    if not path or not path.startswith("/"):
        path = _default_cookie_path(app_request_path)
    if not _under_prefix(path, prefix):
        path = prefix + path
    return "; ".join([f"{name}{sep}{cookie_value.strip()}" if sep else name, f"Path={path}", *kept])


_FRAME_ANCESTORS = re.compile(r"^\s*frame-ancestors(\s|$)", re.I)


def _without_frame_ancestors(policy: str) -> str:
    return "; ".join(d.strip() for d in policy.split(";") if d.strip() and not _FRAME_ANCESTORS.match(d))


def rewrite_response_headers(
    headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]],
    *,
    prefix: str,
    app_hosts: frozenset[str],
    public_host: str | None,
    app_request_path: str,
    frame_ancestors: FrameAncestors | None = None,
) -> list[tuple[bytes, bytes]]:
    """The app's response headers as the browser gets them.

    Hop-by-hop and origin-wide headers are dropped; Location/Content-Location and Set-Cookie
    are moved under the prefix; the app's own frame-ancestors is replaced by ours, and
    X-Frame-Options is SAMEORIGIN, so the preview frames on the platform's pages and nowhere else.
    On a separate preview host (`frame_ancestors` given) the platform is another origin: only
    CSP frame-ancestors names it, X-Frame-Options (which cannot name an origin) is left out.
    """
    items = [
        (n.decode("latin-1") if isinstance(n, bytes) else n, v.decode("latin-1") if isinstance(v, bytes) else v)
        for n, v in headers
    ]
    connection_listed = {
        token.strip().lower() for name, value in items if name.lower() == "connection" for token in value.split(",")
    }
    out: list[tuple[str, str]] = []
    for name, value in items:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in connection_listed or lowered in _ORIGIN_WIDE_RESPONSE_HEADERS:
            continue
        if lowered in ("location", "content-location"):
            value = rewrite_location(value, prefix, app_hosts, public_host)
        elif lowered == "set-cookie":
            value = rewrite_set_cookie(value, prefix, app_request_path)
        elif lowered == "content-security-policy":
            value = _without_frame_ancestors(value)
            if not value:
                continue
        out.append((lowered, value))
    if frame_ancestors is None:
        out.append(("x-frame-options", FRAME_OPTIONS))
        out.append(("content-security-policy", FRAME_POLICY))
    else:
        out.append(("content-security-policy", f"frame-ancestors {frame_ancestors}"))
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in out]


# ---- our own pages ---------------------------------------------------------------------------


def message_page(
    status: int, title: str, message: str, *, retry_seconds: int | None = None,
    frame_ancestors: FrameAncestors | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A small self-contained page for answers the proxy gives itself (shown inside the iframe)."""
    refresh = f'<meta http-equiv="refresh" content="{int(retry_seconds)}">' if retry_seconds else ""
    body = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title>{refresh}"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<style>body{font:16px/1.5 system-ui,sans-serif;margin:0;display:grid;place-items:center;"
        "min-height:100vh;color:#1f2937;background:#f8fafc}main{max-width:34rem;padding:1.5rem}"
        "h1{font-size:1.25rem;margin:0 0 .5rem}p{margin:.25rem 0;color:#4b5563}"
        "@media (prefers-color-scheme:dark){body{background:#0f172a;color:#e5e7eb}p{color:#9ca3af}}</style>"
        f"</head><body><main><h1>{escape(title)}</h1><p>{escape(message)}</p>"
        + ("<p>This page tries again every few seconds.</p>" if retry_seconds else "")
        + "</main></body></html>"
    ).encode()
    frame_policy = FRAME_POLICY if frame_ancestors is None else f"frame-ancestors {frame_ancestors}"
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", f"default-src 'none'; style-src 'unsafe-inline'; {frame_policy}".encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if frame_ancestors is None:
        headers.insert(3, (b"x-frame-options", FRAME_OPTIONS.encode()))
    return status, headers, body
