"""Verbs on share links: make one for a port of a running session, revoke one. Views and the
admin both call these, so every change is logged on the session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit.records import record
from preview.access import declared_ports
from preview.models import PreviewShare
from sessions_app.models import Session, State

SHARE_DEFAULT_MINUTES = 60


def share_max_minutes() -> int:
    """The longest a share link may live (setting LAB_SHARE_MAX_MINUTES, default 24 h)."""
    return int(settings.LAB_SHARE_MAX_MINUTES)


class ShareError(Exception):
    """A share request the user can fix; the message is shown to them."""


def create_share(session: Session, port: int, minutes: int, created_by: Any, *, address: str = "") -> PreviewShare:
    """A new share link for one declared port of a running session, valid for `minutes`
    (audit-logged with the client's `address`; never the link itself)."""
    if session.state != State.RUNNING:
        raise ShareError("Share links can only be made while the session is running.")
    if port not in declared_ports(session):
        raise ShareError(f"Port {port} is not a preview port of this lab.")
    if not 1 <= minutes <= share_max_minutes():
        raise ShareError(f"A share link lasts from 1 to {share_max_minutes()} minutes.")
    share = PreviewShare.objects.create(
        session=session, port=port, created_by=created_by, expires_at=timezone.now() + timedelta(minutes=minutes)
    )
    session.log(f"Preview of port {port} shared for {minutes} min by {created_by.get_username()}.")
    record("share.create", actor=created_by, target=share, label=f"port {port} of {session}", address=address,
           extra={"session": str(session.pk), "port": port, "minutes": minutes})
    return share


def revoke_share(share: PreviewShare, by: Any, *, address: str = "") -> PreviewShare:
    """End a share link now. Revoking twice is harmless (and logged once, with the client's `address`)."""
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.save(update_fields=["revoked_at"])
        share.session.log(f"Preview share of port {share.port} revoked by {by.get_username()}.")
        record("share.revoke", actor=by, target=share, label=f"port {share.port} of {share.session}",
               address=address, extra={"session": str(share.session_id), "port": share.port})
    return share
