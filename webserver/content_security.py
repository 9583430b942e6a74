"""Content-Security-Policy for the pages Django serves: django-csp, plus what only the request knows.

settings.CONTENT_SECURITY_POLICY is the strict policy of every page: scripts and styles only from
the platform's origin or carrying the response's nonce, no eval, no plugins, no framing. This
middleware adds, per request:

- connect-src: the page's own ws:/wss: origin for the consoles ('self' covers it only in CSP
  Level 3 browsers);
- frame-src: LAB_PREVIEW_HOST, when previews have a host of their own (read per request, like
  the preview routing in labsite/hosts.py);
- the few pages that need more than the strict policy, each with its reason (PAGE_EXCEPTIONS).

Web previews never pass through here: Channels serves them (labsite/asgi.py) with their own
headers, and on a preview host Django is not involved at all.
"""

from __future__ import annotations

from typing import Any

from csp.constants import SELF, UNSAFE_INLINE, WASM_UNSAFE_EVAL
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase

Directives = dict[str, list[str]]

# Additions to the policy of single pages, by URL name.
PAGE_EXCEPTIONS: dict[str, Directives] = {
    # xterm.js (its DOM renderer) colours 24-bit and contrast-adjusted text with style attributes,
    # which neither a nonce nor a hash can allow. Style elements still need the nonce.
    "sessions:detail": {"style-src-attr": [UNSAFE_INLINE]},
    # asciinema-player's terminal emulator is WebAssembly: compiling it needs 'wasm-unsafe-eval'
    # (WebAssembly only; JavaScript eval stays refused).
    "sessions:recording_replay": {"script-src": [WASM_UNSAFE_EVAL]},
}
# Whole directives replaced for the views of third-party packages, by top-level package name.
PACKAGE_REPLACEMENTS: dict[str, Directives] = {
    # django-rq's staff pages (/rq/ and its admin dashboard) carry inline scripts, styles and onclick
    # handlers in its own templates. A nonce in the list would switch 'unsafe-inline' off: none here.
    "django_rq": {"script-src": [SELF, UNSAFE_INLINE], "style-src": [SELF, UNSAFE_INLINE]},
}


def request_sources(request: HttpRequest) -> Directives:
    """The sources of this request's page beyond the static policy."""
    sources: Directives = {}
    try:
        host = request.get_host()
    except DisallowedHost:  # answered 400 already; the static policy is enough for that
        host = ""
    if host:
        sources["connect-src"] = [f"{'wss' if request.is_secure() else 'ws'}://{host}"]
    preview_host = str(settings.LAB_PREVIEW_HOST or "")
    if preview_host:
        # No scheme: a CSP host source takes the page's (http also allows its https upgrade).
        sources["frame-src"] = [preview_host]
    match = request.resolver_match
    for directive, values in PAGE_EXCEPTIONS.get(match.view_name if match else "", {}).items():
        sources[directive] = sources.get(directive, []) + values
    return sources


def package_replacements(request: HttpRequest) -> Directives:
    match = request.resolver_match
    if match is None:
        return {}
    return PACKAGE_REPLACEMENTS.get(str(getattr(match.func, "__module__", "")).split(".")[0], {})


def _merged(first: dict[str, Any], second: dict[str, Any] | None) -> dict[str, Any]:
    merged = {key: list(value) for key, value in first.items()}
    for key, value in (second or {}).items():
        merged[key] = merged.get(key, []) + list(value if isinstance(value, (list, tuple)) else [value])
    return merged


class PlatformCSPMiddleware(CSPMiddleware):
    """django-csp's middleware with the request's own sources (see the module's docstring)."""

    def get_policy_parts(self, request: HttpRequest, response: HttpResponseBase,
                         report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if report_only:
            return parts
        parts.update = _merged(request_sources(request), parts.update)
        replaced = package_replacements(request)
        if replaced:
            parts.replace = {**replaced, **(parts.replace or {})}
        return parts
