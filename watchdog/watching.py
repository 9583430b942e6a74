"""One pass of the watchdog: sample the host and the running sessions, hold each figure against its
threshold (rules.py) and open, change or resolve alerts (actions.py); a session working (CPU use
above its lab's idle threshold) is marked active, as terminal input is.

The windows live in this process (a `Track` per kind and subject); open alerts live in the database.
At every pass the tracks are brought in line with the open alerts: one opened by another process is
tracked as raised (so it resolves here when the figure falls), and one resolved meanwhile (by staff)
is tracked as clear again (so it opens again if the figure still holds for the window). A restarted
watchdog therefore resolves what its predecessor opened, and only the windows start afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from labs.models import IdleSignal
from sessions_app.actions import mark_active
from sessions_app.models import Session
from watchdog import actions
from watchdog.models import Alert
from watchdog.rules import SESSION_KINDS, Threshold, Track, step
from watchdog.sampling import HostSampler, Reading, Skips, running_sessions, sample_sessions


@dataclass
class PassReport:
    readings: int = 0
    opened: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    open_now: int = 0
    working: int = 0  # sessions whose CPU use counted as activity (IdleSignal.CPU)

    def summary(self) -> str:
        return (f"readings={self.readings} opened={len(self.opened)} changed={len(self.changed)} "
                f"resolved={len(self.resolved)} open={self.open_now} working={self.working}")


def mark_working(sessions: list[Session], readings: list[Reading]) -> int:
    """Mark active (IdleSignal.CPU) the sessions whose CPU use is at or above their lab's idle_cpu_percent,
    where the lab counts CPU work: how a build or a test run with no browser open keeps its session
    from the idle timeout. The reaper reads only last_active_at, so without a running watchdog CPU
    work keeps nothing alive. Returns how many were written (the write is throttled per session)."""
    by_id = {session.pk: session for session in sessions}
    written = 0
    for reading in readings:
        if reading.kind != "session_cpu" or reading.session_id is None:
            continue
        session = by_id.get(reading.session_id)
        # The reading is the share of the lab's CPUs, as idle_cpu_percent is.
        if session is None or reading.value < session.lab.idle_cpu_percent:
            continue
        if mark_active(session, IdleSignal.CPU):
            written += 1
    return written


class Watchdog:
    def __init__(self, rules: dict[str, Threshold]) -> None:
        self.rules = rules
        self.skips = Skips()
        self.host = HostSampler(self.skips)
        self.tracks: dict[tuple[str, str], Track] = {}

    def run_once(self, now: datetime | None = None) -> PassReport:
        sessions = running_sessions()
        readings = self.host.sample(s.runner_name for s in sessions)
        now = now or timezone.now()
        readings += sample_sessions(sessions, now, self.skips)
        report = PassReport(readings=len(readings), working=mark_working(sessions, readings))
        open_alerts = self._sync_tracks()
        for reading in readings:
            self._judge(reading, now, open_alerts, report)
        self._resolve_ended_sessions({str(s.pk) for s in sessions}, open_alerts, now, report)
        report.open_now = Alert.objects.filter(status=Alert.Status.OPEN).count()
        return report

    def _sync_tracks(self) -> dict[tuple[str, str], Alert]:
        open_alerts = {(a.kind, a.subject): a for a in Alert.objects.filter(status=Alert.Status.OPEN)}
        for key, track in list(self.tracks.items()):
            if track.level and key not in open_alerts:
                self.tracks[key] = Track()
        for key, alert in open_alerts.items():
            track = self.tracks.get(key, Track())
            if track.level != alert.level:
                self.tracks[key] = Track(alert.level)
        return open_alerts

    def _judge(self, reading: Reading, now: datetime, open_alerts: dict[tuple[str, str], Alert],
               report: PassReport) -> None:
        key = (reading.kind, reading.subject)
        before = self.tracks.get(key, Track())
        result = step(before, reading.value, now, self.rules[reading.kind])
        self.tracks[key] = result.track
        where = f"{reading.kind} {reading.subject}"
        level, threshold = result.track.level, result.threshold
        if result.change == "opened" and level and threshold is not None:
            if actions.open_alert(reading, level, threshold, now):
                report.opened.append(where)
        elif result.change in ("escalated", "eased") and level and threshold is not None:
            if actions.change_level(reading, level, threshold, now):
                report.changed.append(where)
        elif result.change == "resolved" and key in open_alerts:
            if actions.resolve_alert(open_alerts[key], now, "the figure stayed below the clear point for the window",
                                     value=reading.value):
                report.resolved.append(where)
        elif level:
            actions.refresh_alert(reading, now)
        if result.track == Track():
            self.tracks.pop(key, None)  # nothing pending: no need to remember the subject

    def _resolve_ended_sessions(self, running: set[str], open_alerts: dict[tuple[str, str], Alert],
                                now: datetime, report: PassReport) -> None:
        for (kind, subject), alert in open_alerts.items():
            if kind in SESSION_KINDS and subject not in running:
                self.tracks.pop((kind, subject), None)
                if actions.resolve_alert(alert, now, "the session is no longer running"):
                    report.resolved.append(f"{kind} {subject}")
        for key in [k for k in self.tracks if k[0] in SESSION_KINDS and k[1] not in running]:
            del self.tracks[key]
