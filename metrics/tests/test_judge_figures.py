"""Judge figures: finished runs by verdict (a true counter: attempts are kept), their durations, the
runs still waiting, and hint requests of the window by source."""

from __future__ import annotations

import pytest

from metrics.tests.conftest import scrape

pytestmark = pytest.mark.django_db


def buckets(result, verdict: str) -> dict[str, float]:
    return {dict(key)["le"]: value for key, value in result.series("labs_judge_attempt_seconds_bucket").items()
            if dict(key)["verdict"] == verdict}


def test_finished_attempts_are_counted_by_verdict(attempts):
    result = scrape()
    assert result.value("labs_judge_attempts_total", verdict="passed") == 2
    assert result.value("labs_judge_attempts_total", verdict="failed") == 1
    assert result.value("labs_judge_attempts_total", verdict="error") == 2
    assert result.value("labs_judge_attempts_unfinished", status="queued") == 1
    assert result.value("labs_judge_attempts_unfinished", status="running") == 1


def test_attempt_durations_fill_histogram_buckets(attempts):
    result = scrape()
    # passed: 0.8 s and 4 s
    assert buckets(result, "passed") == {"0.5": 0, "1.0": 1, "2.0": 1, "5.0": 2, "10.0": 2, "30.0": 2, "60.0": 2,
                                         "120.0": 2, "300.0": 2, "600.0": 2, "1800.0": 2, "+Inf": 2}
    assert result.value("labs_judge_attempt_seconds_sum", verdict="passed") == pytest.approx(4.8)
    assert result.value("labs_judge_attempt_seconds_count", verdict="passed") == 2
    assert buckets(result, "failed")["1.0"] == 0 and buckets(result, "failed")["2.0"] == 1
    # errors: one took 70 s, the other has no duration and is counted (above) but not timed
    assert buckets(result, "error")["60.0"] == 0 and buckets(result, "error")["120.0"] == 1
    assert result.value("labs_judge_attempt_seconds_count", verdict="error") == 1
    assert result.value("labs_judge_attempt_seconds_sum", verdict="error") == pytest.approx(70.0)


def test_verdicts_without_attempts_report_zero(db):
    result = scrape()
    for verdict in ("passed", "failed", "error"):
        assert result.value("labs_judge_attempts_total", verdict=verdict) == 0
        assert result.value("labs_judge_attempt_seconds_count", verdict=verdict) == 0
        assert set(buckets(result, verdict).values()) == {0}


def test_hint_requests_of_the_window_are_counted_by_source(hints):
    # the Gemini hint of 20 minutes ago is outside the window
    result = scrape()
    assert result.series("labs_hint_requests_15m") == {
        frozenset({("source", "gemini")}): 1, frozenset({("source", "fallback")}): 2,
        frozenset({("source", "pending")}): 1,
    }
