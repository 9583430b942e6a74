"""`{% session_resource_notice session disk %}`: on the session page, tells the learner when their
session is near its memory or disk limit (an open session alert), with the latest sampled figure.

`disk` is the page's own disk report (sessions_app/disk_usage.py): where the page already shows the
disk, no second line says it again.
"""

from __future__ import annotations

from typing import Any

from django import template

from sessions_app.models import Session, State
from watchdog.models import Alert, SessionSample

register = template.Library()


@register.inclusion_tag("watchdog/_session_notice.html", takes_context=True)
def session_resource_notice(context: template.Context, session: Session, disk: Any = None) -> dict[str, Any]:
    if session.state != State.RUNNING:
        return {"notices": []}
    alerts = {a.kind: a for a in Alert.objects.filter(session=session, status=Alert.Status.OPEN,
                                                      kind__in=("session_memory", "session_disk"))}
    if not alerts or (disk and set(alerts) == {"session_disk"}):
        return {"notices": []}  # nothing to say (or only what the page says already): one query
    sample = SessionSample.objects.filter(session=session).first()
    notices = []
    memory = alerts.get("session_memory")
    if memory:
        percent = sample.memory_percent if sample and sample.memory_percent is not None else memory.value
        notices.append({"what": "memory", "level": memory.level, "percent": round(percent),
                        "used_mb": sample.memory_bytes >> 20 if sample else None,
                        "limit_mb": sample.memory_limit_bytes >> 20 if sample else None})
    storage = alerts.get("session_disk")
    if storage and not disk:
        percent = sample.disk_percent if sample and sample.disk_percent is not None else storage.value
        notices.append({"what": "disk", "level": storage.level, "percent": round(percent),
                        "used_mb": (sample.disk_used_bytes or 0) >> 20 if sample else None,
                        "limit_mb": (sample.disk_total_bytes or 0) >> 20 if sample else None})
    request = context.get("request")
    return {"notices": notices, "own": session.is_learner(getattr(request, "user", None))}
