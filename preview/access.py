"""Who may see a session's web preview: the owner and staff, or whoever holds a share link.

A share link names a `PreviewShare` row by a signed token; on first use the token moves from
the `?share=` parameter into a cookie scoped to that port's preview prefix. Everyone who may
not look gets the same 404, so session ids cannot be probed. Making and revoking links are the
verbs in preview/actions.py; a separate preview host's own grants are in preview/origin.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.http import Http404
from django.utils import timezone

from preview.models import PreviewShare
from sessions_app.access import get_session_for_user
from sessions_app.models import Session, State

# Kept from the module that first signed share links: another salt would void every link handed out.
SHARE_SALT = "sessions_app.preview.share"
SHARE_PARAM = "share"
SHARE_COOKIE = "lab_preview_share"
# The owner's or staff's grant on a separate preview host (preview/origin.py).
GRANT_COOKIE = "lab_preview_grant"
# The CSP source list of frame-ancestors, when the preview has an origin of its own: the platform's
# origin (only that page may frame the app), 'none', or * for our own harmless message pages.
FrameAncestors = str


class PreviewNotFound(Http404):
    """No preview here for this requester (or for anyone): always a plain 404."""


class UndeclaredPort(PreviewNotFound):
    """The port is not one of the lab's declared ports."""


class SessionNotRunning(Exception):
    """The session exists and the requester may see it, but it is not running."""


@dataclass(frozen=True)
class PreviewGrant:
    """A requester may see `port` of `session`. `share_token` is set on first use of a link."""

    session: Session
    port: int
    share: PreviewShare | None = None
    share_token: str | None = None
    # On a separate preview host (LAB_PREVIEW_HOST) only: a fresh signed grant to store in the
    # grant cookie, and who may frame the app (None: the same-origin defaults).
    new_host_grant: str | None = None
    frame_ancestors: FrameAncestors | None = None

    @property
    def prefix(self) -> str:
        return preview_prefix(self.session.pk, self.port)


def preview_prefix(session_id: UUID | str, port: int) -> str:
    """The URL prefix of one port's preview, without a trailing slash."""
    return f"/sessions/{session_id}/preview/{int(port)}"


def authorize(
    user: Any, pk: UUID | str, port: int, *, query_token: str | None = None, cookie_token: str | None = None
) -> PreviewGrant:
    """Decide whether `user` may see `port` of session `pk`; blocking (ORM), run it in a thread.

    Owner and staff always may. Anyone else needs a valid share token for exactly this session
    and port, from the `?share=` parameter (first use) or the share cookie. Raises
    PreviewNotFound (404 for everyone who may not look, so session ids cannot be probed) or
    SessionNotRunning (only once the requester is known to be allowed).
    """
    try:
        UUID(str(pk))
    except ValueError:
        raise PreviewNotFound("No such preview") from None
    session: Session | None
    try:
        session = get_session_for_user(user, pk)
    except Http404:
        session = None
    share = None
    if query_token is not None:
        share = share_from_token(query_token, pk, port)
        # For the owner an unknown `share` parameter may be the app's own; others get nothing.
        if share is None and session is None:
            raise PreviewNotFound("No such preview")
    if session is None:
        if share is None and cookie_token:
            share = share_from_token(cookie_token, pk, port)
        if share is None:
            raise PreviewNotFound("No such preview")
        session = share.session
    if port not in declared_ports(session):
        raise UndeclaredPort(f"Port {port} is not a preview port of this lab")
    if session.state != State.RUNNING:
        raise SessionNotRunning(session.get_state_display())
    token = query_token if (share is not None and query_token is not None) else None
    return PreviewGrant(session=session, port=port, share=share, share_token=token)


def declared_ports(session: Session) -> list[int]:
    return [int(p) for p in session.lab.exposed_ports or []]


def share_token(share: PreviewShare) -> str:
    """The signed token naming a share. No timestamp: the row holds the expiry, and the same
    token comes out every time, so a live link can be shown again."""
    return signing.Signer(salt=SHARE_SALT).sign_object({"share": str(share.pk)})


def share_from_token(token: str, pk: UUID | str, port: int) -> PreviewShare | None:
    """The share a token names, if it is genuine, for this session and port, and still valid."""
    try:
        data = signing.Signer(salt=SHARE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    share_id = data.get("share") if isinstance(data, dict) else None
    if not isinstance(share_id, str):
        return None
    try:
        share = PreviewShare.objects.select_related("session__lab").get(pk=share_id)
    except (PreviewShare.DoesNotExist, ValidationError, ValueError):
        return None
    if str(share.session_id) != str(pk) or share.port != int(port) or not share.is_valid():
        return None
    return share


def share_path(share: PreviewShare) -> str:
    """The link to hand out (relative to the site): the preview root with the token."""
    return f"{preview_prefix(share.session_id, share.port)}/?{SHARE_PARAM}={share_token(share)}"


def share_cookie_header(grant: PreviewGrant) -> str:
    """Set-Cookie for the share cookie: only this port's preview sees it, JavaScript never does."""
    assert grant.share is not None and grant.share_token is not None
    max_age = max(0, int((grant.share.expires_at - timezone.now()).total_seconds()))
    parts = [
        f"{SHARE_COOKIE}={grant.share_token}",
        f"Path={grant.prefix}/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if settings.SESSION_COOKIE_SECURE:
        parts.append("Secure")
    return "; ".join(parts)


def split_share_param(query_string: bytes) -> tuple[str | None, bytes]:
    """Take `share=` out of a raw query string; the rest is kept byte for byte."""
    return split_param(query_string, SHARE_PARAM)


def split_param(query_string: bytes, param: str) -> tuple[str | None, bytes]:
    """Take `param=` out of a raw query string; the rest is kept byte for byte."""
    token = None
    kept = []
    for piece in query_string.split(b"&"):
        name, _, value = piece.partition(b"=")
        if name == param.encode():
            token = unquote_plus(value.decode("ascii", "replace"))
        elif piece:
            kept.append(piece)
    return token, b"&".join(kept)
