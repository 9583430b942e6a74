"""The watchdog's verbs: open, change, refresh and resolve alerts, and tell people.

Every change is a conditional write, so two watchdogs running at once (a restart that overlaps the
old process) neither open an alert twice nor announce one twice: only the process whose write took
effect notifies. Notifying is a log line always, and the webhook when one is set (webhooks.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.records import record
from sessions_app import live
from watchdog import webhooks
from watchdog.models import Alert
from watchdog.sampling import Reading

log = logging.getLogger(__name__)


def _message(reading: Reading, threshold: float) -> str:
    return f"{reading.value:.0f}% on {reading.label}: {reading.detail} (threshold {threshold:g}%)"


def notify(event: str, alert: Alert) -> None:
    """A log line, the webhook if one is set, and for a session's alert its open pages (their
    event stream renders the status region again, which shows or drops the learner's notice)."""
    level = logging.INFO if event in ("resolved", "eased") else logging.WARNING
    log.log(level, "watchdog: alert %s %s", alert.pk, webhooks.text_of(event, alert))
    if alert.session_id is not None:
        live.publish(alert.session_id, status=True)
    webhooks.send(event, alert)


def open_alert(reading: Reading, level: str, threshold: float, now: datetime) -> Alert | None:
    """Open an alert for the reading's kind and subject (or, when one is open already, set its level)."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=reading.kind, subject=reading.subject, session_id=reading.session_id, level=level,
                value=reading.value, threshold=threshold, message=_message(reading, threshold),
                first_seen=now, last_seen=now)
    except IntegrityError:
        # Another watchdog opened it a moment ago: that one told people.
        return change_level(reading, level, threshold, now, announce=False)
    notify("opened", alert)
    return alert


def change_level(reading: Reading, level: str, threshold: float, now: datetime,
                 announce: bool = True) -> Alert | None:
    """Turn the open alert critical, or back to warning; the alert, or None if none is open."""
    alert = _open(reading.kind, reading.subject)
    if alert is None:
        return None
    changed = Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN).exclude(level=level).update(
        level=level, threshold=threshold, value=reading.value, last_seen=now, message=_message(reading, threshold))
    alert.refresh_from_db()
    if changed and announce:
        notify("escalated" if level == Alert.Level.CRITICAL else "eased", alert)
    return alert


def refresh_alert(reading: Reading, now: datetime) -> int:
    """The open alert's latest figure and last sighting (nothing to announce); rows updated."""
    alert = _open(reading.kind, reading.subject)
    if alert is None:
        return 0
    return Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN).update(
        value=reading.value, last_seen=now, message=_message(reading, alert.threshold))


def _close(alert: Alert, now: datetime, why: str, value: float | None) -> bool:
    fields: dict[str, Any] = {"status": Alert.Status.RESOLVED, "resolved_at": now, "resolution": why[:200]}
    if value is not None:
        fields.update(value=value, last_seen=now)
    if not Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN).update(**fields):
        return False
    alert.refresh_from_db()
    return True


def resolve_alert(alert: Alert, now: datetime, why: str, *, value: float | None = None) -> bool:
    """Resolve an open alert and tell people; whether this call did (False: it was resolved already)."""
    if not _close(alert, now, why, value):
        return False
    notify("resolved", alert)
    return True


def resolve_by_staff(alert: Alert, actor: Any, address: str = "") -> bool:
    """Staff resolve an alert from the admin (it opens again if the figure still holds for the window)."""
    with transaction.atomic():
        done = _close(alert, timezone.now(), f"resolved by {actor.get_username()}", None)
        if done:
            record("alert.resolve", actor=actor, target=alert, address=address,
                   extra={"kind": alert.kind, "subject": alert.subject, "level": alert.level})
    if done:
        notify("resolved", alert)  # after the commit: the webhook's wait holds no transaction
    return done


def _open(kind: str, subject: str) -> Alert | None:
    return Alert.objects.filter(kind=kind, subject=subject, status=Alert.Status.OPEN).first()
