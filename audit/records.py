"""Writing the audit log. Every verb that changes state calls `record` as it changes the rows
(inside its transaction when it has one, so an action that rolls back leaves no entry). Callers
pass who acted (a user, or None for the system: the reaper, jobs, commands) and, when a request
asked, `client_address(request)`."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import Model
from django.http import HttpRequest

from audit.models import AuditEntry


def client_address(request: HttpRequest) -> str:
    """The address the request came from, as the server saw it (daphne puts the proxy's
    X-Forwarded-For there when run with --proxy-headers); empty when it is not an IP address."""
    try:
        return str(ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")))
    except ValueError:
        return ""


def _actor_fields(actor: Any, actor_name: str) -> dict[str, Any]:
    if actor is not None and getattr(actor, "is_authenticated", False):
        return {"actor": actor, "actor_name": actor.get_username()[:150]}
    return {"actor": None, "actor_name": actor_name[:150]}


def _target_fields(target: Model | None, label: str) -> dict[str, Any]:
    if target is None:
        return {"target_type": "", "target_id": "", "target_label": label[:200]}
    return {"target_type": target._meta.label_lower, "target_id": str(target.pk)[:64],
            "target_label": (label or str(target))[:200]}


def record(action: str, *, actor: Any = None, actor_name: str = "", target: Model | None = None,
           label: str = "", address: str = "", extra: Mapping[str, Any] | None = None) -> AuditEntry:
    """Log `action` (a dotted code like "session.start") by `actor` (a user; None is the system,
    or whoever `actor_name` names when no user object is at hand) on `target`."""
    return AuditEntry.objects.create(action=action, address=address or None, extra=dict(extra or {}),
                                     **_actor_fields(actor, actor_name), **_target_fields(target, label))


def record_many(action: str, targets: Iterable[Model], *, actor: Any = None, address: str = "",
                extra: Mapping[str, Any] | None = None) -> int:
    """Log one action on many rows (the reaper's stops, an admin action on a selection) in one
    INSERT, an entry per row; how many were logged."""
    who = _actor_fields(actor, "")
    entries = [AuditEntry(action=action, address=address or None, extra=dict(extra or {}), **who,
                          **_target_fields(target, "")) for target in targets]
    return len(AuditEntry.objects.bulk_create(entries))
