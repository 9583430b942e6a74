"""How full a running session's disk is, for the session page (the runner's own cheap measure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runners.base import RunnerError
from sessions_app.models import Session, State

log = logging.getLogger(__name__)

WARN_AT = 0.9  # the page warns from here
FULL_AT = 0.99  # and says the disk is full from here (ext4 keeps a few blocks of its own)


@dataclass(frozen=True)
class DiskReport:
    used_mb: int
    total_mb: int
    fraction: float

    @property
    def level(self) -> str:
        """"full", "warning" or "ok"."""
        if self.fraction >= FULL_AT:
            return "full"
        return "warning" if self.fraction >= WARN_AT else "ok"

    def as_json(self) -> dict[str, object]:
        return {"used_mb": self.used_mb, "total_mb": self.total_mb, "level": self.level}


def disk_report(session: Session) -> DiskReport | None:
    """The session's disk use where its runner limits it; None otherwise (or when it cannot be read)."""
    if session.state != State.RUNNING or not session.runner_state:
        return None
    try:
        usage = session.runner().disk_usage(session.runner_state)
    except (RunnerError, OSError) as exc:
        log.warning("reading the disk use of session %s: %s", session.pk, exc)
        return None
    if usage is None or not usage.total_bytes:
        return None
    return DiskReport(used_mb=usage.used_bytes >> 20, total_mb=usage.total_bytes >> 20, fraction=usage.fraction)
