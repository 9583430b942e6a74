"""What the audit tests share: a client from a known address and a look at the log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from audit.models import AuditEntry
from labs.models import Lab
from sessions_app.models import Session, State

ADDRESS = "203.0.113.7"  # TEST-NET-3: not the test client's default 127.0.0.1


def client_for(user: Any) -> Client:
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(user)
    return client


def running_session(user: Any, lab: Lab, runner: str = "fake") -> Session:
    now = timezone.now()
    return Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name=runner, runner_state={},
                                  started_at=now, expires_at=now + timedelta(hours=1), last_active_at=now)


def only_entry(action: str) -> AuditEntry:
    """The one entry of `action`; fails when there are none or several."""
    (entry,) = AuditEntry.objects.filter(action=action)
    return entry


def actions_logged() -> list[str]:
    return sorted(AuditEntry.objects.values_list("action", flat=True))
