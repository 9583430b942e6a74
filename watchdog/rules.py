"""When a figure raises, changes or resolves an alert: thresholds held for a window, with hysteresis.

Pure functions over plain values (no database, no clock of their own), so the behaviour is tested
without waiting. Every figure is a percentage: of the host's CPUs, memory or disk, of a session's
memory, disk or CPU limit.

Each kind of alert has a `Threshold`: a `warning` and an optional `critical` level, a window and a
clear margin. A level is raised once the figure has stayed at or above it for the whole window, and
dropped once the figure has stayed below (level - clear_margin) for the whole window. Anything in
between changes nothing, so a figure hovering around a level neither raises nor resolves over and
over, and a spike shorter than the window raises nothing. A window of 0 acts on the first sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured

WARNING, CRITICAL = "warning", "critical"
LEVELS = (WARNING, CRITICAL)  # lowest first

# What is watched; the admin and the messages use these names.
KIND_LABELS = {
    "host_cpu": "Host CPU",
    "host_memory": "Host memory",
    "host_disk_data": "Data directory disk",
    "host_disk_engine": "Docker engine storage",
    "session_memory": "Session memory",
    "session_disk": "Session disk",
    "session_cpu": "Session CPU",
}
SESSION_KINDS = frozenset(kind for kind in KIND_LABELS if kind.startswith("session_"))

# Defaults, in percent and seconds; LAB_WATCHDOG_THRESHOLDS overrides any of them per kind. A
# session sits at its CPU limit while it compiles: only a long stretch of it is news, and never
# critical. Memory and disk near their limit are what the learner notices first (the page tells them).
DEFAULTS: dict[str, dict[str, float | None]] = {
    "host_cpu": {"warning": 90, "critical": 98, "window_seconds": 300, "clear_margin": 10},
    "host_memory": {"warning": 90, "critical": 95, "window_seconds": 120, "clear_margin": 5},
    "host_disk_data": {"warning": 85, "critical": 95, "window_seconds": 60, "clear_margin": 5},
    "host_disk_engine": {"warning": 85, "critical": 95, "window_seconds": 60, "clear_margin": 5},
    "session_memory": {"warning": 90, "critical": 98, "window_seconds": 30, "clear_margin": 5},
    "session_disk": {"warning": 90, "critical": 98, "window_seconds": 30, "clear_margin": 5},
    "session_cpu": {"warning": 95, "critical": None, "window_seconds": 600, "clear_margin": 15},
}


@dataclass(frozen=True)
class Threshold:
    warning: float
    critical: float | None
    window_seconds: float
    clear_margin: float

    def bar(self, level: str) -> float | None:
        """The figure at which `level` is raised (None: this kind has no such level)."""
        return self.warning if level == WARNING else self.critical


@dataclass(frozen=True)
class Track:
    """What is known of one subject: the level raised (None: no alert) and, per level, since when
    the figure has pointed the other way (above a level not raised, below a raised one's clear point)."""

    level: str | None = None
    since: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    track: Track
    # None, or what happened to the alert: "opened", "escalated", "eased" (critical back to warning), "resolved"
    change: str | None
    threshold: float | None  # the bar of the level now raised (of the one dropped, when resolved)


def _raised(level: str | None) -> tuple[str, ...]:
    return LEVELS[: LEVELS.index(level) + 1] if level else ()


def step(track: Track, value: float, now: datetime, rule: Threshold) -> Step:
    """The track after one more sample of the figure, and what that changes."""
    raised = set(_raised(track.level))
    since = dict(track.since)
    for level in LEVELS:
        bar = rule.bar(level)
        if bar is None:
            since.pop(level, None)
            raised.discard(level)
            continue
        pointing = value < bar - rule.clear_margin if level in raised else value >= bar
        if not pointing:
            since.pop(level, None)  # the figure came back: the window starts again next time
            continue
        started = since.setdefault(level, now)
        if (now - started).total_seconds() >= rule.window_seconds:
            del since[level]
            if level in raised:
                raised.discard(level)
            else:
                raised.add(level)
    # Critical implies warning; the bars are ordered, so this only matters when settings change.
    new_level = CRITICAL if CRITICAL in raised else WARNING if WARNING in raised else None
    change = _change(track.level, new_level)
    threshold = rule.bar(new_level) if new_level else (rule.bar(track.level) if track.level else None)
    return Step(Track(new_level, since), change, threshold)


def _change(before: str | None, after: str | None) -> str | None:
    if before == after:
        return None
    if before is None:
        return "opened"
    if after is None:
        return "resolved"
    return "escalated" if LEVELS.index(after) > LEVELS.index(before) else "eased"


# ---- configuration ----------------------------------------------------------------------------

_KEYS = {"warning", "critical", "window_seconds", "clear_margin"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def thresholds(overrides: Any) -> dict[str, Threshold]:
    """Every kind's Threshold: DEFAULTS with `overrides` (LAB_WATCHDOG_THRESHOLDS) laid over them.
    ImproperlyConfigured, saying what is wrong, for anything but a well-formed object."""
    name = "LAB_WATCHDOG_THRESHOLDS"
    if not isinstance(overrides, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object of alert kinds, e.g. {{"session_memory": '
                                   f'{{"warning": 80, "critical": 95, "window_seconds": 60}}}}')
    result: dict[str, Threshold] = {}
    for kind in overrides:
        if kind not in KIND_LABELS:
            raise ImproperlyConfigured(f"{name}: unknown alert kind {kind!r} (known: {', '.join(KIND_LABELS)})")
        if not isinstance(overrides[kind], dict) or not set(overrides[kind]) <= _KEYS:
            raise ImproperlyConfigured(f"{name}[{kind!r}] must be an object with any of {', '.join(sorted(_KEYS))}")
    for kind, defaults in DEFAULTS.items():
        merged = {**defaults, **overrides.get(kind, {})}
        warning, critical = merged["warning"], merged["critical"]
        window, margin = merged["window_seconds"], merged["clear_margin"]
        if not _number(warning) or warning <= 0:
            raise ImproperlyConfigured(f"{name}[{kind!r}]: warning must be a positive percentage")
        if critical is not None and (not _number(critical) or critical < warning):
            raise ImproperlyConfigured(f"{name}[{kind!r}]: critical must be null or a percentage at least "
                                       f"the warning level ({warning:g})")
        if not _number(window) or window < 0:
            raise ImproperlyConfigured(f"{name}[{kind!r}]: window_seconds must be 0 or more")
        if not _number(margin) or not 0 <= margin < warning:
            raise ImproperlyConfigured(f"{name}[{kind!r}]: clear_margin must be 0 or more and below the "
                                       f"warning level ({warning:g})")
        result[kind] = Threshold(float(warning), None if critical is None else float(critical), float(window),
                                 float(margin))
    return result
