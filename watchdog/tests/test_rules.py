"""Thresholds held for a window, with hysteresis (watchdog/rules.py): pure functions, no waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured

from watchdog.rules import CRITICAL, DEFAULTS, WARNING, Threshold, Track, step, thresholds

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULE = Threshold(warning=90, critical=98, window_seconds=60, clear_margin=10)


def run(values: list[tuple[int, float]], rule: Threshold = RULE, track: Track | None = None) -> list:
    """Feed (seconds after T0, value) samples; every change with the second it happened at."""
    track = track or Track()
    changes = []
    for second, value in values:
        result = step(track, value, T0 + timedelta(seconds=second), rule)
        track = result.track
        if result.change:
            changes.append((second, result.change, track.level, result.threshold))
    return changes


def test_a_level_is_raised_only_once_it_has_held_for_the_whole_window():
    assert run([(0, 95), (30, 95), (59, 95)]) == []
    assert run([(0, 95), (30, 95), (60, 95)]) == [(60, "opened", WARNING, 90)]


def test_a_spike_shorter_than_the_window_raises_nothing():
    assert run([(0, 99), (20, 99), (40, 50), (70, 99), (100, 99)]) == []


def test_a_figure_that_dips_restarts_the_window():
    # above at 0, below at 30 (window restarts), above again from 40: opened at 100, not at 60
    assert run([(0, 95), (30, 80), (40, 95), (60, 95), (99, 95), (100, 95)]) == [(100, "opened", WARNING, 90)]


def test_it_resolves_only_after_staying_below_the_clear_point_for_the_window():
    changes = run([(0, 95), (60, 95),      # opened
                   (70, 85), (200, 85),     # below 90 but not below 80 (90 - margin): stays open
                   (210, 79), (260, 79),    # below the clear point for 50 s: still open
                   (270, 79)])              # 60 s: resolved
    assert changes == [(60, "opened", WARNING, 90), (270, "resolved", None, 90)]


def test_a_figure_hovering_around_the_level_does_not_flap():
    # Alternating just above and just below 90 every 10 s for an hour: one alert, never resolved.
    samples = [(0, 95), (60, 95)] + [(70 + 10 * i, 91 if i % 2 else 89) for i in range(360)]
    assert run(samples) == [(60, "opened", WARNING, 90)]
    # and below the clear point, but only in short dips, never resolves either
    samples = [(0, 95), (60, 95)] + [(70 + 10 * i, 95 if i % 3 else 50) for i in range(360)]
    assert run(samples) == [(60, "opened", WARNING, 90)]


def test_it_escalates_to_critical_and_eases_back_with_the_same_rules():
    changes = run([(0, 99), (60, 99),      # both levels held for the window at once: opened critical
                   (70, 93), (130, 93),     # below 98 but above 88 (98 - margin): stays critical
                   (140, 87), (200, 87),    # below 88 for the window: back to warning
                   (210, 99), (270, 99)])   # critical again
    assert changes == [(60, "opened", CRITICAL, 98), (200, "eased", WARNING, 90), (270, "escalated", CRITICAL, 98)]


def test_a_warning_turns_critical_after_the_critical_level_held_for_its_own_window():
    changes = run([(0, 92), (60, 92), (70, 99), (100, 99), (130, 99)])
    assert changes == [(60, "opened", WARNING, 90), (130, "escalated", CRITICAL, 98)]


def test_a_rule_without_a_critical_level_stops_at_warning():
    rule = Threshold(warning=95, critical=None, window_seconds=10, clear_margin=15)
    assert run([(0, 100), (10, 100), (20, 100)], rule) == [(10, "opened", WARNING, 95)]


def test_a_window_of_zero_acts_on_the_first_sample():
    rule = Threshold(warning=50, critical=None, window_seconds=0, clear_margin=5)
    assert run([(0, 60), (1, 40)], rule) == [(0, "opened", WARNING, 50), (1, "resolved", None, 50)]


def test_a_track_rebuilt_from_an_open_alert_resolves_when_the_figure_falls():
    # After a restart the watchdog knows the level from the open alert, not the windows.
    assert run([(0, 10), (60, 10)], track=Track(CRITICAL)) == [(60, "resolved", None, 98)]


def test_thresholds_lay_overrides_over_the_defaults():
    rules = thresholds({"session_memory": {"warning": 80, "window_seconds": 5}})
    assert rules["session_memory"] == Threshold(80, DEFAULTS["session_memory"]["critical"], 5, 5)
    assert rules["host_cpu"] == Threshold(90, 98, 300, 10)
    assert set(rules) == set(DEFAULTS)


@pytest.mark.parametrize(("overrides", "says"), [
    ([], "must be a JSON object"),
    ({"session_ram": {}}, "unknown alert kind 'session_ram'"),
    ({"session_memory": {"warn": 80}}, "must be an object with any of"),
    ({"session_memory": {"warning": 0}}, "warning must be a positive percentage"),
    ({"session_memory": {"warning": "80"}}, "warning must be a positive percentage"),
    ({"session_memory": {"warning": 90, "critical": 80}}, "critical must be null or a percentage at least"),
    ({"session_memory": {"window_seconds": -1}}, "window_seconds must be 0 or more"),
    ({"session_memory": {"clear_margin": 95}}, "clear_margin must be 0 or more and below"),
    ({"session_memory": {"window_seconds": True}}, "window_seconds must be 0 or more"),
])
def test_malformed_thresholds_are_refused_with_what_is_wrong(overrides, says):
    with pytest.raises(ImproperlyConfigured, match=says):
        thresholds(overrides)
