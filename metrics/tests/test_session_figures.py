"""Session figures, from the rows: live sessions, start requests and their outcome, request → running
times and stops by reason, the last three over the recent window."""

from __future__ import annotations

import pytest

from metrics.tests.conftest import scrape

pytestmark = pytest.mark.django_db


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def test_live_sessions_are_counted_by_state(sessions):
    assert scrape().series("labs_sessions") == {
        labels(state="requested"): 1, labels(state="provisioning"): 1, labels(state="running"): 3,
        labels(state="stopping"): 1, labels(state="waiting"): 0,
    }


def test_running_sessions_are_counted_by_lab_and_runner(sessions):
    # "slow" names no runner: it counts under its lab's (fake)
    assert scrape().series("labs_sessions_running") == {
        labels(lab="hello-shell", runner="fake"): 2, labels(lab="docker-basics", runner="docker"): 1,
    }


def test_start_requests_of_the_window_are_counted_by_runner_and_outcome(sessions):
    # "old-idle" and "ancient" were requested before the window
    assert scrape().series("labs_session_starts_15m") == {
        labels(runner="fake", outcome="started"): 3,
        labels(runner="fake", outcome="pending"): 1,
        labels(runner="fake", outcome="cancelled"): 1,
        labels(runner="docker", outcome="started"): 1,
        labels(runner="docker", outcome="failed"): 1,
        labels(runner="docker", outcome="pending"): 1,
    }


def test_request_to_running_times_fill_histogram_buckets(sessions):
    result = scrape()
    fake = {dict(key)["le"]: value for key, value in result.series("labs_session_start_seconds_15m_bucket").items()
            if dict(key)["runner"] == "fake"}
    # 3 s, 45 s and 10 s
    assert fake == {"1.0": 0, "2.0": 0, "5.0": 1, "10.0": 2, "20.0": 2, "30.0": 2, "60.0": 3, "120.0": 3,
                    "300.0": 3, "+Inf": 3}
    docker = {dict(key)["le"]: value for key, value in result.series("labs_session_start_seconds_15m_bucket").items()
              if dict(key)["runner"] == "docker"}
    assert docker["1.0"] == 0 and docker["2.0"] == 1 and docker["+Inf"] == 1
    assert result.value("labs_session_start_seconds_15m_gcount", runner="fake") == 3
    assert result.value("labs_session_start_seconds_15m_gsum", runner="fake") == pytest.approx(58.0)
    assert result.value("labs_session_start_seconds_15m_gsum", runner="docker") == pytest.approx(1.5)


def test_stops_of_the_window_are_counted_by_reason(sessions):
    # "cancelled" is still stopping, "ancient" ended before the window; every reason has a series
    assert scrape().series("labs_session_stops_15m") == {
        labels(reason="learner"): 1, labels(reason="idle"): 1, labels(reason="error"): 1,
        labels(reason="staff"): 0, labels(reason="expired"): 0, labels(reason="vanished"): 0,
        labels(reason="none"): 0,
    }


def test_no_sessions_give_zeros_not_errors(db):
    result = scrape()
    assert result.status == 200
    assert result.series("labs_sessions") == {labels(state=s): 0
                                              for s in ("waiting", "requested", "provisioning", "running", "stopping")}
    assert result.series("labs_sessions_running") == {}
    assert result.value("labs_session_stops_15m", reason="learner") == 0
