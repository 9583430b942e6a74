"""Per-session CPU, memory and disk and the watchdog's open alerts on /metrics, read from the rows the
watchdog keeps (metrics/watchdog_figures.py): no engine is asked during a scrape."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metrics.tests.conftest import make_session, scrape
from sessions_app.models import State
from watchdog.models import Alert, SessionSample

pytestmark = pytest.mark.django_db


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def test_running_sessions_figures_come_from_their_latest_sample(lab, docker_lab, owner, now):
    running = make_session(docker_lab, owner, State.RUNNING, runner_name="docker", created=now)
    unlimited = make_session(lab, owner, State.RUNNING, created=now)
    stopped = make_session(lab, owner, State.STOPPED, runner_name="fake", created=now)
    SessionSample.objects.create(session=running, cpu_percent=150.0, memory_bytes=300 << 20,
                                 memory_limit_bytes=512 << 20, disk_used_bytes=40 << 20, disk_total_bytes=100 << 20,
                                 sampled_at=now - timedelta(seconds=20))
    SessionSample.objects.create(session=unlimited, cpu_percent=2.5, memory_bytes=10 << 20,
                                 memory_limit_bytes=128 << 20, sampled_at=now)
    SessionSample.objects.create(session=stopped, cpu_percent=1, memory_bytes=1, memory_limit_bytes=1, sampled_at=now)

    result = scrape()
    docker = labels(session=str(running.pk), lab="docker-basics", runner="docker")
    fake = labels(session=str(unlimited.pk), lab="hello-shell", runner="fake")  # its lab's runner
    assert result.series("labs_session_cpu_percent") == {docker: 150.0, fake: 2.5}
    assert result.series("labs_session_cpu_limit") == {docker: 1.0, fake: 1.0}
    assert result.series("labs_session_memory_bytes") == {docker: 300 << 20, fake: 10 << 20}
    assert result.series("labs_session_memory_limit_bytes") == {docker: 512 << 20, fake: 128 << 20}
    # the disk only where the runner limits it
    assert result.series("labs_session_disk_used_bytes") == {docker: 40 << 20}
    assert result.series("labs_session_disk_total_bytes") == {docker: 100 << 20}
    ages = result.series("labs_session_sample_age_seconds")
    assert 20 <= ages[docker] < 80 and 0 <= ages[fake] < 60


def test_open_alerts_are_counted_by_kind_and_level_with_zeros(running_session_alerts):
    series = scrape().series("labs_watchdog_alerts_open")
    assert len(series) == 7 * 2  # every kind and level
    assert series[labels(kind="session_memory", level="critical")] == 2
    assert series[labels(kind="host_disk_data", level="warning")] == 1
    assert series[labels(kind="host_cpu", level="critical")] == 0  # resolved: not counted
    assert sum(series.values()) == 3


def test_the_watchdogs_figures_cost_two_queries_however_many_sessions(lab, owner, now, settings):
    settings.REDIS_URL = ""

    def add(count: int) -> None:
        for _ in range(count):
            session = make_session(lab, owner, State.RUNNING, runner_name="fake", created=now)
            SessionSample.objects.create(session=session, cpu_percent=1, memory_bytes=1 << 20,
                                         memory_limit_bytes=128 << 20, sampled_at=now)

    add(1)
    with CaptureQueriesContext(connection) as few:
        scrape()
    add(30)
    with CaptureQueriesContext(connection) as many:
        result = scrape()
    assert len(result.series("labs_session_memory_bytes")) == 31
    assert len(few) == len(many)
    assert sum("watchdog_" in q["sql"] for q in many.captured_queries) == 2


@pytest.fixture
def running_session_alerts(lab, owner, now):
    session = make_session(lab, owner, State.RUNNING, runner_name="fake", created=now)

    def alert(kind: str, level: str, subject: str, status: str = "open") -> None:
        Alert.objects.create(kind=kind, subject=subject, session=session if kind.startswith("session") else None,
                             level=level, status=status, value=99, threshold=95, message="m",
                             first_seen=timezone.now(), last_seen=timezone.now())

    alert("session_memory", "critical", str(session.pk))
    alert("session_memory", "critical", "another-session")
    alert("host_disk_data", "warning", "lab-1:/var/lib/labs")
    alert("host_cpu", "critical", "host lab-1", status="resolved")
