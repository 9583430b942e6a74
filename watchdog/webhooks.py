"""The optional webhook told when an alert opens, turns critical or resolves.

    LAB_WATCHDOG_WEBHOOK_URL      where to POST (empty: no webhook, log lines only)
    LAB_WATCHDOG_WEBHOOK_FORMAT   json (default): {"event", "text", "alert": {...}}
                                  slack: {"text"} (Slack's incoming webhooks; Mattermost takes it too)
                                  telegram: {"chat_id", "text"}, the URL being the Bot API's
                                  https://api.telegram.org/bot<token>/sendMessage
    LAB_WATCHDOG_TELEGRAM_CHAT_ID the chat for telegram

One POST with a timeout, no retry: a failure is logged and the watchdog goes on (the alert stays in
the admin). The URL often carries a secret (Slack's path, Telegram's token): only its host is logged.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from watchdog.models import Alert
from watchdog.rules import KIND_LABELS

log = logging.getLogger(__name__)

FORMATS = ("json", "slack", "telegram")
EVENT_WORDS = {"opened": "opened", "escalated": "now critical", "eased": "back to warning", "resolved": "resolved"}


def text_of(event: str, alert: Alert) -> str:
    """One line for people: "[critical] Session memory opened: 96% on session … (threshold 95%)"."""
    level = "resolved" if event == "resolved" else alert.level
    return f"[{level}] {KIND_LABELS.get(alert.kind, alert.kind)} {EVENT_WORDS.get(event, event)}: {alert.message}"


def payload(fmt: str, event: str, alert: Alert) -> dict[str, Any]:
    text = text_of(event, alert)
    if fmt == "slack":
        return {"text": text}
    if fmt == "telegram":
        return {"chat_id": settings.LAB_WATCHDOG_TELEGRAM_CHAT_ID, "text": text, "disable_web_page_preview": True}
    return {
        "event": event,
        "text": text,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "subject": alert.subject,
            "session": str(alert.session_id) if alert.session_id else None,
            "level": alert.level,
            "status": alert.status,
            "value": round(alert.value, 1),
            "threshold": alert.threshold,
            "message": alert.message,
            "first_seen": alert.first_seen.isoformat(),
            "last_seen": alert.last_seen.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }


def send(event: str, alert: Alert) -> bool:
    """POST the alert's news to the webhook, if one is set; whether it was accepted. Never raises."""
    url = settings.LAB_WATCHDOG_WEBHOOK_URL
    if not url:
        return False
    fmt = settings.LAB_WATCHDOG_WEBHOOK_FORMAT
    where = urlsplit(url).netloc
    try:
        response = requests.post(url, json=payload(fmt, event, alert),
                                 timeout=settings.LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        log.warning("watchdog: the %s webhook at %s failed for alert %s (%s): %s", fmt, where, alert.pk, event,
                    type(exc).__name__)
        return False
    if not 200 <= response.status_code < 300:
        log.warning("watchdog: the %s webhook at %s answered %s for alert %s (%s): %s", fmt, where,
                    response.status_code, alert.pk, event, response.text[:200])
        return False
    return True
